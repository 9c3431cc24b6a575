"""A client that is not a browser: values no browser sends, straight over Streamlit's websocket.

A browser only ever sends one of a selectbox's or radio's options; Streamlit passes any other string
through to the page unchanged. Every such choice on every page gets a forged value here, and the page
must answer with itself, not a traceback.
"""
from __future__ import annotations

import pytest

from browser import free_port, run_async, start_app
from load import PAGES, Stats
from protocol_load import Session, _state

FORGED = ["zz<script>alert(1)</script>", "-1", "999999", ""]


async def _forge_every_choice(url: str) -> tuple[list[str], int]:
    from websockets.asyncio.client import connect

    stats, tried = Stats(), 0
    async with connect(url.replace("http", "ws") + "/_stcore/stream", max_size=None, ping_interval=None) as ws:
        s = Session(ws, "m", ["m"], stats, "forger")
        for page in PAGES:
            await s.run(page=page)
            choices = [(label, proto) for label, (etype, proto) in s.widgets.items() if etype in ("selectbox", "radio")]
            for label, proto in choices:
                for value in FORGED:
                    await s.run(page=page)  # the page as a browser first shows it
                    before = len(stats.errors)
                    await s.run(states=[_state(proto, string_value=value)])
                    tried += 1
                    if label not in s.widgets:
                        stats.errors.append(f"the page did not draw {label!r} again")
                    stats.errors[before:] = [f"{page or 'home'} · {label} = {value!r}: {e}" for e in stats.errors[before:]]
    return stats.errors, tried


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = start_app(port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def test_a_forged_choice_on_any_page_gets_the_page_not_a_traceback(server):
    errors, tried = run_async(_forge_every_choice(server))
    assert tried >= 40, tried  # every page's selectboxes and radios
    assert not errors, (tried, errors)



# Not '{"selection": "x"}': Streamlit's own deserializer raises on it, in the forger's session, before any page code runs.
CLICKS = ['"x"', "[]", '{"selection": {"points": "x"}}', '{"selection": {"points": [7]}}',
          '{"selection": {"points": [{"customdata": ["<b>x</b>", -1]}]}}', '{"selection": {"points": [{"customdata": [99, 99]}]}}',
          '{"selection": {"points": [{"customdata": ["gpt2", 99999]}]}}']


async def _forge_clicks(url: str) -> tuple[list[str], int]:
    """What a click on a clickable figure reports (the Attention grid, the Tokenization pieces), forged."""
    from websockets.asyncio.client import connect

    stats, tried = Stats(), 0
    for page in ("attention", "tokenization"):  # a session each: this client sends no other widget's state
        async with connect(url.replace("http", "ws") + "/_stcore/stream", max_size=None, ping_interval=None) as ws:
            s = Session(ws, "m", ["m"], stats, "forger")
            await s.run(page=page)
            figures = [proto for etype, proto in s.figures if proto.id]
            assert figures, f"{page} draws no clickable figure"
            for proto in figures:
                for value in CLICKS:
                    before = len(stats.errors)
                    await s.run(states=[_state(proto, string_value=value)])
                    tried += 1
                    stats.errors[before:] = [f"{page} · click = {value!r}: {e}" for e in stats.errors[before:]]
    return stats.errors, tried


def test_a_forged_click_on_a_figure_gets_the_page_not_a_traceback(server):
    errors, tried = run_async(_forge_clicks(server))
    assert tried >= 2 * len(CLICKS), tried
    assert not errors, (tried, errors)
