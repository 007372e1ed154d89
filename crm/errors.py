"""Errors whose message is safe to show to a creator, a staff member or a fan.

Adapters and the CLI catch :class:`CrmError` and show ``str(error)``; anything else is a bug and
is logged with its traceback.
"""

from __future__ import annotations


class CrmError(Exception):
    """Base class: an expected failure with a message fit for the user."""


class BadInput(CrmError):
    """The caller supplied something malformed (a bad row, an unknown kind, a bad time)."""


class FanNotFound(CrmError):
    """No fan matches the query."""

    def __init__(self, query: str) -> None:
        super().__init__(f"no fan matches {query!r}")
        self.query = query


class AmbiguousFan(CrmError):
    """Several fans match a name; the candidates are attached so a UI can offer them."""

    def __init__(self, query: str, candidates: list[tuple[int, str]]) -> None:
        names = ", ".join(f"#{fid} {name}" for fid, name in candidates[:10])
        super().__init__(f"{query!r} matches several fans: {names}")
        self.query = query
        self.candidates = candidates


class SchemaOutOfDate(CrmError):
    """The database has not been migrated to the schema this code expects."""
