"""The one plain-text table printer (evaluation reports, the quickstart's before/after)."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """Columns padded to their widest cell, two spaces apart, a dashed rule under the header.

    Args:
      header: one title per column.
      rows: cells as strings (format numbers before, e.g. ``f"{x:.4f}"``).
      align: one letter per column, ``l`` or ``r``; columns past its end: the first is left
        aligned, the others right aligned (numbers).
    """
    table = [list(header), *(list(r) for r in rows)]
    if any(len(r) != len(header) for r in table):
        raise ValueError(f"every row needs {len(header)} cells: {rows}")
    align = align + "l" * (not align) + "r" * len(header)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for j, row in enumerate(table):
        cells = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
