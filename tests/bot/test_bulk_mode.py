"""Bulk calls change two interpreter settings for their length and always put them back."""

from __future__ import annotations

import asyncio
import gc
import sys

import pytest

from bot.bulk_mode import BULK_SWITCH_INTERVAL_S, bulk_mode


@pytest.fixture(autouse=True)
def _settings_restored():
    before = gc.isenabled(), sys.getswitchinterval()
    gc.enable()
    sys.setswitchinterval(0.005)
    yield
    gc.enable() if before[0] else gc.disable()
    sys.setswitchinterval(before[1])


def test_a_bulk_call_pauses_the_collector_and_shortens_the_switch_interval_then_restores_them():
    sys.setswitchinterval(0.004)
    with bulk_mode():
        assert not gc.isenabled() and sys.getswitchinterval() == pytest.approx(BULK_SWITCH_INTERVAL_S)
    assert gc.isenabled() and sys.getswitchinterval() == pytest.approx(0.004)


def test_settings_come_back_after_a_failure_too():
    with pytest.raises(RuntimeError), bulk_mode():
        raise RuntimeError("bad row")
    assert gc.isenabled() and sys.getswitchinterval() == pytest.approx(0.005)


def test_a_small_batch_changes_nothing_and_a_disabled_collector_stays_disabled():
    with bulk_mode(False):
        assert gc.isenabled() and sys.getswitchinterval() == pytest.approx(0.005)
    gc.disable()
    with bulk_mode():
        pass
    assert not gc.isenabled()


async def test_overlapping_bulk_calls_restore_the_settings_once_the_last_one_ends():
    first_in, second_in, first_out = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first() -> None:
        with bulk_mode():
            first_in.set()
            await second_in.wait()
        first_out.set()

    async def second() -> None:
        await first_in.wait()
        with bulk_mode():
            second_in.set()
            await first_out.wait()
            assert not gc.isenabled()  # the first call ended, but this one still runs
            assert sys.getswitchinterval() == pytest.approx(BULK_SWITCH_INTERVAL_S)

    await asyncio.gather(first(), second())
    assert gc.isenabled() and sys.getswitchinterval() == pytest.approx(0.005)

