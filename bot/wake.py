"""Sleeping in a background loop until woken: the one way superfan's loops do it."""

from __future__ import annotations

import asyncio


async def sleep_until_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it was set.

    Not ``asyncio.wait_for(event.wait(), timeout)``: on Python 3.11 that loses a cancellation that
    arrives just as the event is set (CPython gh-86296), and a loop cancelled at shutdown then
    sleeps a whole period more while ``superfan run`` waits for it to end.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return bool(done)
