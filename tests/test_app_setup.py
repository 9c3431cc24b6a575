"""app.py's process setup: once per server process, and nothing on importing the library or ``ui``."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_streamlit_still_has_the_flag_app_py_uses_to_turn_off_pages_discovery():
    from streamlit.runtime.pages_manager import PagesManager

    assert "uses_pages_directory" in vars(PagesManager), (
        "Streamlit no longer has PagesManager.uses_pages_directory: ui.py's line that stops Streamlit serving pages/ as "
        "its older multipage app (the first visitor at /attention got a page without the sidebar) now does nothing. "
        "Find the new switch, or a public API, and change lmviz/app/navigation.py.")
    assert "PagesManager.uses_pages_directory = False" in (ROOT / "lmviz" / "app" / "navigation.py").read_text(encoding="utf-8")


def test_importing_ui_changes_no_process_setting():
    code = ("import torch; torch.set_num_threads(2); import lmviz.app.ui, lmviz.app.views; "
            "assert torch.get_num_threads() == 2, torch.get_num_threads()")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
