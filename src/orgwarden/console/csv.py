"""CSV downloads: exactly the rows a page shows, safe to open in a spreadsheet.

A cell starting with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return) is prefixed with
``'`` so a spreadsheet reads it as text, not a formula (CSV injection). Numbers are written as they
are (a negative number is a number, not a formula).
"""

from __future__ import annotations

import csv as _csv
import io
from collections.abc import Iterable, Sequence

from starlette.responses import Response

from orgwarden.console.render import secure

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> str:
    """One cell's text: ``None`` is empty; a string that could be read as a formula is quoted with ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = _csv.writer(out, lineterminator="\r\n")
    writer.writerow([cell(h) for h in header])
    for row in rows:
        writer.writerow([cell(v) for v in row])
    return out.getvalue()


def csv_response(filename: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Response:
    """A ``text/csv`` attachment named ``filename`` (letters, digits, ``._-`` only)."""
    safe = "".join(c for c in filename if c.isalnum() or c in "._-")[:100] or "export.csv"
    response = Response(
        csv_text(header, rows).encode(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{safe}"'},
    )
    return secure(response)
