"""Dead letters: a signed event superfan cannot understand is kept whole, counted, listed and replayable."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from typer.testing import CliRunner

from bot.cli import app
from crm.db import make_engine
from crm.dead_letters import DeadLetterIn, keep
from crm.models import DeadLetter, Interaction
from crm.schema import migrate
from tests.line_adapter.conftest import T0, LineRig, event_id, ms, text_event, user

FAN = user(9)


async def letters(rig: LineRig) -> list[DeadLetter]:
    async with rig.sessions() as session:
        return list((await session.execute(select(DeadLetter).order_by(DeadLetter.id))).scalars())


async def test_an_unusable_event_is_kept_whole_in_the_same_commit_and_counted_on_healthz(rig: LineRig) -> None:
    odd = {"type": "message", "mode": "active", "timestamp": ms(T0), "webhookEventId": event_id(),
           "source": {"type": "user", "userId": FAN}, "message": {"type": "text", "text": "no id, secret words"}}
    assert await rig.post(text_event(FAN, "fine"), odd, 42) == 200
    kept = await letters(rig)
    assert [(d.event_id, d.event_type, d.reason) for d in kept] == [
        (odd["webhookEventId"], "message", "message without an id"), (None, None, "event is not an object")]
    assert json.loads(kept[0].raw) == odd and kept[1].raw == "42"
    assert all("secret" not in d.reason for d in kept)  # the reason never carries what the fan wrote
    assert await rig.count() == 1
    assert await rig.post(odd) == 200  # LINE redelivers: the same event is kept once
    assert len(await letters(rig)) == 2
    async with rig.http.get(rig.url + "/healthz") as resp:
        health = await resp.json()
    assert resp.status == 200 and health["status"] == "ok"  # worth a look, not an outage
    assert health["info"]["line_dead_letters"] == 2


async def test_a_dead_letter_is_not_acknowledged_when_it_could_not_be_stored(rig: LineRig) -> None:
    await rig.writer.close()  # storage gone: nothing may be answered 200
    status = await rig.post({"type": "mystery", "webhookEventId": event_id(), "timestamp": ms(T0)})
    assert status >= 500


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)
    url = f"sqlite+aiosqlite:///{tmp_path / 'dl.db'}"
    cfg = tmp_path / "superfan.toml"
    cfg.write_text(f'[database]\nurl = "{url}"\n[creator]\nlocale = "en"\ntimezone = "Asia/Taipei"\n', encoding="utf-8")

    def run(*args: str, expect: int = 0) -> Any:
        result = CliRunner().invoke(app, ["--config", str(cfg), *args])
        assert result.exit_code == expect, (result.stdout, result.stderr)
        return result

    run.url = url  # type: ignore[attr-defined]
    return run


async def _seed(url: str, *letters_: DeadLetterIn) -> None:
    await migrate(url)
    engine = make_engine(url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
            for letter in letters_:
                await keep(session, letter, T0)
    finally:
        await engine.dispose()


async def _rows(url: str, model: Any) -> list[Any]:
    engine = make_engine(url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            return list((await session.execute(select(model).order_by(model.id))).scalars())
    finally:
        await engine.dispose()


def test_the_cli_lists_dead_letters_and_replays_what_today_s_code_understands(cli: Any) -> None:
    membership = {"type": "membership", "mode": "active", "timestamp": ms(T0), "webhookEventId": "01MEMBERSHIP",
                  "source": {"type": "user", "userId": FAN}, "membership": {"type": "joined", "membershipId": 1}}
    hopeless = {"type": "message", "timestamp": ms(T0), "webhookEventId": "01HOPELESS", "message": {"type": "text"}}
    asyncio.run(_seed(cli.url,  # e.g. kept by a version that did not know membership events yet
                      DeadLetterIn("line", "01MEMBERSHIP", "membership", "event type unknown to this version",
                                   json.dumps(membership)),
                      DeadLetterIn("line", "01HOPELESS", "message", "message without an id", json.dumps(hopeless))))
    listed = json.loads(cli("dead-letters", "--json").stdout)
    assert [(d["type"], d["reason"], d["replayed_at"]) for d in listed] == [
        ("membership", "event type unknown to this version", None), ("message", "message without an id", None)]
    assert listed[0]["received_at"] == "2026-11-22T12:00:00+08:00"  # the creator's timezone
    table = cli("dead-letters").stdout
    assert "membership" in table and FAN not in table  # never the raw event

    result = cli("dead-letters", "replay", "--all")
    assert "Replayed 1 of 2 dead letters." in result.stdout
    assert "still not understood: message without an id" in result.stdout
    stored = asyncio.run(_rows(cli.url, Interaction))
    assert [(i.kind, i.source_event_id, i.occurred_at) for i in stored] == [("membership", "01MEMBERSHIP", T0)]
    kept = asyncio.run(_rows(cli.url, DeadLetter))
    assert [d.replayed_at is not None for d in kept] == [True, False]
    cli("dead-letters", "replay", "--all")  # again: only the hopeless one is tried, nothing stored twice
    assert len(asyncio.run(_rows(cli.url, Interaction))) == 1
    cli("dead-letters", "replay", expect=2)  # neither ids nor --all
