"""What every page shares: cached models, the sidebar, links (query params), text input, errors.

This is the only module besides the pages that imports Streamlit; the rest of ``lmviz`` is
tested without it. Models load once per process (``st.cache_resource``) and are read-only.
"""
from __future__ import annotations

import copyreg
import os
import sys
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from lmviz.models import checkpoints
from lmviz.pretrain.corpus import decode_user_bytes
from lmviz.models.device import describe_device, pick_device
from lmviz.errors import LmvizError
from lmviz.models.kinds import KINDS, kind_of, shipped_kinds, writers  # noqa: F401  (the pages ask the kind here)


SHIPPED = {name: KINDS[name].title for name in shipped_kinds()}  # the shipped models are named by their kind
MAX_LINK_CHARS = 2000  # longer texts stay out of the URL (browsers and servers cap its length)
MAX_TEXT_CHARS = 20_000
FIGURE_FORMATS = {"png": "PNG", "svg": "SVG"}  # what the 📷 on a figure's toolbar saves, drawn in the browser (offline)


class Drawn(go.Figure):
    """A finished figure kept as plotly's JSON dict: what a page's ``st.cache_data`` gives back. Unpickling a go.Figure
    rebuilt and re-validated its whole tree, plotly_white template included (60 ms for one of Home's figures on this
    CPU, most of a cached rerun, and all of it holding the GIL that every session's rerun shares). This one unpickles
    as a dict and ``plot`` draws it as it is; nothing but ``plot`` reads it."""

    def __init__(self, spec: dict):  # plotly's tree is not built: Streamlit reads only ``to_dict()``
        self._spec = spec

    def to_dict(self) -> dict:
        return self._spec

    def __reduce__(self):
        return Drawn, (self._spec,)


copyreg.pickle(go.Figure, lambda fig: (Drawn, (fig.to_dict(),)))  # what st.cache_data stores of a figure


def user_models_dir() -> Path | None:
    """``streamlit run app.py -- --models DIR`` or ``LMVIZ_MODELS=DIR``."""
    argv = sys.argv[1:]
    if "--models" in argv and argv.index("--models") + 1 < len(argv):
        return Path(argv[argv.index("--models") + 1]).resolve()
    env = os.environ.get("LMVIZ_MODELS")
    return Path(env).resolve() if env else None


@st.cache_resource(show_spinner=False)
def registry() -> dict[str, Path]:
    """Model name → folder: the shipped three, then each folder under the user's models directory."""
    names = {k: checkpoints.shipped(k) for k in SHIPPED}
    root = user_models_dir()
    if root is not None and root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file()):
            names[f"{folder.name} (yours)"] = folder
    return names


def _load(name: str) -> checkpoints.Loaded | str:
    folder = registry().get(name)
    if folder is None:
        return f"There is no model called {name!r}."
    root = user_models_dir()
    if name not in SHIPPED and root is not None and not folder.resolve().is_relative_to(root):
        return (f"{folder.name} is a link to a folder outside the models directory {root.name}; lmviz opens only the "
                "folders inside it (copy the model there instead).")
    return load_folder(str(folder))


@st.cache_resource(show_spinner="Loading model…")
def load_folder(folder: str) -> checkpoints.Loaded | str:
    """The model in ``folder`` on the device in use, loaded once per process, or why it cannot be loaded. Every
    model the app shows comes through here."""
    try:
        return checkpoints.load(folder, pick_device())
    except LmvizError as err:
        return str(err)


def load_model(name: str) -> checkpoints.Loaded:
    """The loaded model, or ``LmvizError`` saying why it is unavailable (the other models still work)."""
    result = _load(name)
    if isinstance(result, str):
        raise LmvizError(f"{SHIPPED.get(name, name)} is unavailable: {result}")
    return result


@st.cache_data(max_entries=4, show_spinner=False)
def _evaluation_at(path: str, mtime: float) -> dict | str:
    try:
        return checkpoints.read_json(Path(path))
    except LmvizError as err:
        return str(err)


def evaluation() -> dict | str | None:
    """The shipped models' held-out figures (``python -m lmviz evaluate`` writes them): a dict, the reason it cannot be
    read, or None when there is none yet."""
    path = checkpoints.evaluation_path()
    return _evaluation_at(str(path), path.stat().st_mtime) if path.is_file() else None


def model_names(kinds: tuple[str, ...]) -> list[str]:
    """Names of the models of these kinds that load (shipped first)."""
    out = []
    for name, folder in registry().items():
        loaded = _load(name)
        if not isinstance(loaded, str) and loaded.kind in kinds:
            out.append(name)
    return out


def device_line() -> str:
    """Which device the models run on, in words (the sidebar's and Home's)."""
    return describe_device(pick_device())


