"""Logging that never writes what fans wrote: one formatter for every handler ``superfan`` sets up.

Log lines themselves are written with care (event ids and counts, never text or names), but a
traceback ends with the exception's message, and messages can carry fan content: SQL parameters
(the engine hides them: ``hide_parameters``), a ``KeyError`` on a display name, a parser quoting
its input. :class:`FanSafeFormatter` keeps every frame of a traceback (where it failed) and keeps
the message only of exceptions whose messages are known to be safe; ``--verbose`` (DEBUG, on the
creator's own terminal) shows everything.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import traceback
from types import TracebackType

from crm.errors import CrmError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WITHHELD = "(message withheld: it may hold fan content; run with --verbose to see it)"
#: Exceptions whose messages say what went wrong without quoting anyone (a class can also say so
#: itself with ``message_is_safe = True``).
_SAFE = (OSError, TimeoutError, sqlite3.Error, CrmError)


def safe_message(exc: BaseException) -> str:
    """An exception's message if it is safe to log, else a note that it was withheld."""
    # An SQLAlchemy error exists only once SQLAlchemy is loaded: help pages, which set up logging
    # too, need not load it (a quarter of a second) to format nothing.
    exceptions = sys.modules.get("sqlalchemy.exc")
    if exceptions is not None and isinstance(exc, exceptions.DBAPIError):
        return str(exc.orig)[:300]  # the driver's reason; the statement and parameters stay out
    if isinstance(exc, _SAFE) or getattr(type(exc), "message_is_safe", False):
        return str(exc)[:300]
    return WITHHELD


def safe_traceback(exc: BaseException) -> str:
    """A traceback of ``exc`` and the exceptions it was raised from, with only safe messages."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    lines: list[str] = []
    for n, item in enumerate(reversed(chain)):
        if n:
            lines.append("\nThe above exception led to the following one:\n\n")
        lines.append("Traceback (most recent call last):\n")
        lines.extend(traceback.format_tb(item.__traceback__))
        lines.append(f"{type(item).__module__}.{type(item).__qualname__}: {safe_message(item)}\n")
    return "".join(lines).rstrip("\n")


class FanSafeFormatter(logging.Formatter):
    """Formats records as usual, but tracebacks through :func:`safe_traceback` unless ``full``."""

    def __init__(self, fmt: str = FORMAT, *, full: bool = False) -> None:
        super().__init__(fmt)
        self.full = full

    def format(self, record: logging.LogRecord) -> str:
        # Another handler may have cached its own full rendering of the traceback on the record.
        cached, record.exc_text = record.exc_text, None
        try:
            return super().format(record)
        finally:
            record.exc_text = cached

    def formatException(self, ei: tuple[type[BaseException], BaseException, TracebackType | None]  # noqa: N802
                        | tuple[None, None, None]) -> str:
        if self.full or ei[1] is None:
            return super().formatException(ei)
        return safe_traceback(ei[1])


def setup_logging(verbose: bool) -> None:
    """Root logging for the ``superfan`` command: WARNING (or DEBUG with ``--verbose``), fan-safe."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format=FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(FanSafeFormatter(full=verbose))
    logging.getLogger("discord.client").addFilter(without_voice_notices)


def without_voice_notices(record: logging.LogRecord) -> bool:
    """discord.py warns at every start that voice support (PyNaCl, davey) is missing; superfan never
    joins a voice channel, so a creator would only be worried by it. Other warnings pass."""
    return "voice will NOT be supported" not in record.getMessage()
