"""How :func:`crm.ingest.record_many` turns interactions into insert columns, awarding points.

Works column by column (list comprehensions, ``zip``, ``map``): an import runs this for 10^5 rows,
and a loop over each row's nine fields cost several times as much.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from itertools import compress, repeat
from typing import Protocol, cast

from crm.db import sqlite_datetimes
from crm.fan_kind_scores import KindTotals
from crm.identity import FanRef
from crm.interaction import InteractionIn
from crm.interaction_sink import Columns
from crm.scoring import Allowance


class Outcome(Protocol):
    """Per-item results, in the order items were given (``crm.ingest.Recording``)."""

    statuses: list[str]
    points: list[float]
    new: list[bool]


class RowBuilder:
    """Turns items, a slice at a time, into insert columns; awards points as it goes.

    Slices come fan by fan, each fan's items in time order (caps and cooldowns are per fan).

    Results per item (stored, duplicate, opted out; points) go into ``outcome``; each fan's new
    score terms into :attr:`delta` (and per kind into :attr:`by_kind`) and its newest time into
    :attr:`last_seen`.
    """

    def __init__(self, items: Sequence[InteractionIn], stamps: Sequence[float], event_ids: Sequence[str],
                 refs: Sequence[FanRef], outcome: Outcome, allowance: Allowance,
                 term: Callable[[float, float], float], summarise: Callable[[str], str | None],
                 enc: Callable[[datetime], object]) -> None:
        self.items, self.stamps, self.event_ids, self.refs = items, stamps, event_ids, refs
        self.outcome, self.allowance, self.term, self.summarise, self.enc = outcome, allowance, term, summarise, enc
        self.rules = allowance.rules
        #: ``(platform, event id)`` already stored or taken earlier in the batch; ``None`` when no
        #: item can be a duplicate or belong to an opted-out fan (nothing to screen).
        self.seen: set[tuple[str, str]] | None = None
        self.delta: dict[int, float] = {}
        #: fan → the time of its newest stored row, as the insert columns hold it
        self.last_seen: dict[int, object] = {}
        #: what the stored rows add to each fan's score per kind (crm.fan_kind_scores)
        self.by_kind = KindTotals()

    def build(self, indexes: list[int], *, as_sqlite: bool) -> tuple[list[int], Columns, list[float]]:
        """Of the items at ``indexes`` (each fan's in time order), those to store, their columns
        (``ROW_COLUMNS`` order) and each row's score term."""
        if self.seen is not None:
            indexes = self._screen(indexes)
        items = list(map(self.items.__getitem__, indexes))
        refs = list(map(self.refs.__getitem__, indexes))
        fan_ids = [r.fan_id for r in refs]
        kinds = [i.kind for i in items]
        stamps = list(map(self.stamps.__getitem__, indexes))
        amounts = [i.amount for i in items]
        currencies = [i.currency for i in items]
        points = list(map(self.rules.weights.get, kinds, repeat(0.0)))
        priced = [j for j, amount in enumerate(amounts) if amount is not None]
        for j in priced:
            points[j] = self.rules.base_points(kinds[j], amounts[j], currencies[j])
        contributions = self._award(fan_ids, kinds, stamps, points)
        points_of = self.outcome.points
        for n, p in zip(indexes, points, strict=True):
            if p:
                points_of[n] = p
        cents: list[int | None] = [None] * len(items)
        for j in priced:
            cents[j] = int((cast(Decimal, amounts[j]) * 100).to_integral_value())
        summarise = self.summarise
        at: Sequence[object]
        if as_sqlite:  # validated times are UTC
            at = sqlite_datetimes(stamps, [i.occurred_at for i in items])
        else:
            at = [self.enc(i.occurred_at) for i in items]
        self.last_seen.update(zip(fan_ids, at, strict=True))  # each fan's rows in time order: the newest wins
        columns = (fan_ids, [i.platform for i in items], kinds, at, points, cents, currencies,
                   [summarise(i.text) if i.text else None for i in items],
                   list(map(self.event_ids.__getitem__, indexes)))
        return indexes, columns, contributions

    def _screen(self, indexes: list[int]) -> list[int]:
        """Leave out items of opted-out fans and events stored already or earlier in the batch."""
        assert self.seen is not None
        seen, statuses, new = self.seen, self.outcome.statuses, self.outcome.new
        kept = []
        for n in indexes:
            if self.refs[n].opted_out:
                statuses[n] = "opted_out"
                continue
            unique = (self.items[n].platform, self.event_ids[n])
            if unique in seen:
                statuses[n], new[n] = "duplicate", False
                continue
            seen.add(unique)
            kept.append(n)
        return kept

    def _award(self, fan_ids: list[int], kinds: list[str], stamps: list[float], points: list[float]) -> list[float]:
        """Apply caps and cooldowns to ``points`` (in place, each fan's rows in time order); each row's score term.

        In passes over whole columns: ``map`` calls ``award`` on the capped rows only, in row order.
        """
        limited = self.allowance.window_kinds
        capped = [kind in limited and base > 0.0 for kind, base in zip(kinds, points, strict=True)]
        granted = map(self.allowance.award, compress(fan_ids, capped), compress(kinds, capped),
                      compress(stamps, capped), compress(points, capped))
        points[:] = [next(granted) if cap else (base if base > 0.0 else 0.0)
                     for cap, base in zip(capped, points, strict=True)]
        contributions = list(map(self.term, points, stamps))
        delta = self.delta
        for fan_id, c in zip(fan_ids, contributions, strict=True):
            if c:
                delta[fan_id] = delta.get(fan_id, 0.0) + c
        self.by_kind.add_columns(fan_ids, kinds, points, contributions)
        return contributions
