"""Errors whose message is safe to show to a creator, a staff member or a fan.

Every :class:`CrmError` carries a stable ``code`` (``"tier.unknown"``, ``"link.expired"`` …) and
the ``params`` its message needs. ``crm`` stays platform-free and language-free: the adapters and
the CLI render ``code`` + ``params`` in the reader's language from the message catalogue
(``bot.i18n.errors.error_text``, keys ``errors.<code>``). ``str(error)`` is an English message
for logs, and the text shown when the catalogue has no entry for the code.

A param is a plain value (``str``, ``int`` …), a list (shown as a list in the reader's language)
or a mapping keyed by locale, for a value that itself has translations (tier names from the
config). Codes and param names are an interface: rename one only together with the catalogues.
"""

from __future__ import annotations


class CrmError(Exception):
    """Base class: an expected failure with a message fit for the user.

    ``code`` names the failure for the message catalogue, ``params`` fill in its text; ``message``
    is the English text of ``str(error)``.
    """

    code: str
    params: dict[str, object]

    def __init__(self, message: str, *, code: str, **params: object) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


class BadInput(CrmError):
    """The caller supplied something malformed (a bad row, an unknown kind, a bad time)."""


class Conflict(CrmError):
    """What was sent contradicts what is already stored (an order id seen with another amount);
    nothing was changed. Params ``stored`` and ``given`` hold the two versions as plain values."""


class FanNotFound(CrmError):
    """No fan matches the query (code ``fan.not_found``, param ``query``)."""

    def __init__(self, query: str) -> None:
        super().__init__(f"no fan matches {query!r}", code="fan.not_found", query=query)
        self.query = query


class AmbiguousFan(CrmError):
    """Several fans match a name; the candidates are attached so a UI can offer them.

    Code ``fan.ambiguous``; params ``query`` and ``names`` (the first ten, best match first, then
    ``…`` when there are more). ``described`` gives each shown candidate as a ``fan.candidate``
    error (id, name, platforms, tier, last seen) so the list tells namesakes apart; without it a
    candidate is ``#id name``.
    """

    SHOWN = 10

    def __init__(self, query: str, candidates: list[tuple[int, str]],
                 described: list[CrmError] | None = None) -> None:
        names: list[object] = list(described[:self.SHOWN]) if described else [
            f"#{fid} {name}" for fid, name in candidates[:self.SHOWN]]
        if len(candidates) > self.SHOWN:
            names.append("…")
        super().__init__(f"{query!r} matches several fans: {', '.join(map(str, names))}", code="fan.ambiguous",
                         query=query, names=names)
        self.query = query
        self.candidates = candidates


class SchemaOutOfDate(CrmError):
    """The database has not been migrated to the schema this code expects (code ``schema.out_of_date``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="schema.out_of_date")


class ConversationNotFound(CrmError):
    """No conversation has this id (code ``conversation.not_found``)."""

    def __init__(self, conversation_id: int) -> None:
        super().__init__(f"no conversation {conversation_id}", code="conversation.not_found",
                         conversation_id=conversation_id)
