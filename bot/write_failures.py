"""What a failed write means, in one place: the writer's exceptions and the table that sorts them.

When a group fails, :func:`classify` decides what that means (one table, in order):

| failure                                                      | what the writer does                  |
|--------------------------------------------------------------|---------------------------------------|
| the database is busy, locked, unreachable, or the connection | every request of the group fails at   |
| broke (``OperationalError``, ``InterfaceError``, ``OSError``, | once with :class:`StorageUnavailable` |
| ``TimeoutError``, an invalidated connection)                 | (webhooks answer 503, senders retry)  |
| one op's data cannot be stored (``CrmError``,                | the ops are retried one per           |
| ``IntegrityError``, ``DataError``)                           | transaction: the bad op is            |
|                                                              | :class:`Rejected`, the others stored  |
| anything else (a bug)                                        | retried one by one as well; the op    |
|                                                              | that still fails fails its request    |
|                                                              | (5xx: it may succeed after a fix)     |
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError

from bot.log_safety import safe_message
from crm.errors import CrmError


class WriterClosed(RuntimeError):
    """The writer is shutting down and takes no new work (answer 503 and let the sender retry)."""

    message_is_safe = True


class StorageUnavailable(RuntimeError):
    """The ops were not committed because the database was busy or unreachable (a transient failure).

    Nothing of the request was stored: a webhook answers 5xx (503 with ``Retry-After``) so the
    sender redelivers, and Discord intake keeps the event and tries again later.
    """

    message_is_safe = True  # built from brief() of the underlying error


TRANSIENT = "transient"
BAD_DATA = "bad data"
BUG = "bug"


def classify(exc: BaseException) -> str:
    """What a failed commit means: :data:`TRANSIENT` (busy or unreachable storage: retry later, the
    whole group), :data:`BAD_DATA` (one op cannot be stored, ever) or :data:`BUG` (anything else)."""
    if isinstance(exc, StorageUnavailable):
        return TRANSIENT
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return TRANSIENT
    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError | sqlite3.OperationalError):
        return TRANSIENT
    if type(exc).__module__.startswith("asyncpg") and isinstance(exc, ConnectionError | OSError):
        return TRANSIENT
    if isinstance(exc, CrmError | IntegrityError | DataError):
        return BAD_DATA
    return BUG


def transient(exc: BaseException) -> bool:
    """Errors worth a redelivery (the database was unreachable or busy), as opposed to bad data."""
    return classify(exc) == TRANSIENT


def brief(exc: BaseException) -> str:
    """An error for a log line or an answer: its type and, where that is safe, its message; never
    SQL parameters or other text that can hold what fans wrote (:func:`bot.log_safety.safe_message`)."""
    return f"{type(exc).__name__}: {safe_message(exc)}"
