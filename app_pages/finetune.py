import streamlit as st

from lmviz.analysis.finetune import Spec, download_zip, folder_name, try_text
from lmviz.analysis.finetune_models import CLASSIFIERS, classifier_class
from lmviz.analysis.finetune_tasks import MIN_EXAMPLES, TASKS
from lmviz.app import jobs, ui, worker
from lmviz.errors import LmvizError
from lmviz.viz.finetune import (accuracy_figure, confusion_figure, curves_figure, head_change_figure, probabilities_figure,
                                row_figure)

TRY = "Is this the face that launch'd a thousand ships, and burnt the topless towers of Ilium? Sweet Helen, make me immortal with a kiss."


def choice(label: str, options: list, key: str, default, fmt=str, widget=st.selectbox):
    """A selectbox (or radio) remembered in the URL; a value no browser sends falls back to the default."""
    current = ui.param(key, default, choices=options)
    value = widget(label, options, index=options.index(current), format_func=fmt, key=f"w_{key}")
    value = value if value in options else default
    ui.set_params(**{key: value})
    return value


def number(col, label: str, key: str, default, lo, hi, cast=int, **kw):
    value = col.number_input(label, min_value=lo, max_value=hi, value=ui.param(key, default, cast, lo=lo, hi=hi),
                             key=f"w_{key}", **kw)
    ui.set_params(**{key: value})
    return value


st.title("Fine-tuning: a pretrained model becomes a classifier")
st.write("Pretraining taught each model the language of the plays. Fine-tuning puts it to a task: a few hundred labelled "
         "speeches, a new output layer (or, for T5, none), and a short training run of the whole model. The labels are "
         "free (which kind of play, verse or prose), and the test is on plays no training run has read, beside two "
         "baselines: always answering the most common label, and a bag-of-words logistic regression on the same examples.")

