import streamlit as st

from lmviz.analysis.attribution import STEPS, attribute, attribution_data, baseline_name
from lmviz.analysis.forming import at_step, forming, forming_data, load_snapshots, loss_points, memory_bytes
from lmviz.analysis.heads import TEXTS, named_heads
from lmviz.analysis.inference import model_input
from lmviz.analysis.knockout import every_head, knockout, knockout_data, shape
from lmviz.analysis.lens import how, lens, lens_data
from lmviz.analysis.targets import has_head, targets
from lmviz.app import ui
from lmviz.errors import LmvizError
from lmviz.app.ui import kind_of
from lmviz.viz.attention import attention_heatmap
from lmviz.viz.layers import ATTENTION_NAMES, attribution_figure, grid_figure, knockout_figure, lens_figure, loss_curve

PRESETS = {
    "Macbeth (held out)": ("MACBETH:\nTo-morrow, and to-morrow, and to-morrow,\nCreeps in this petty pace from day to day\n"
                           "To the last syllable of recorded time,\nAnd all our yesterdays have lighted fools\n"
                           "The way to dusty death. Out, out, brief candle!\nLife's but a walking shadow, a poor player\n"
                           "That struts and frets his hour upon the stage\nAnd then is heard no more."),
    "Hamlet": "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.",
    "Richard III": TEXTS["previous"],
    "Romeo, twice": TEXTS["induction"],
}
VIEWS = {"lens": "Every layer's guess", "knockout": "Knock out a head", "attribution": "Attribution beside attention",
         "training": "Heads forming in training"}


def choose(key: str, options: list, default, label: str, widget=st.selectbox, **kw):
    """A choice kept in the link; a value from an old link or a forged one falls back to ``default``."""
    if st.session_state.get(f"w_{key}", default) not in options:
        st.session_state[f"w_{key}"] = default
    elif f"w_{key}" not in st.session_state:
        by_text = {str(o): o for o in options}  # the link holds text; options may be numbers or "mean"
        st.session_state[f"w_{key}"] = by_text.get(ui.param(key, str(default)), default)
    value = widget(label, options, key=f"w_{key}", **kw)
    value = value if value in options else default
    ui.set_params(**{key: value})
    return value


@st.cache_data(max_entries=32, show_spinner=False)
def problem(name: str, text: str, hide: tuple[int, ...], target: str):
    return targets(ui.load_model(name), text, list(hide), target)


@st.cache_data(max_entries=32, show_spinner="Reading every layer…")
def lens_for(name, text, hide, target):
    return lens(ui.load_model(name), problem(name, text, hide, target))


@st.cache_data(max_entries=32, show_spinner="Knocking out every head…")
def grid_for(name, text, hide, target):
    return every_head(ui.load_model(name), problem(name, text, hide, target))


@st.cache_data(max_entries=64, show_spinner=False)
def knockout_for(name, text, hide, target, heads: tuple):
    return knockout(ui.load_model(name), problem(name, text, hide, target), list(heads))


@st.cache_data(max_entries=32, show_spinner="Integrating gradients…")
def attribution_for(name, text, hide, target, column: int, steps: int):
    return attribute(ui.load_model(name), problem(name, text, hide, target), column, steps)


@st.cache_data(max_entries=4, show_spinner="Measuring the named heads…")
def named_for(name: str, evaluation: dict):
    return named_heads(ui.load_model(name), evaluation)


@st.cache_resource(show_spinner="Loading the snapshots…")
def snapshot_models(folder: str):
    return load_snapshots(folder)


@st.cache_data(max_entries=8, show_spinner="Scoring every head at every snapshot…")
def forming_for(folder: str, name: str, text: str, hide: tuple[int, ...], target: str):
    snaps, models = snapshot_models(folder)
    return forming(models, [s.step for s in snaps], problem(name, text, hide, target))


@st.cache_data(max_entries=64, show_spinner=False)
def step_view(folder: str, step: int, name: str, text: str, hide: tuple[int, ...], target: str, layer: int, head: int):
    snaps, models = snapshot_models(folder)
    return at_step(models[[s.step for s in snaps].index(step)], problem(name, text, hide, target), layer, head)


def download(data: dict, file: str) -> None:
    ui.download_view("layers", data, file)  # with the link's settings (model, text, hidden words, layer, head…)


st.title("Layers: inside a prediction")
st.write("A prediction is built layer by layer. **The lens** reads each layer's guess through the model's own output "
         "head; **knocking out** a head shows whether the prediction needs it (attention alone cannot say); "
         "**attribution** measures which input tokens move the prediction, beside where attention looks; and the "
         "**training snapshots** show when a head learnt its job.")

