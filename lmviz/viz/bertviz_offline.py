"""bertviz's head view and model view as one self-contained HTML page: no CDN, no network.

bertviz (``html_action="return"``) emits a ``<script src>`` for require.js from a CDN and a
``require.config`` that fetches d3 and jQuery from one too. Here that HTML is rebuilt offline:

- the CDN tag is dropped and the vendored copies under ``assets/vendor/`` (npm: requirejs,
  d3@5, jquery, with their licences) are inlined; d3 and jQuery load before require.js (so their
  UMD wrappers set globals instead of making anonymous ``define`` calls) and are then registered
  as the named modules ``d3`` and ``jquery`` that bertviz's ``requirejs([...])`` asks for;
- bertviz's parameters (which carry the user's tokens) are re-serialised with ``<``, ``>``, ``&``
  and line separators escaped as ``\\uXXXX``, so a token like ``</script><img onerror=…>`` stays a
  string: bertviz draws tokens with d3's ``.text()``, which never parses markup.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import torch

from lmviz.analysis.inference import AttentionRun
from lmviz.paths import ROOT

VENDOR = ROOT / "assets" / "vendor"
VENDORED = ("d3.min.js", "jquery.min.js", "require.js")  # load order matters: see the module docstring
CDN = re.compile(r'<script src="https?://[^"]*"></script>')
REQUIRE_CONFIG = re.compile(r"require\.config\(\{.*?\}\);", re.S)
DECIMALS = 4  # attention weights shown by bertviz: 4 decimals keep the page small and lose nothing visible
REGISTER = "define('d3', [], function () { return window.d3; });\ndefine('jquery', [], function () { return window.jQuery; });"


@lru_cache(maxsize=1)
def vendored_scripts() -> str:
    """The vendored libraries as inline ``<script>`` blocks, then their registration as named modules."""
    blocks = []
    for name in VENDORED:
        code = (VENDOR / name).read_text(encoding="utf-8")
        if "</script" in code.lower():
            raise ValueError(f"{name} contains '</script' and cannot be inlined")
        blocks.append(f"<script>/* assets/vendor/{name} */\n{code}\n</script>")
    blocks.append(f"<script>{REGISTER}</script>")
    return "\n".join(blocks)


def script_json(value) -> str:
    """JSON that is safe inside an inline ``<script>``: no ``</script>``, no HTML comment, no line separators."""
    text = json.dumps(value, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _layers(probs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Record layers ``[B, H, Q, K]`` as bertviz's per-layer ``[1, H, Q, K]``, rounded (float64 keeps the JSON short)."""
    return [p[:1].double().round(decimals=DECIMALS) for p in probs]


def bertviz_arguments(run: AttentionRun) -> dict:
    """The keyword arguments bertviz's ``head_view``/``model_view`` take, built from our record."""
    rec = run.record
    if len(rec.kinds) > 1:  # an encoder-decoder: bertviz's three-part form
        return {"encoder_attention": _layers(rec.probs["self"]), "decoder_attention": _layers(rec.probs["causal"]),
                "cross_attention": _layers(rec.probs["cross"]), "encoder_tokens": list(run.tokens["encoder"]),
                "decoder_tokens": list(run.tokens["decoder"])}
    kind = rec.kinds[0]
    stack = next(iter(run.tokens))
    args = {"attention": _layers(rec.probs[kind]), "tokens": list(run.tokens[stack])}
    if 1 in run.type_ids:  # a sentence pair
        args["sentence_b_start"] = run.type_ids.index(1)
    return args


def _template(view: str) -> str:
    import bertviz

    return (Path(bertviz.__file__).parent / f"{view}_view.js").read_text(encoding="utf-8")


def offline_html(bertviz_html: str, view: str) -> str:
    """bertviz's returned HTML, rebuilt to need nothing from the network (see the module docstring)."""
    # bertviz replaces every "PYTHON_PARAMS" in its template, the one in a comment too: keep only the first
    before, between, *rest = _template(view).split("PYTHON_PARAMS")
    start = bertviz_html.index(before) + len(before)
    end = bertviz_html.index(between, start)
    params = json.loads(bertviz_html[start:end])
    script = REQUIRE_CONFIG.sub("", before, count=1) + script_json(params) + "PYTHON_PARAMS".join([between, *rest])
    head = bertviz_html[: bertviz_html.index(before)]
    head = CDN.sub("", head).replace('<script type="text/javascript">', "").rstrip()
    if re.search(r"https?://", head):
        raise ValueError("bertviz's HTML still refers to the network")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            "<style>body{margin:0;background:white;font-size:15px} select{font-size:15px}</style>"
            f"</head><body>{head}\n{vendored_scripts()}\n<script>\n{script}\n</script></body></html>")


def head_view_html(run: AttentionRun, layer: int | None = None) -> str:
    """bertviz's head view of ``run`` (every layer; T5: encoder, decoder and cross attention), offline."""
    from bertviz import head_view

    return offline_html(head_view(**bertviz_arguments(run), layer=layer, html_action="return").data, "head")


def model_view_html(run: AttentionRun) -> str:
    """bertviz's model view of ``run`` (all layers × heads thumbnails), offline."""
    from bertviz import model_view

    return offline_html(model_view(**bertviz_arguments(run), html_action="return").data, "model")


def view_height(run: AttentionRun, view: str, cap: int = 1400) -> int:
    """Pixels the view needs (bertviz's own layout arithmetic), capped: the frame scrolls beyond ``cap``."""
    n = max(len(t) for t in run.tokens.values())
    if view == "head":
        return min(cap, int(n * 22.5 + 30 + 70))
    heads = run.record.n_heads(run.record.kinds[0])
    layers = run.record.n_layers(run.record.kinds[0])
    thumb = n * 7 * 12 / heads + 10
    return min(cap, int(max(layers * thumb + 40, n * 18 + 55) + 60))
