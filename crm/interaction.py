"""An interaction as an adapter or an import hands it over, and the checks it must pass.

Every event goes through :func:`validate` (adapters call it per event, so that one bad event is
refused alone) and again through :func:`validate_many` inside ``record_many``; both are cheap for
an interaction that is already clean.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from crm.clock import as_utc
from crm.errors import BadInput

_SURROGATE = re.compile("[\ud800-\udfff]")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_AMOUNT = Decimal("1e12")
#: The range of ``occurred_at``. 1970 reaches back past any shop's or platform's history that a
#: creator might import (a narrower "year 2000 onward" would refuse old orders), 2200 is past any
#: real event yet far from the ends of ``datetime`` and of the score's exponent, so a typo such as
#: 0001 or 9999 is refused with a reason instead of failing somewhere deeper.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_GOOD_IDENTS: set[str] = set()


class InteractionIn(NamedTuple):
    """One fan interaction as an adapter or an import sees it (platform-neutral).

    A named tuple rather than a frozen dataclass: one is made per webhook event and per imported
    row, and a frozen dataclass takes ~4 µs to build (every field through ``object.__setattr__``)
    against ~0.5 µs.
    """

    platform: str
    external_id: str
    kind: str
    occurred_at: datetime
    source_event_id: str | None = None
    display_name: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    text: str | None = None
    #: The platform's id of the message itself when it differs from the event id (LINE's
    #: ``message.id``): an unsend or an edit names the message, not the webhook event.
    message_ref: str | None = None

    def event_id(self) -> str:
        """The source event id, or a stable digest of the row when the source has none."""
        if self.source_event_id:
            return self.source_event_id
        raw = "|".join(
            str(x)
            for x in (self.platform, self.external_id, self.kind, as_utc(self.occurred_at).isoformat(),
                      self.amount, self.currency, self.text)
        )
        return "h:" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def _is_ident(text: str | None) -> bool:
    if text in _GOOD_IDENTS:
        return True
    if not text or not _IDENT.match(text):
        return False
    if len(_GOOD_IDENTS) < 4096:
        _GOOD_IDENTS.add(text)
    return True


def validate(item: InteractionIn) -> InteractionIn:
    """Check one interaction; returns it normalised or raises :class:`BadInput` naming the problem."""
    if _GOOD_IDENTS.issuperset((item.platform, item.kind)) and _normal(item):
        return item  # the common case, checked cheaply (adapters validate every event)
    if not _is_ident(item.platform):
        raise BadInput(f"bad platform {item.platform!r} (lowercase letters, e.g. line, discord)",
                       code="platform.bad", platform=item.platform)
    if not item.external_id or len(item.external_id) > 128:
        raise BadInput("external_id is empty or longer than 128 characters", code="external_id.bad", max=128)
    if not item.external_id.isprintable():
        raise BadInput("external_id has a control or other invisible character", code="external_id.bad_characters")
    if not _is_ident(item.kind):
        raise BadInput(f"bad kind {item.kind!r} (e.g. message, purchase, checkin)", code="kind.bad",
                       kind=item.kind)
    if item.occurred_at.tzinfo is None:
        raise BadInput("occurred_at needs a UTC offset", code="time.no_offset")
    if not EARLIEST <= item.occurred_at < LATEST:
        raise BadInput("occurred_at is before 1970 or after 2199", code="time.out_of_range",
                       earliest=EARLIEST.year, latest=LATEST.year - 1)
    if item.source_event_id is not None and len(item.source_event_id) > 128:
        raise BadInput("event id longer than 128 characters", code="event_id.too_long", max=128)
    if item.source_event_id is not None and not item.source_event_id.isprintable():
        raise BadInput("event id has a control or other invisible character", code="event_id.bad_characters")
    amount = item.amount
    if amount is not None and not isinstance(amount, Decimal):
        try:
            amount = Decimal(amount)
        except (InvalidOperation, TypeError, ValueError):
            raise BadInput(f"bad amount {item.amount!r}", code="amount.bad", amount=str(item.amount)) from None
    if amount is not None:
        if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT:
            raise BadInput(f"amount {item.amount} out of range", code="amount.out_of_range",
                           amount=str(item.amount))
    currency = item.currency.strip().upper() if item.currency else None
    if currency and not _CURRENCY.match(currency):
        raise BadInput(f"bad currency {item.currency!r} (ISO 4217, e.g. TWD)", code="currency.bad",
                       currency=item.currency)
    if item.kind == "purchase" and amount is not None and not currency:
        raise BadInput("a purchase amount needs a currency", code="currency.missing")
    external_id = item.external_id.strip()
    at = item.occurred_at if item.occurred_at.tzinfo is UTC else as_utc(item.occurred_at)
    text, name = _whole_characters(item.text), _whole_characters(item.display_name)
    if (external_id == item.external_id and at is item.occurred_at and amount is item.amount
            and currency == item.currency and text is item.text and name is item.display_name):
        return item
    return item._replace(external_id=external_id, occurred_at=at, amount=amount, currency=currency, text=text,
                         display_name=name)


def _whole_characters(text: str | None) -> str | None:
    """``text`` with any lone UTF-16 surrogate (half an emoji, e.g. from a JSON ``\\ud83d`` escape)
    and any NUL (which PostgreSQL refuses in text) replaced by U+FFFD: the database takes only
    whole characters, and one broken emoji must not cost a fan's message."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def validate_many(items: Sequence[InteractionIn]) -> list[InteractionIn]:
    """:func:`validate` for a batch: rows that are already normal pass on a few cheap checks."""
    for text in {i.platform for i in items} | {i.kind for i in items}:
        if not _is_ident(text):
            break
    else:
        return [item if _normal(item) else validate(item) for item in items]
    return [validate(item) for item in items]


def _normal(item: InteractionIn) -> bool:
    """True when :func:`validate` would return ``item`` as it is (platform and kind checked apart)."""
    ext, eid = item.external_id, item.source_event_id
    return (item.occurred_at.tzinfo is UTC and EARLIEST <= item.occurred_at < LATEST
            and item.amount is None and item.currency is None
            and 0 < len(ext) <= 128 and not ext[0].isspace() and not ext[-1].isspace() and ext.isprintable()
            and (eid is None or (len(eid) <= 128 and eid.isprintable()))
            and _whole_characters(item.text) is item.text and _whole_characters(item.display_name) is item.display_name)