try:
    name, loaded = ui.pick_model()
    cls = classifier_class(loaded)
    st.info(cls.how, icon="🧩")
    key = choice("Task", list(TASKS), "task", "verse", fmt=lambda k: TASKS[k].title)
    st.caption(TASKS[key].about)
    c1, c2, c3, c4 = st.columns(4)
    examples = number(c1, "Training speeches", "n", cls.default_examples, 1, 8192, step=128)
    epochs = number(c2, "Epochs", "epochs", 1, 1, 20)
    seed = number(c4, "Seed", "seed", 0, 0, 2**31 - 1)
    mode = "full"
    if len(cls.modes) > 1:
        mode = choice("What trains", list(cls.modes), "mode", "full", widget=st.radio, fmt=lambda m: {
            "full": "the whole model (fine-tuning)", "probe": "only the classifier, on a frozen encoder (a probe)"}[m])
    lr = number(c3, "Learning rate", "lr", cls.default_lr[mode], 0.0, 1000.0, float, format="%g", step=1e-4)
    lam = 0.0
    if cls.mixes_lm:
        lam = st.slider("λ, the weight of the language-model loss L1 (0: the classification loss alone)", 0.0, 2.0,
                        ui.param("lam", 0.5, float, lo=0.0, hi=2.0), 0.1, key="w_lam")
        ui.set_params(lam=lam)
    spec = Spec(task=key, examples=int(examples), epochs=int(epochs), lr=float(lr), seed=int(seed), mode=mode, lam=float(lam))

    queue = jobs.shared()
    job = st.session_state.get("ft_job")
    b1, b2, _ = st.columns([2, 1, 3])
    busy = job is not None and not job.finished
    if b1.button("▶️ Start fine-tuning", type="primary", disabled=busy, key="ft_start"):
        try:
            spec.check(loaded.kind)
            if examples < MIN_EXAMPLES:
                raise LmvizError(f"{examples} training speeches are too few: a classifier needs at least {MIN_EXAMPLES}.")
            job = queue.submit(jobs.streamlit_owner(), lambda job: worker.finetune(job, loaded, spec),  # in a process
                               label=f"{name} · {key}")
            st.session_state.ft_job, st.session_state.ft_for = job, (name, ui.display_name(name))
            st.rerun()  # draw Start disabled and Stop enabled, and start polling
        except LmvizError as err:
            ui.error(err)
    if b2.button("⏹️ Stop", disabled=not busy, key="ft_stop") and job is not None:
        job.stop()  # it stops at its next step, measures what it learned, and the live part below keeps polling until then

    @st.fragment(run_every=2.0 if busy else None)
    def live():
        job = st.session_state.get("ft_job")
        if job is None:
            st.caption(f"A default run takes about half a minute on one CPU core. Up to {queue.slots} run at once on "
                       f"this server; the rest wait in line.")
            return
        run = job.result
        if job.state == jobs.WAITING:
            st.info(f"Waiting in line: number {job.place or 1} (jobs from every open tab share this server's CPU).", icon="⏳")
        elif job.state == jobs.FAILED:
            ui.error(job.error)
        elif run is None:
            st.info("Drawing the examples and fitting the baselines…", icon="⏳")
        if run is not None:
            st.progress(min(1.0, run.step / max(1, run.total_steps)),
                        text=f"{st.session_state.ft_for[1]} on “{run.task.title}”: step {run.step} of {run.total_steps}")
            parts = {"loss": list(run.loss), "classification": list(run.classification), "lm": list(run.lm)}
            ui.plot(curves_figure(parts, list(run.evals), run.total_steps, run.baselines.majority_accuracy,
                                  run.baselines.bow_accuracy, run.spec.lam if CLASSIFIERS[run.kind].mixes_lm else None))
            if not job.finished:
                st.caption("Changing the settings above applies to the next run; typing your own text is open once it ends.")
        if job.finished and st.session_state.get("ft_drawn") != job.id:
            st.session_state.ft_drawn = job.id
            st.rerun()  # the whole page, to draw the results below

    st.subheader("Training")
    live()
    run = job.result if job is not None and job.finished else None
    if run is not None and run.outcome is not None:
        (st.warning if run.status != "done" else st.success)(run.message)
        ui.show_notes(run.notes)
        if (only := run.outcome.only_label()) is not None:
            st.warning(f"It answers “{run.task.labels[only]}” for every held-out speech: it has learned how often each "
                       f"label comes, not yet to read the speech. More steps or another learning rate may get it there; a "
                       f"model whose pretraining never taught it to use its input (T5 here, whose decoder does not yet read "
                       f"its encoder: see Home) may not get there at all.", icon="🪞")
        st.subheader("On the held-out plays")
        b = run.baselines
        ui.plot(accuracy_figure(run.outcome.accuracy, b.majority_accuracy, b.bow_accuracy, st.session_state.ft_for[1]))
        left, _ = st.columns([1, 1])
        with left:
            st.write("**Confusion matrix** (rows: the true label, columns: the model's)")
            ui.plot(confusion_figure(run.outcome.confusion, run.task.labels))
        st.write("**Speeches it gets wrong**, most confident first")
        st.dataframe(run.outcome.wrong(run.held, run.task.labels), hide_index=True, width="stretch",
                     column_order=("true", "predicted", "probability", "play", "speech"),
                     column_config={"probability": st.column_config.NumberColumn(format="%.2f"),
                                    "speech": st.column_config.TextColumn(width="large")})

        st.subheader("Try your own text")
        text = ui.text_input("text", default=TRY, label="A speech")
        try:
            probs, notes = try_text(run.classifier, text)
            ui.show_notes(notes)
            ui.plot(probabilities_figure(probs))
        except LmvizError as err:
            ui.error(err)

        ch = run.changes
        if ch is not None:
            st.subheader("What changed inside")
            st.write(f"For {len(run.held[:24])} held-out speeches, each head's attention from the **{ch['row']}** row (what "
                     f"the classifier reads) before and after fine-tuning: the mean absolute change per head. The most "
                     f"changed is layer {ch['layer']}, head {ch['head']}; below, its row on the speech where it moved most.")
            ui.plot(head_change_figure(ch["delta"], ch["layer"], ch["head"], ch["row"]))
            ui.plot(row_figure(ch["tokens"], ch["before"], ch["after"],
                               f"Layer {ch['layer']}, head {ch['head']}: the {ch['row']} row, before and after"))

        st.subheader("Take it with you")
        folder = folder_name(run.kind, run.task.key, run.spec.seed)
        st.download_button("⬇️ Download the fine-tuned model (.zip)", lambda: download_zip(run.classifier, folder),
                           file_name=f"{folder}.zip", mime="application/zip", key="ft_download")
        ui.download_view("finetune", {"kind": run.kind, "spec": run.spec, "labels": run.task.labels, "steps": run.step,
                                      "loss": run.loss, "classification_loss": run.classification, "lm_loss": run.lm,
                                      "held_out_accuracy": run.evals, "outcome": run.outcome, "baselines": run.baselines,
                                      "changes": run.changes, "seconds": run.seconds, "cpu_seconds": run.cpu_seconds},
                         f"{folder}.json", label="Download the run's numbers (JSON)")
        st.caption(f"The weights live in this browser tab only; the shipped model is never changed. The zip holds one folder, "
                   f"`{folder}/` (config.json, model.safetensors, tokenizer.json, as transformers' save_pretrained writes "
                   f"it): unzip it into a folder DIR and run `streamlit run app.py -- --models DIR` to look inside it on every "
                   f"page, or load it with transformers.")
except LmvizError as err:
    ui.error(err)
