"""Drops as the outbox senders read them: loaded once per drop, rendered with ``[drops]``.

A drop's rows carry only its id (the text lives once, in ``drops``); a sender asks here for the
drop and the text fans read (:func:`crm.drops.drop_text`: the disclosure first on a sponsored
drop, the link last). A drop does not change after it is created, so a few are kept in memory.
"""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.drops import DropView, drop_text, load_drop, waiting_recipients
from crm.settings import DropRules

KEEP = 64


class DropViews:
    """``await views.get(drop_id)`` → the drop (None once erased); ``views.text(view)`` → its text."""

    def __init__(self, readers: async_sessionmaker[AsyncSession], rules: DropRules) -> None:
        self._readers = readers
        self.rules = rules
        self._kept: OrderedDict[int, DropView] = OrderedDict()

    async def get(self, drop_id: int) -> DropView | None:
        view = self._kept.get(drop_id)
        if view is None:
            async with self._readers() as session:
                view = await load_drop(session, drop_id)
            if view is None:
                return None
            self._kept[drop_id] = view
            while len(self._kept) > KEEP:
                self._kept.popitem(last=False)
        return view

    def text(self, view: DropView) -> str:
        return drop_text(view, self.rules)

    async def still_waiting(self, outbox_id: int) -> set[str]:
        """The platform ids whose delivery by this row is still pending: a fan erased since the
        drop was created has no delivery left, and is not sent to."""
        async with self._readers() as session:
            return await waiting_recipients(session, outbox_id)
