"""A short classroom in CI: several real browser tabs at once against one server (tests/load.py).

The full run (20 sessions, 2 minutes) is ``python tests/load.py``; its figures are in the README.
"""
import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from browser import CHROMIUM

pytestmark = pytest.mark.browser


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_a_few_students_at_once_see_no_error_no_other_session_and_nothing_leaves_localhost():
    from load import classroom

    # In a thread of its own: the session's sync Playwright (tests/browser.py) keeps an event loop on this one.
    with ThreadPoolExecutor(1) as pool:
        r = pool.submit(asyncio.run, classroom(sessions=3, seconds=25)).result()
    print(r)
    assert r["interactions"] >= 6, r
    assert r["errors"] == 0, r["first_errors"]
    assert r["dialogs"] == 0 and r["foreign_requests"] == 0, r
    assert r["leaks"] == 0, r["first_leaks"]
    assert r["server_foreign_connections"] == [], r
    assert r["rss_ratio"] < 1.5, r
