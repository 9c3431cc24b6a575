"""Where the app's own files are (``app.py``, ``app_pages/``, ``.streamlit/``, ``assets/``).

In a clone they sit beside the ``lmviz`` package; ``pip install .`` copies them to ``<prefix>/share/lmviz``
(pyproject.toml's data files), since they are not Python modules, and ``lmviz app`` runs the copy from there.
"""
from __future__ import annotations

import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent
INSTALLED = Path(sys.prefix) / "share" / "lmviz"
ROOT = SOURCE if (SOURCE / "app.py").is_file() else INSTALLED
"""The folder holding ``app.py`` and ``assets/``: the clone's, else the installed copy."""
