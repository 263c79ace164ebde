"""Text for people: the one table formatter every CLI and ``Balance.as_table`` use, the one reading
of a moment typed on a command line, and the one "did you mean" hint for a mistyped name."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

__all__ = ["did_you_mean", "moment", "table"]

_DAY = re.compile(r"(\d{4}-\d{2}-\d{2})(Z|[+-]\d{2}:\d{2})?")


def moment(value: str) -> datetime:
    """An ISO 8601 date-time with a UTC offset (``Z`` allowed): ``2030-01-31T00:00Z``. Raises
    :class:`ValueError` with a message for people, naming a corrected example."""
    day = _DAY.fullmatch(value)
    if day is not None:  # Python misreads a bare date's offset ("2030-01-31+02:00" as 02:00, no offset)
        offset = day.group(2) or "Z"
        raise ValueError(f"{value!r} names a day, not a moment; write e.g. {day.group(1)}T00:00{offset}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time, e.g. 2030-01-31T00:00Z") from None
    if parsed.tzinfo is None:
        example = parsed.isoformat(timespec="minutes")
        raise ValueError(f"{value!r} has no UTC offset; add one, e.g. {example}Z or {example}+02:00")
    return parsed


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, with a dashed rule under the first (header) row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'api-requests'?)`` for the closest of ``choices`` to a mistyped ``word``,
    else ``""``: appended to an error message that already names what was wrong."""
    if not isinstance(word, str):
        return ""
    options = list(choices)
    by_lower = {choice.lower(): choice for choice in options}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
