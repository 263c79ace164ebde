"""Text for terminals: the one table formatter every CLI and ``Balance.as_table`` use, and the one
reading of a moment typed on a command line."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

__all__ = ["moment", "table"]


def moment(value: str) -> datetime:
    """An ISO 8601 date-time with a UTC offset (``Z`` allowed): ``2030-01-31T00:00Z``. Raises
    :class:`ValueError` with a message for people, naming a corrected example."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time, e.g. 2030-01-31T00:00Z") from None
    if parsed.tzinfo is None:
        # Python drops an offset written after a bare date ("2030-01-31+02:00"), so the example
        # always has a time: the same moment the value names, at midnight if it names a day.
        example = parsed.isoformat(timespec="minutes")
        raise ValueError(f"{value!r} has no UTC offset; add one to a date-time, e.g. {example}Z or {example}+02:00")
    return parsed


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, with a dashed rule under the first (header) row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
