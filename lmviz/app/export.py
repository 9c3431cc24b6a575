"""What a page offers for download, as text."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math

import numpy as np


def csv_text(rows: list[dict]) -> str:
    """Rows of plain values as CSV text (the download button's data)."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def plain_data(value):
    """``value`` as JSON-ready data: dataclasses as dicts, numpy arrays and numbers as lists and floats, tuples as lists,
    NaN and ±inf as None (JSON has no such numbers)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain_data(value.tolist())
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return round(float(value), 6) if math.isfinite(value) else None
    return value if value is None or isinstance(value, str) else str(value)


def view_json(page: str, settings: dict, numbers) -> str:
    """A page's current view as JSON: the page, the settings that reproduce it (its link's), and the numbers drawn."""
    return json.dumps({"page": page, "settings": settings, "numbers": plain_data(numbers)}, ensure_ascii=False, indent=1)
