"""The Fine-tuning page against values no browser sends, straight over the websocket: numbers out of range, or not
numbers at all, in every number box and slider (then Start pressed); tests/test_forged.py forges every page's selectboxes
and radios, this one's included. The page answers with itself and a message, never a traceback.

Not sent: a float (NaN) into a whole-number box. Streamlit's own deserializer raises on it (``int(nan)``), in the
forger's session, before any page code runs."""
from __future__ import annotations

import math

from browser import run_async
from load import Stats
from protocol_load import Session, _state
from test_forged import server  # noqa: F401  (the same fixture: one app server for this module)

FORGED_NUMBERS = [-1.0, 0.0, 1e12, -1e12, math.nan, math.inf, -math.inf]


async def _forge_numbers(url: str) -> tuple[list[str], int]:
    from websockets.asyncio.client import connect

    stats, tried = Stats(), 0
    async with connect(url.replace("http", "ws") + "/_stcore/stream", max_size=None, ping_interval=None) as ws:
        s = Session(ws, "m", ["m"], stats, "forger")
        for model in ("bert", "gpt2"):
            await s.run(page="finetune", query=f"model={model}&n=16")
            boxes = [(label, proto) for label, (etype, proto) in s.widgets.items() if etype in ("number_input", "slider")]
            assert len(boxes) >= 4, (list(s.widgets), stats.errors)
            for label, proto in boxes:
                for value in FORGED_NUMBERS:
                    await s.run(page="finetune", query=f"model={model}&n=16")
                    start = s.find("button", "▶️ Start")
                    before = len(stats.errors)
                    if label.startswith("λ"):  # a slider sends its value as a list
                        state = _state(proto)
                        state.double_array_value.data.append(value)
                    else:
                        whole = proto.data_type == proto.INT
                        if whole and not math.isfinite(value):
                            continue
                        state = _state(proto, **({"int_value": int(value)} if whole else {"double_value": value}))
                    await s.run(states=[state, _state(start, trigger_value=True)] if start is not None else [state])
                    tried += 1
                    if "▶️ Start fine-tuning" not in s.widgets:
                        stats.errors.append("the page did not draw its Start button again")
                    stats.errors[before:] = [f"{model} · {label} = {value!r}: {e}" for e in stats.errors[before:]]
                    stop = s.find("button", "⏹️ Stop")
                    if stop is not None and not stop.disabled:
                        await s.run(states=[_state(stop, trigger_value=True)])
    return stats.errors, tried


def test_forged_numbers_on_the_fine_tuning_page_get_the_page_not_a_traceback(server):
    errors, tried = run_async(_forge_numbers(server))
    assert tried >= 30, tried
    assert not errors, (tried, errors)
