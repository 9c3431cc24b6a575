
import streamlit as st

from lmviz.analysis import prefixes
from lmviz.analysis.inference import vocab_size
from lmviz.app import ui, views
from lmviz.errors import LmvizError
from lmviz.app.export import csv_text
from lmviz.analysis.generation import (MAX_STEPS, LiveRun, branched, clamp_step, format_forced, parse_forced, step_table,
                                      view_data)
from lmviz.app.ui import kind_of, writers
from lmviz.pretrain.text2text import knows_prefixes
from lmviz.analysis.strategies import MAX_BEAM, MAX_TEMPERATURE, MIN_TEMPERATURE, STRATEGIES, STRATEGY_NAMES, Strategy
from lmviz.viz.generation import attention_row_figure, attention_steps_figure, beam_tree

GPT2_PRESETS = {
    "Romeo": "ROMEO:\nBut soft, what light through yonder window breaks?",
    "Hamlet": "HAMLET:\nTo be, or not to be, that is the question:",
    "A new scene": "ACT I\nSCENE I. A street in Verona.\n\n",
}
T5_PRESETS = {
    "Hamlet, two holes": "To be, or not to <extra_id_0>, that is the <extra_id_1>.",
    "Romeo, two holes": "But soft, what <extra_id_0> through yonder window <extra_id_1>?",
    "Macbeth, one hole": "Tomorrow, and tomorrow, and <extra_id_0> creeps in this petty pace.",
}
state = st.session_state


def bound(key: str, value):
    """Seed a widget's state from the link once; the widget then owns it."""
    if f"w_{key}" not in state:
        state[f"w_{key}"] = value


def live_run() -> LiveRun:
    """The run shown, kept in the session so "Next token" continues it with its KV cache instead of starting over."""
    if "gen_run" not in state:
        state.gen_run = LiveRun()
    return state.gen_run


def next_token():
    state.gen_n = state.gen_n + 1
    state.gen_follow = True


def run_all(limit: int):
    state.gen_n = limit  # the limit the button shows, whatever the step-limit box holds by now
    state.gen_follow = True


def restart():
    state.gen_n = 0


def take_branch(step: int, options: dict[str, int]):
    choice = options.get(state.get("w_branch_token"))
    if choice is None:
        return
    state.gen_forced = branched(state.gen_forced, step, choice)
    state.gen_n = max(state.gen_n, step + 1)
    state.w_step = step


st.title("Generation")
st.write("A decoder writes one token at a time. At each step it reads everything so far, gives **every** token of its "
         "vocabulary a probability, and a **strategy** picks one. Then the chosen token is appended and the next step "
         "starts. Here you can watch each step: the candidates, what the strategy does to them, where the new position "
         "looks, and how the **KV cache** saves the model from re-reading the whole text.")

