"""What a page offers for download, as text."""
from __future__ import annotations

import csv
import io


def csv_text(rows: list[dict]) -> str:
    """Rows of plain values as CSV text (the download button's data)."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()
