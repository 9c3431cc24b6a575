"""``pip install .`` installs what the app needs: the pins of requirements-app.txt, a console script, and every file the
app reads (pyproject.toml's data files, which ``lmviz.paths`` finds under ``<prefix>/share/lmviz``)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_package_and_requirements_txt_read_one_list_of_pins():
    assert PROJECT["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements-app.txt"]}
    assert "-r requirements-app.txt" in (ROOT / "requirements.txt").read_text().splitlines()
    pins = [line for line in (ROOT / "requirements-app.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in p for p in pins) and any(p.startswith("torch==") for p in pins)


def test_every_file_the_app_reads_is_installed():
    installed = {f for pattern in (g for globs in PROJECT["tool"]["setuptools"]["data-files"].values() for g in globs)
                 for f in map(str, (p.relative_to(ROOT) for p in ROOT.glob(pattern)))}
    tracked = subprocess.run(["git", "ls-files", "app.py", "pages", "assets", ".streamlit"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    missing = [f for f in tracked if f not in installed and (ROOT / f).is_file()]
    assert not missing, f"pyproject.toml's data-files leave out {missing}"


def test_the_console_script_starts_the_app_command():
    assert PROJECT["project"]["scripts"]["lmviz"] == "lmviz.__main__:main"
    out = subprocess.run([sys.executable, "-m", "lmviz", "app", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "--models" in out.stdout
    from lmviz import paths

    assert paths.ROOT == ROOT  # a clone runs its own app.py and assets