def display_name(name: str) -> str:
    return SHIPPED.get(name, name)


def sidebar(pages=()) -> None:
    """Links to the pages (the config hides Streamlit's own list, which flashes the file names before
    ``st.navigation`` runs), the device, and which models are unavailable and why."""
    with st.sidebar:
        for page in pages:
            st.page_link(page)
        st.divider()
        st.radio("📷 on a figure's toolbar saves", list(FIGURE_FORMATS), format_func=FIGURE_FORMATS.get, key="w_figure_format",
                 horizontal=True, help="PNG at twice the screen's resolution, or SVG: vector, sharp at any size in slides "
                                       "and papers. The browser draws the file itself, with no network.")
        st.caption(f"Device: **{device_line()}**")
        for name in registry():
            loaded = _load(name)
            shown = display_name(name) if name in SHIPPED else plain(display_name(name))  # a folder's name is not markup
            if isinstance(loaded, str):
                st.warning(f"{shown} unavailable: {plain(loaded) if name not in SHIPPED else loaded}", icon="⚠️")
            else:
                for note in loaded.notes:
                    st.caption(f"{shown}: {plain(note)}")


# --- links -------------------------------------------------------------------------------------

def param(key: str, default, cast=str, choices=None, lo=None, hi=None):
    """A value from the URL's query params, cast and validated; the default if absent or invalid.

    Numbers must be finite, and ``lo``/``hi`` clamp them into a widget's range, so an edited or
    old link can never hand a widget a value it refuses.
    """
    import math

    raw = st.query_params.get(key)
    if raw is None:
        return default
    try:
        value = cast(raw)
    except (TypeError, ValueError, OverflowError):
        return default
    if isinstance(value, float) and not math.isfinite(value):
        return default
    if choices is not None and value not in choices:
        return default
    if lo is not None and value < lo:
        value = lo
    if hi is not None and value > hi:
        value = hi
    return value


def set_params(**values) -> None:
    """Write the view's choices into the URL so a link restores them."""
    for k, v in values.items():
        if v is None:
            st.query_params.pop(k, None)
        elif st.query_params.get(k) != str(v):
            st.query_params[k] = str(v)


def pick_model(kinds: tuple[str, ...] = tuple(KINDS), key: str = "model",
               label: str = "Model") -> tuple[str, checkpoints.Loaded]:
    """A model selectbox remembered in the URL: the chosen name (the key of every per-text cache) and the
    loaded model. If none of these kinds loads, it says so and the page stops there."""
    names = model_names(kinds)
    if not names:
        st.error("No model of this kind is available; see the sidebar for why.")
        st.stop()
    current = param(key, names[0], choices=names)
    name = st.selectbox(label, names, index=names.index(current), format_func=display_name, key=f"w_{key}")
    set_params(**{key: name})
    return name, load_model(name)


def text_input(key: str = "text", presets: dict[str, str | dict[str, str]] | None = None, default: str = "", label: str = "Text",
               height: int = 90, keep: str = "head", upload: bool = False) -> str:
    """A text box with presets; the text lives in the URL. Over-long input is cut and the page says so:
    `keep="head"` keeps the first characters (a text to read), `keep="tail"` the last (a prompt to continue).

    A preset is a text, or ``{key: text}`` for presets that fill several boxes at once (a sentence pair).
    ``upload`` adds a ``.txt`` upload that replaces the text; a file that is not text is refused with a message
    and the box keeps what it had."""
    text = param(key, default)
    if presets:
        own = lambda v: v.get(key, "") if isinstance(v, dict) else v  # noqa: E731
        current = next((name for name, v in presets.items() if own(v) == text), None)
        choice = st.selectbox("Preset", ["(your own)", *presets], key=f"w_{key}_preset",
                              index=[*presets].index(current) + 1 if current else 0)
        if choice == "(your own)":
            st.session_state.pop(f"_{key}_last_preset", None)  # so the same preset can be chosen again
        elif st.session_state.get(f"_{key}_last_preset") != choice:
            st.session_state[f"_{key}_last_preset"] = choice
            value = presets[choice]
            for k, v in (value if isinstance(value, dict) else {key: value}).items():
                st.session_state[f"w_{k}"] = v
    if f"w_{key}" not in st.session_state:
        st.session_state[f"w_{key}"] = text
    value = st.text_area(label, key=f"w_{key}", height=height)
    if upload:
        with st.expander("📄 …or upload a text file (.txt, UTF-8)"):
            file = st.file_uploader("A text file", key=f"w_{key}_file", on_change=_take_upload, args=(key,),
                                    label_visibility="collapsed")
        refused = st.session_state.get(f"_{key}_refused")
        if file is not None and refused and refused[0] == file.file_id:
            st.error(refused[1], icon="🚫")
    if len(value) > MAX_TEXT_CHARS:
        which = "last" if keep == "tail" else "first"
        st.info(f"The text is {len(value):,} characters; only the {which} {MAX_TEXT_CHARS:,} are used.")
        value = value[-MAX_TEXT_CHARS:] if keep == "tail" else value[:MAX_TEXT_CHARS]
    if len(value) > MAX_LINK_CHARS:
        st.caption(f"This text is longer than {MAX_LINK_CHARS:,} characters, so the page's link does not carry it.")
    set_params(**{key: value if len(value) <= MAX_LINK_CHARS else None})
    return value


