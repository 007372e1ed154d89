"""Background loops sleep until woken, and a shutdown's cancellation is never lost."""

from __future__ import annotations

import asyncio

import pytest

from bot.wake import sleep_until_set


async def test_woken_early_or_after_the_timeout() -> None:
    event = asyncio.Event()
    assert await sleep_until_set(event, 0.01) is False
    event.set()
    assert await sleep_until_set(event, 60) is True


async def test_a_cancellation_that_arrives_as_the_event_is_set_still_cancels() -> None:
    event = asyncio.Event()
    sleeper = asyncio.create_task(sleep_until_set(event, 60))
    await asyncio.sleep(0)  # asleep
    event.set()  # woken (a tier moved) ...
    sleeper.cancel()  # ... in the same moment as the shutdown
    with pytest.raises(asyncio.CancelledError):
        await sleeper
