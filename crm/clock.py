"""Time helpers. The domain never reads the wall clock itself: callers pass ``now``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The real clock, timezone-aware UTC; the default :data:`Clock`."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Normalise an aware datetime to UTC; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_iso(text: str) -> datetime:
    """Parse ISO-8601 (``Z`` accepted); a time without an offset is rejected as ambiguous.

    Every failure is a :class:`ValueError` (also a time such as ``0001-01-01T00:00:00+14:00``
    that has no UTC equivalent), so a caller can answer bad input with one ``except``.
    """
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"time {text!r} is out of range") from None