def _take_upload(key: str) -> None:
    """The uploader's callback (it runs before the page, so it may still set the text box): the file's text
    replaces the box's, or the reason it is refused is kept for the page to show."""
    file = st.session_state.get(f"w_{key}_file")
    if file is None:
        return
    try:
        text = decode_user_bytes(file.getvalue(), f"The file “{plain(file.name)}”")
    except LmvizError as err:
        st.session_state[f"_{key}_refused"] = (file.file_id, f"{err} The text box keeps its text.")
        return
    st.session_state.pop(f"_{key}_refused", None)
    st.session_state[f"w_{key}"] = text
    if f"w_{key}_preset" in st.session_state:
        st.session_state[f"w_{key}_preset"] = "(your own)"
        st.session_state.pop(f"_{key}_last_preset", None)


def choose_index(key: str, what: str, count: int, labels=None, default: int = 0) -> int:
    """A selectbox over ``range(count)`` remembered in the URL (``default`` when absent); an index from an old link
    that no longer exists (another model, a shorter text) falls back to 0 and says so."""
    wanted = param(key, default, int)
    if st.session_state.get(f"w_{key}", wanted) not in range(count):
        st.warning(f"There is no {what} {st.session_state.get(f'w_{key}', wanted)} here (this choice has {what}s "
                   f"0–{count - 1}); showing {what} 0.", icon="↩️")
        st.session_state[f"w_{key}"] = 0
    elif f"w_{key}" not in st.session_state:
        st.session_state[f"w_{key}"] = wanted
    value = st.selectbox(what.capitalize(), range(count), key=f"w_{key}", format_func=labels or str)
    set_params(**{key: value})
    return value


def show_notes(notes: list[str]) -> None:
    for note in notes:
        st.info(note, icon="ℹ️")


def error(err: Exception) -> None:
    """A user's problem as a readable message; never a traceback."""
    st.error(str(err), icon="🚫")


def plot(fig, key: str | None = None, on_click=None) -> None:
    """A plotly figure with its toolbar's download (PNG or SVG, as the sidebar says), drawn from the bundled plotly.js
    (offline). ``on_click`` (with a ``key``): a callback run when a point is clicked; the selection is in
    ``st.session_state[key]``."""
    fmt = st.session_state.get("w_figure_format", "png")
    fmt = fmt if fmt in FIGURE_FORMATS else "png"
    st.plotly_chart(fig, width="stretch", key=key, on_select=on_click or "ignore", selection_mode="points",
                    config={"displaylogo": False, "toImageButtonOptions": {"format": fmt, "scale": 2 if fmt == "png" else 1,
                                                                           "filename": f"lmviz-{key or 'figure'}"}})


def download_view(page: str, numbers, file: str, label: str = "Download this view (JSON)", text: str | None = None) -> None:
    """A button that downloads the numbers behind the view with the settings that reproduce it: the link's (model, text,
    layer, head…), and the text itself when it is too long for the link."""
    from lmviz.app.export import view_json

    settings = st.query_params.to_dict()
    if text is not None:
        settings.setdefault("text", text)
    # written when clicked, not on every rerun: a long text's every-head numbers take a while to turn into JSON
    st.download_button(label, lambda: view_json(page, settings, numbers), file_name=file, mime="application/json")


def clicked(key: str) -> list | None:
    """The ``customdata`` of the point clicked in the figure drawn with ``plot(..., key=key, on_click=...)``, or None.
    Read defensively: the selection arrives from the browser."""
    state = st.session_state.get(key)
    selection = state.get("selection") if isinstance(state, dict) else None
    points = selection.get("points") if isinstance(selection, dict) else None
    point = points[0] if isinstance(points, list) and points else None
    custom = point.get("customdata") if isinstance(point, dict) else None
    return list(custom) if isinstance(custom, (list, tuple)) else None


def plain(text: str) -> str:
    """User text made inert for st.markdown/st.info: every ASCII punctuation mark backslash-escaped, so ``**``, ``$x$``,
    ``[a](b)`` and ``<b>`` show as typed."""
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|~<>$&\"'=:;,/?@%^" else c for c in str(text)).replace("\n", "  \n")