try:
    name, loaded = ui.pick_model(writers())
    model_kind = kind_of(loaded)
    vocab = vocab_size(loaded)
    if not model_kind.reads_target:
        st.caption("GPT-2 continues your prompt. It starts from <|endoftext|>, the token every training document began with.")
        text = ui.text_input("prompt", GPT2_PRESETS, default=GPT2_PRESETS["Romeo"], label="Prompt", keep="tail", upload=True)
    elif knows_prefixes(loaded):
        st.caption("T5's encoder reads the input once; its decoder then writes, one token at a time. This T5 was trained "
                   "text-to-text: the input's first word names the task. " +
                   " ".join(f"`{t}:` asks for {prefixes.ASKED[t]}." for t in prefixes.ASKED) +
                   " Each preset is from a play it never trained on; type your own after a prefix too.")
        tasks = prefixes.preset_texts()
        text = ui.text_input("input", tasks, default=prefixes.presets()["punctuate"].text, label="Input", upload=True)
        if (preset := prefixes.preset_for(text)) is not None:
            st.caption(f"The play has: {ui.plain(preset.answer)}")
    else:
        st.caption("T5's encoder reads the input once; its decoder then writes, one token at a time, what belongs in each "
                   "sentinel <extra_id_i> (the span-corruption task it was trained on). Your own text works too.")
        text = ui.text_input("input", T5_PRESETS, default=T5_PRESETS["Hamlet, two holes"], label="Input", upload=True)
    told = prefixes.prefix_notes(loaded, text) if model_kind.reads_target else []  # before any step is run
    ui.show_notes(told)

    # --- the strategy ---------------------------------------------------------------------------
    asked = Strategy(ui.param("strategy", "greedy", choices=STRATEGIES), ui.param("t", 1.0, float), ui.param("k", 20, int),
                     ui.param("p", 0.9, float), ui.param("beam", 3, int), ui.param("lp", 1.0, float))
    asked, clamped = asked.checked(vocab)
    ui.show_notes(clamped)
    seed = ui.param("seed", 0, int)
    if not 0 <= seed < 2**32:
        st.info(f"Seed {seed} is outside 0 … 2³²−1; seed 0 is used.", icon="ℹ️")
        seed = 0
    limit = ui.param("limit", 20, int)
    if not 1 <= limit <= MAX_STEPS:
        st.info(f"The step limit must be 1 … {MAX_STEPS}; {min(max(limit, 1), MAX_STEPS)} is used.", icon="ℹ️")
        limit = min(max(limit, 1), MAX_STEPS)
    for key, value in (("strategy", asked.name), ("t", asked.temperature), ("k", asked.top_k), ("p", asked.top_p),
                       ("beam", asked.beam_width), ("lp", asked.length_penalty), ("seed", seed), ("limit", limit)):
        bound(key, value)

    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    name_s = c1.selectbox("Strategy", STRATEGIES, format_func=STRATEGY_NAMES.get, key="w_strategy")
    if name_s in ("temperature", "top_k", "top_p"):
        c2.number_input("Temperature T", MIN_TEMPERATURE, MAX_TEMPERATURE, step=0.1, key="w_t",
                        help="Divides the logits before the softmax: below 1 sharpens, above 1 flattens.")
    if name_s == "top_k":
        c3.number_input("k", 1, vocab, step=1, key="w_k", help="Keep only the k most likely tokens.")
    if name_s == "top_p":
        c3.number_input("p", 0.01, 1.0, step=0.05, key="w_p", help="Keep the fewest most likely tokens whose probability reaches p.")
    if name_s == "beam":
        c2.number_input("Beam width", 1, MAX_BEAM, step=1, key="w_beam", help="How many partial texts are kept at each step.")
        c3.number_input("Length penalty", -5.0, 5.0, step=0.5, key="w_lp",
                        help="Finished beams are compared by Σ log p / length^penalty: above 0 favours longer texts.")
    if name_s not in ("greedy", "beam"):
        c4.number_input("Seed", 0, 2**32 - 1, step=1, key="w_seed", help="The same seed draws the same tokens: a link reproduces the text.")
    strategy = Strategy(name_s, state.w_t, int(state.w_k), state.w_p, int(state.w_beam), state.w_lp)
    seed = int(state.w_seed)

    # --- the run: steps so far, branch choices -----------------------------------------------------
    signature = (name, text, strategy, seed)
    if "gen_n" not in state:
        state.gen_n = ui.param("n", 10, int)
        forced, note = parse_forced(ui.param("branch", ""))
        state.gen_forced = forced
        state.gen_signature = signature
        if note:
            st.info(note, icon="ℹ️")
    if state.gen_signature != signature:  # a new prompt or strategy: old branch choices no longer apply
        state.gen_forced, state.gen_signature = {}, signature
    b1, b2, b3, b4 = st.columns([1, 1, 1, 2])
    b4.number_input("Step limit", 1, MAX_STEPS, step=1, key="w_limit")
    limit = int(state.w_limit)
    if state.gen_n > limit:
        st.info(f"{state.gen_n} steps were asked for, but the step limit is {limit}, so {limit} are run.", icon="ℹ️")
        state.gen_n = limit
    if state.gen_n < 0:
        st.info(f"{state.gen_n} steps cannot be run; the page starts with none.", icon="ℹ️")
        state.gen_n = 0
    gen = None
    if state.gen_n:
        with st.spinner("Generating…"):
            gen = live_run().advance(loaded, name, text, strategy, seed, limit, state.gen_forced, state.gen_n)
    ended = gen is not None and gen.stop_reason is not None and not gen.stop_reason.startswith("the step limit")
    b1.button("Next token ▶", on_click=next_token, disabled=ended or state.gen_n >= limit, type="primary")
    b2.button(f"Run to {limit} steps ⏭", on_click=run_all, args=(limit,), disabled=ended or state.gen_n >= limit)
    b3.button("Start over ⏮", on_click=restart, disabled=state.gen_n == 0)
    if gen is None:
        ui.set_params(**{"n": 0, "strategy": strategy.name, "seed": seed, "limit": limit, "branch": None})
        st.info("No token yet: press **Next token** to run the first step.", icon="▶")
        st.stop()
    ui.show_notes([note for note in gen.notes if note not in told])
    n = len(gen.steps)
    if ended or n >= limit:
        st.success(f"Stopped after {n} step{'s' if n != 1 else ''}: {ui.plain(gen.stop_reason or f'the step limit ({limit} steps)')}.",
                   icon="🏁")
        state.gen_n = n
    else:
        st.caption(f"Paused after {n} of at most {limit} steps: press Next token for one more.")
    if strategy.name == "beam":
        st.caption("Beam search decides which beam wins only at the end, so one more step can change the earlier tokens "
                   "of the best beam.")

    st.write("**The text so far**" + (" (the decoder's output; the input is above):" if model_kind.reads_target else
                                      " (the prompt, then what the model wrote):"))
    st.code(("" if model_kind.reads_target else text[-1500:]) + gen.text, language=None, wrap_lines=True)

    # --- one step ----------------------------------------------------------------------------------
    if state.pop("gen_follow", False):
        state.w_step = n - 1
    step_i, note = clamp_step(gen, state.get("w_step", ui.param("step", n - 1, int)))
    if note:
        st.info(note, icon="↩️")
    state.w_step = step_i
    if n > 1:
        st.slider("Step", 0, n - 1, key="w_step", help="Scrub back through the steps; every one is kept.")
    # times this step against a recompute (once per step) with the run's own decoder
    step, (candidates, curve, cache) = views.generation_step(live_run(), state.w_step, strategy)
    tokens = [s.chosen.token for s in gen.steps]
    st.subheader(f"Step {step.index}: «{ui.plain(step.query)}» → «{ui.plain(step.chosen.token)}»")
    st.info(ui.plain(step.reason), icon="🎯")

    left, right = st.columns(2)
    with left:
        st.write("The model's most likely next tokens (light) and "
                 + ("the continuations of this beam that stayed among the best beams (dark). " if strategy.name == "beam" else
                    "the probabilities the strategy actually draws from (dark; grey = cut). ")
                 + "The outlined bar is the chosen token.")
        ui.plot(candidates)
    with right:
        st.write("All candidates sorted from most to least likely (rank on a log scale). Temperature bends the curve, "
                 "top-k cuts it after k tokens, top-p cuts where the cumulative curve first reaches p.")
        ui.plot(curve)

    if strategy.name == "beam":
        st.write("Beam search keeps the best few partial texts instead of one. Each node is a kept token; its colour is "
                 "the beam's summed log-probability; squares are beams that ended. The thick line is the winner.")
        ui.plot(beam_tree(gen))
        unused = f" The link's branch choice {format_forced(state.gen_forced)} is not used." if state.gen_forced else ""
        st.info("Branching works with greedy and sampling; beam search keeps its alternatives in the tree above." + unused,
                icon="ℹ️")
    else:
        st.write(f"**Branch.** Pick another candidate for step {step.index} and continue from there: steps before it stay "
                 "the same (the link remembers the choice).")
        options = {f"{c.rank}. {c.token}  (p = {c.prob:.3f})": c.id for c in step.candidates if c.id != step.chosen.id}
        x1, x2 = st.columns([3, 1])
        x1.selectbox("Instead of the chosen token", list(options), key="w_branch_token")
        x2.button(f"Branch at step {step.index}", on_click=take_branch, args=(step.index, options))

    # --- attention of the position that predicted ------------------------------------------------
    st.subheader("Where the predicting position looks")
    L, H = step.attention["causal"].shape[:2]
    a1, a2 = st.columns(2)
    heads = ["mean", *range(H)]
    bound("layer", min(max(ui.param("layer", L - 1, int), 0), L - 1))
    head_param = ui.param("head", "mean")
    bound("head", int(head_param) if head_param.isdigit() and int(head_param) < H else "mean")
    if state.w_layer not in range(L) or state.w_head not in heads:  # another model with fewer layers or heads
        layer_was = state.w_layer if isinstance(state.w_layer, int) else L - 1  # (or a value no browser sends)
        state.w_layer, state.w_head = min(max(layer_was, 0), L - 1), "mean"
    layer = a1.selectbox("Layer", range(L), key="w_layer")
    head_v = a2.selectbox("Head", heads, key="w_head", format_func=lambda h: "mean of the heads" if h == "mean" else f"head {h}")
    head = None if head_v == "mean" else int(head_v)
    st.write(f"The prediction at step {step.index} comes from the last position, «{ui.plain(step.query)}». Its attention row says "
             "how much of each earlier token it mixed in (a causal decoder cannot see later tokens).")
    context = gen.context(step.index)
    ui.plot(attention_row_figure(step, context, "causal", layer, head))
    if "cross" in step.attention:
        st.write("T5's decoder also reads the encoder's output: its **cross-attention** over the input tokens.")
        ui.plot(attention_row_figure(step, gen.source, "cross", layer, head))
    with st.expander("Every step's attention row, stacked"):
        st.write("Row i is the attention of the position that chose token i: together they fill the lower triangle of the "
                 "decoder's causal attention. The outlined row is the current step.")
        ui.plot(attention_steps_figure(gen, n - 1, "causal", layer, head))
        if "cross" in step.attention:
            ui.plot(attention_steps_figure(gen, n - 1, "cross", layer, head))

    # --- the KV cache ----------------------------------------------------------------------------
    st.subheader("The KV cache")
    first = step.cache[0]
    shapes = f"K and V of shape {list(first['self'])} [beams, heads, positions, head size] in each of {len(step.cache)} layers"
    if "cross" in first:
        shapes += f", plus the cross-attention's K and V {list(first['cross'])}, computed once from the input"
    st.write("Keys and values of past positions never change, so the model keeps them and at each step computes only the "
             f"newest token's. After step {step.index} the cache holds {shapes}.")
    timing = (f"This step took **{step.ms_cached:.1f} ms** with the cache and **{step.ms_recompute:.1f} ms** recomputing "
              f"the whole sequence (the best of {step.timed_repeats} runs with the cache and of 3 without; other work on the "
              "machine makes single timings noisy). The curve shows each step's own cached forward, timed once as it ran, "
              "and the recompute of every step you have opened" if step.ms_cached is not None and step.ms_recompute is not None else "")
    if timing:
        st.write(timing + (" (step 0 reads the whole prompt either way)." if step.index == 0 else "."))
    ui.plot(cache)

    # --- export and link -----------------------------------------------------------------------------
    ui.set_params(strategy=strategy.name, t=strategy.temperature if strategy.name in ("temperature", "top_k", "top_p") else None,
                  k=strategy.top_k if strategy.name == "top_k" else None, p=strategy.top_p if strategy.name == "top_p" else None,
                  beam=strategy.beam_width if strategy.name == "beam" else None,
                  lp=strategy.length_penalty if strategy.name == "beam" else None,
                  seed=seed if strategy.name not in ("greedy", "beam") else None, limit=limit, n=n, step=step.index,
                  layer=layer, head=head_v, branch=format_forced(gen.forced))
    d1, d2 = st.columns(2)  # after the link is written, so the download carries this view's settings
    with d1:
        ui.download_view("generation", view_data(gen, step.index, layer, head), f"generation_step{step.index}.json", text=text)
    d2.download_button("Download the candidates (CSV)", csv_text(step_table(gen, step.index)),
                       file_name=f"generation_step{step.index}.csv", mime="text/csv")
except LmvizError as err:
    ui.error(err)
