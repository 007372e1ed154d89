"""An evergreen drop reaches a fan promoted later, once: the real write path moves the tier, the
writer's commit wakes the evergreen pass, the real LINE drainer sends it to the emulator."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from bot.drops_evergreen import EvergreenDrops
from crm.drops import DropDraft, create_drop
from crm.interaction import InteractionIn
from crm.models import Delivery, Fan
from tests.crm.test_drops import add_fan, line_id
from tests.line_adapter.conftest import T0, LineRig


def purchase(n: int, k: int) -> InteractionIn:
    return InteractionIn("line", line_id(n), "purchase", T0 - timedelta(days=k), f"order-{n}-{k}", None,
                         amount=Decimal(2000), currency="TWD")


async def test_an_evergreen_drop_reaches_a_newly_promoted_fan_once(rig: LineRig) -> None:
    async with rig.sessions.begin() as s:
        await add_fan(s, 1, T0)
        later = await add_fan(s, 2, T0, tier="passerby")
        await add_fan(s, 3, T0, tier="passerby")  # never promoted: never receives it
        await create_drop(s, rig.crm.settings, DropDraft("給一直支持的你", "鐵粉", platforms=("line",),
                                                         evergreen=True), T0)
        await create_drop(s, rig.crm.settings, DropDraft("只給當時的鐵粉", "鐵粉", platforms=("line",)), T0)
    evergreen = EvergreenDrops(rig.crm, rig.writer)
    await evergreen.start()
    try:
        await evergreen.settle()
        assert evergreen.delivered == 0  # the catch-up pass: fan 1 already has it
        await rig.writer.submit([purchase(2, k) for k in range(5)])  # the webhook path promotes fan 2
        await evergreen.settle()
        async with rig.sessions() as s:
            fan = await s.get(Fan, later)
            assert fan is not None and fan.tier == "superfan"
        await rig.writer.submit([purchase(2, k) for k in range(5, 30)])  # a second promotion
        await evergreen.settle()
        await rig.adapter.drain()
    finally:
        await evergreen.close()

    texts = Counter((d.to, m["text"]) for d in rig.emu.delivered for m in d.messages)
    assert texts == Counter({(line_id(1), "給一直支持的你"): 1, (line_id(1), "只給當時的鐵粉"): 1,
                             (line_id(2), "給一直支持的你"): 1})
    async with rig.sessions() as s:
        statuses = (await s.execute(select(Delivery.fan_id, Delivery.status).order_by(Delivery.id))).all()
    assert [status for _, status in statuses] == ["sent"] * 3


async def test_a_restart_catches_up_a_promotion_made_while_nothing_ran(rig: LineRig) -> None:
    async with rig.sessions.begin() as s:
        promoted = await add_fan(s, 1, T0, tier="passerby")
        await create_drop(s, rig.crm.settings, DropDraft("長期有效", "鐵粉", platforms=("line",), evergreen=True), T0)
        fan = await s.get(Fan, promoted)
        assert fan is not None
        fan.tier_pinned, fan.tier = "close_friend", "close_friend"  # as `superfan pin` does with no server
    for _ in range(2):  # two starts: the second finds the delivery there
        evergreen = EvergreenDrops(rig.crm, rig.writer)
        await evergreen.start()
        await evergreen.settle()
        await evergreen.close()
    await rig.adapter.drain()
    assert rig.emu.received() == Counter({line_id(1): 1})