try:
    name, loaded = ui.pick_model()
    kind = kind_of(loaded)
    text = ui.text_input("text", PRESETS, default=PRESETS["Macbeth (held out)"], label="Text")
    hide, target = (), ""
    if not kind.writes:  # an encoder guesses hidden words
        enc = model_input(loaded, text)
        words = [i for i, s in enumerate(enc.special) if not s]
        wanted = [int(p) for p in ui.param("hide", "13", str).split(",") if p.strip().isdigit()]  # Macbeth's second "morrow"
        if "w_hide" not in st.session_state:
            st.session_state.w_hide = [p for p in wanted if p in words][:8] or words[:1]
        st.session_state.w_hide = [p for p in st.session_state.w_hide if p in words]
        hide = tuple(st.multiselect("Words to hide behind [MASK]", words, key="w_hide",
                                    format_func=lambda p: f"{p}: {enc.labels[p]}", max_selections=8))
        ui.set_params(hide=",".join(map(str, hide)) or None)
    elif len(kind.stacks) == 2:  # an encoder-decoder is scored on a target
        if "w_target" not in st.session_state:
            st.session_state.w_target = ui.param("target", "")
        target = st.text_input("Target the decoder writes (empty: your text, punctuated, if T5 learnt punctuate:; else its own output)", key="w_target", max_chars=500)
        ui.set_params(target=target or None)
    view = choose("view", list(VIEWS), "lens", "View", st.radio, format_func=VIEWS.get, horizontal=True)
    if view != "training":
        tg = problem(name, text, hide, target)
        ui.show_notes(tg.notes)

    if view == "lens":
        st.write(how(loaded))
        ln = lens_for(name, text, hide, target)
        st.caption("Colour: the probability of the right token (grey: not known there). Word: the top guess. Hover a cell "
                   "for the top five. The left column reads the embeddings alone; the right column is the model's own output.")
        ui.plot(lens_figure(ln))
        download(lens_data(ln), f"lens_{kind.name}.json")

    elif view == "knockout":
        L, H = shape(loaded)
        attention = choose("attention", list(kind.attention), kind.attention[0], "Attention", st.radio,
                           format_func=ATTENTION_NAMES.get, horizontal=True) if len(kind.attention) > 1 else kind.attention[0]
        c1, c2 = st.columns(2)
        with c1:
            layer = ui.choose_index("layer", "layer", L)
        with c2:
            head = choose("head", [-1, *range(H)], 0, "Head", format_func=lambda h: "every head of the layer" if h == -1 else str(h))
        chosen = [(attention, layer, head)]
        evaluation = ui.evaluation()
        named = named_for(name, evaluation) if name in ui.SHIPPED and isinstance(evaluation, dict) else []
        found = [h for h in named if h.found]
        if found:
            if "w_named" not in st.session_state:
                st.session_state.w_named = ui.param("named", "0") == "1"
            if st.toggle("Knock out the named heads instead (" + ", ".join(f"{h.name} L{h.layer} H{h.head}" for h in found) + ")",
                         key="w_named"):
                chosen = [(kind.attention[0], h.layer, h.head) for h in found]
            ui.set_params(named="1" if st.session_state.w_named else None)
        ko = knockout_for(name, text, hide, target, tuple(chosen))
        what = ", ".join(f"{ATTENTION_NAMES[a]} layer {l} " + ("(all heads)" if h == -1 else f"head {h}") for a, l, h in chosen)
        st.subheader(f"Without {what}")
        st.write(f"Mean change in the loss of the targets: **{ko.mean_delta:+.3f} nats** (up = the model needs it).")
        ui.plot(knockout_figure(ko, tg.column_labels(), tg.target_tokens))
        st.subheader("Every head, knocked out alone")
        grid = grid_for(name, text, hide, target)
        st.caption(f"The change of the text's mean loss ({grid.base:.3f} nats with every head) when each head alone is "
                   "removed. Circled: the named heads, which look busy in their attention pattern; the colour says "
                   "whether the prediction needs them.")
        ui.plot(grid_figure(grid, [(kind.attention[0], h.layer, h.head) for h in named]))
        (a, l, h), v = grid.strongest(1)[0]
        st.info(f"The head the text needs most: {ATTENTION_NAMES[a]} layer {l}, head {h} ({v:+.3f} nats without it).", icon="🔎")
        download(knockout_data(ko, tg, grid), f"knockout_{kind.name}.json")

    elif view == "attribution":
        c1, c2, c3, c4 = st.columns(4)
        with c1:
            column = ui.choose_index("column", "prediction", len(tg.columns), labels=lambda c: tg.column_labels()[c],
                                     default=lens_for(name, text, hide, target).surest() if has_head(loaded) else 0)
        L, H = shape(loaded)
        with c2:
            layer = ui.choose_index("alayer", "layer", L, default=L - 1)
        with c3:
            ahead = choose("ahead", ["mean", *range(H)], "mean", "Attention head",
                           format_func=lambda h: "mean of the heads" if h == "mean" else str(h))
        with c4:
            steps = choose("steps", [8, 16, 32, 64], STEPS, "Integration steps")
        head = None if ahead == "mean" else int(ahead)
        at = attribution_for(name, text, hide, target, column, steps)
        said = "the model's own guess" if at.guessed else "the token that comes"
        st.write(f"Explaining log p(“{at.target}”) ({said}) at position {at.query}, over "
                 f"{'the encoder input' if 'cross' in kind.attention else 'the tokens it can see'}.")
        st.caption("Each row is scaled to its own largest value (hover for the numbers). Attributions are signed: orange "
                   "tokens raise the prediction, purple ones lower it; attention is a weight, always orange.")
        ui.plot(attribution_figure(at, layer, head))
        st.write("Rank correlation (Spearman ρ) of |integrated gradients| with:")
        for col, (k, v) in zip(st.columns(3), at.agreement(layer, head).items()):
            col.metric(k, "—" if v is None else f"{v:.2f}")
        (st.warning if at.verdict(layer, head).startswith("They disagree") else st.info)(at.verdict(layer, head))
        st.caption(f"Completeness: the attributions sum to {at.integrated.sum():+.3f}; the prediction changes by "
                   f"{at.f_input - at.f_baseline:+.3f} from the baseline (every token embedding at "
                   f"{baseline_name(loaded)}); "
                   f"the gap, {at.completeness_gap:.3f} nats, is the {steps}-step midpoint rule's error.")
        download(attribution_data(at, layer, head), f"attribution_{kind.name}.json")

    else:
        folder = str(ui.registry()[name])
        snaps, models = snapshot_models(folder)
        if not snaps:
            st.info(f"{ui.display_name(name)} has no training snapshots (a run keeps them under snapshots/ when it is "
                    "trained with them).", icon="ℹ️")
            st.stop()
        f = forming_for(folder, name, text, hide, target)
        steps = [s.step for s in snaps]
        named = [h for h in (named_for(name, ui.evaluation()) if name in ui.SHIPPED and isinstance(ui.evaluation(), dict) else [])
                 if h.name.startswith("previous")]
        L, H = f.scores.shape[1:]
        best = (named[0].layer, named[0].head) if named and named[0].layer < L and named[0].head < H else f.best_head()
        c1, c2 = st.columns(2)
        with c1:
            layer = ui.choose_index("tlayer", "layer", L, default=best[0])
        with c2:
            head = ui.choose_index("thead", "head", H, default=best[1])
        step = choose("step", steps, steps[-1], "Training step", st.select_slider)
        formed = f.formed_at(layer, head)
        st.write(f"Layer {layer}, head {head}: previous-token score **{f.scores[steps.index(step), layer, head]:.2f}** at step "
                 f"{step} (even attention: {f.chance:.2f}); " +
                 (f"it has scored at least twice that since step {formed}." if formed is not None else "it never holds twice that."))
        ui.plot(loss_curve(loss_points(loaded.train_log, (loaded.extra or {}).get("steps_before", 0)), step, steps,
                           "Training loss"))
        ln, probs, (queries, keys) = step_view(folder, step, name, text, hide, target, layer, head)
        c1, _ = st.columns([3, 2])
        with c1:
            ui.plot(attention_heatmap(probs, queries, keys, title=f"Layer {layer}, head {head} at step {step}", narrow=True))
        st.caption("A previous-token head draws a diagonal one step below the main one. Below: every layer's guess at this step.")
        if ln is not None:
            ui.plot(lens_figure(ln, f"Every layer's guess at step {step}"))
        st.caption(f"{len(models)} snapshots cached in memory: {memory_bytes(models) / 2**20:.0f} MB (float32 once loaded).")
        download(forming_data(f, layer, head, step), f"forming_{kind.name}.json")
    if not has_head(loaded):
        st.caption("This folder has no MLM head: the lens, knock-out and attribution need one.")
except LmvizError as err:
    ui.error(err)
