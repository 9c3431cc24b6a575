"""A short classroom in CI: several students at once against one server, as real browser tabs (tests/load.py) and
as websocket sessions (tests/protocol_load.py).

The full runs (20 sessions, 2 minutes) are ``python tests/protocol_load.py`` and ``python tests/load.py``; their
figures are in the README.
"""
from pathlib import Path

import pytest

from browser import CHROMIUM, run_async


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_a_few_students_at_once_see_no_error_no_other_session_and_nothing_leaves_localhost():
    from load import classroom

    r = run_async(classroom(sessions=3, seconds=25))
    print(r)
    assert r["interactions"] >= 6, r
    assert r["errors"] == 0, r["first_errors"]
    assert r["dialogs"] == 0 and r["foreign_requests"] == 0, r
    assert r["leaks"] == 0, r["first_leaks"]
    assert r["server_foreign_connections"] == [], r
    assert r["rss_ratio"] < 1.5, r


def test_a_classroom_over_the_websocket_sees_no_exception_and_no_other_session():
    """Eight sessions speaking Streamlit's protocol (tests/protocol_load.py), one of them running long generations."""
    from protocol_load import classroom

    r = run_async(classroom(sessions=8, seconds=20))
    print(r)
    assert r["interactions"] >= 16 and {a.split()[0] for a in r["actions"]} >= {"text", "page", "generate", "long"}, r
    assert r["errors"] == 0, r["first_errors"]
    assert r["leaks"] == 0, r["first_leaks"]
    assert r["server_foreign_connections"] == [], r
    assert r["rss_ratio"] < 1.5, r
