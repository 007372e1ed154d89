"""``superfan inbox``, ``superfan inbox done`` and ``superfan reply`` as a creator uses them.

The fans' DMs are recorded the way the LINE webhook records them (``record_many``: the
conversation opens with the DM). ``reply`` with no server sends the outbox row itself through
the real LINE sender, to the LINE emulator on 127.0.0.1 (faults injected there stand for LINE
refusing or failing); with a server answering ``/healthz`` it leaves the row to that server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

import bot.inbox_cli as inbox_cli
from bot.app import open_crm
from bot.cli import app
from bot.config import load_config
from bot.line_adapter.outbox_sender import retry_key
from bot.sandbox.line_emulator import LineEmulator
from crm.ingest import record_many
from crm.interaction import InteractionIn
from crm.models import Conversation, Outbox

NOW = datetime(2026, 12, 8, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Taipei
XIAOHUI, AMING = "U" + "1" * 32, "U" + "2" * 32
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)
    path = tmp_path / "superfan.toml"
    path.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "main.db"}"\n'
                    f'[web]\nport = {free_port()}\n', encoding="utf-8")
    return path


def seed(config_path: Path) -> None:
    """小慧 wrote 30 hours ago (overdue), 阿明 two hours ago; both on LINE."""

    async def run() -> None:
        async with open_crm(load_config(str(config_path))) as crm, crm.sessions.begin() as session:
            items = [InteractionIn(platform="line", external_id=uid, kind="dm_in", occurred_at=NOW - ago,
                                   source_event_id=f"ev-{uid}", display_name=name, text="在嗎？")
                     for uid, name, ago in ((XIAOHUI, "小慧", timedelta(hours=30)),
                                            (AMING, "阿明", timedelta(hours=2)))]
            await record_many(session, items, crm.settings, NOW)

    asyncio.run(run())


def cli(config_path: Path, *args: str, expect: int = 0) -> Any:
    result = CliRunner().invoke(app, ["--config", str(config_path), *args])
    assert result.exit_code == expect, (result.stdout, result.stderr)
    return result


def rows(config_path: Path, model: Any) -> list[Any]:
    async def run() -> list[Any]:
        async with open_crm(load_config(str(config_path))) as crm, crm.sessions() as session:
            return list((await session.execute(select(model).order_by(model.id))).scalars())

    return asyncio.run(run())


def test_inbox_json_lists_waiting_conversations_overdue_first(config_path):
    seed(config_path)
    listed = json.loads(cli(config_path, "inbox", "--json", "--now", NOW.isoformat()).stdout)
    assert [(c["display_name"], c["platform"], c["tier"], c["waiting_since"], c["due_at"], c["overdue"])
            for c in listed] == [
        ("小慧", "line", "路人", "2026-12-07T04:00:00+08:00", "2026-12-08T04:00:00+08:00", True),
        ("阿明", "line", "路人", "2026-12-08T08:00:00+08:00", "2026-12-09T08:00:00+08:00", False),
    ]
    table = cli(config_path, "inbox", "--now", NOW.isoformat()).stdout
    assert "小慧" in table and "已逾時" in table and "2026-12-08 04:00" in table


def test_inbox_done_resolves_as_answered_elsewhere(config_path):
    seed(config_path)
    assert cli(config_path, "inbox", "done", "小慧").stdout == "已把 小慧 的對話標記為已在別處回覆。\n"
    conv = next(c for c in rows(config_path, Conversation) if c.status == "resolved")
    assert conv.resolution == "elsewhere"
    again = cli(config_path, "inbox", "done", "小慧", expect=2)
    assert again.stderr == "錯誤：小慧 目前沒有進行中的對話。\n"
    assert [c["display_name"] for c in json.loads(cli(config_path, "inbox", "--json").stdout)] == ["阿明"]


@pytest.fixture
async def line_emu(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LineEmulator]:
    """The LINE emulator on 127.0.0.1 as [line]'s API, the channel's secrets in the environment."""
    async with LineEmulator() as emu:
        with config_path.open("a", encoding="utf-8") as f:
            f.write(f'[line]\nenabled = true\napi_base = "{emu.base_url}"\n')
        monkeypatch.setenv("LINE_CHANNEL_ACCESS_TOKEN", emu.access_token)
        monkeypatch.setenv("LINE_CHANNEL_SECRET", "test-channel-secret")
        yield emu


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The CLI runs its own event loop; the emulator answers on this one."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_reply_with_no_server_sends_it_itself_and_says_so(config_path, line_emu):
    await in_thread(seed, config_path)
    result = await in_thread(cli, config_path, "reply", "小慧", "抱歉晚回了！")
    assert result.stdout == "已送給 小慧（LINE）。\n"
    (relay,) = await in_thread(rows, config_path, Outbox)
    assert (relay.kind, relay.recipient, json.loads(relay.payload), relay.status, relay.attempts) == (
        "relay", XIAOHUI, {"text": "抱歉晚回了！"}, "sent", 1)
    [delivered] = line_emu.delivered  # one message, to 小慧 only, pushed with the row's retry key
    assert (delivered.via, delivered.to, delivered.messages) == ("push", XIAOHUI, [{"type": "text", "text": "抱歉晚回了！"}])
    assert delivered.retry_key == retry_key(relay.idempotency_key)
    answered = [c for c in await in_thread(rows, config_path, Conversation) if c.status == "answered"]
    assert len(answered) == 1


async def test_reply_line_refuses_says_why_and_sends_nothing(config_path, line_emu):
    await in_thread(seed, config_path)
    line_emu.fail_next(400, path_contains="/push")  # what LINE answers for a fan who blocked the account
    result = await in_thread(cli, config_path, "reply", "阿明", "hi", expect=1)
    (relay,) = await in_thread(rows, config_path, Outbox)
    assert result.stdout == f"沒有送出（#{relay.id}）：LINE 400: Injected error 400\n"
    assert relay.status == "failed" and line_emu.delivered == []


async def test_reply_line_cannot_take_now_is_kept_for_a_retry_and_says_so(config_path, line_emu):
    await in_thread(seed, config_path)
    line_emu.fail_next(500, path_contains="/push")
    result = await in_thread(cli, config_path, "reply", "阿明", "hi")
    (relay,) = await in_thread(rows, config_path, Outbox)
    assert result.stdout == (f"暫時送不出去（#{relay.id}）：LINE push 500；已排入稍後重試，"
                             "下次執行 superfan run 或 superfan reply 時會再送。\n")
    assert (relay.status, relay.last_error) == ("pending", "LINE push 500") and line_emu.delivered == []


@pytest.fixture
def running_server(config_path: Path) -> Iterator[None]:
    """Something answering ``/healthz`` on [web]'s port, as ``superfan run`` does."""
    port = int(config_path.read_text(encoding="utf-8").split("port = ")[1].split()[0])

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", port), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    server.shutdown()
    server.server_close()


async def test_reply_with_a_running_server_leaves_the_sending_to_it(config_path, monkeypatch, line_emu,
                                                                     running_server):
    await in_thread(seed, config_path)
    monkeypatch.setattr(inbox_cli, "SERVER_WAIT_S", 0.3)
    out = (await in_thread(cli, config_path, "reply", "小慧", "晚點回你")).stdout
    (relay,) = await in_thread(rows, config_path, Outbox)
    assert out == f"已排入傳送（#{relay.id}）：正在執行的 superfan run 會在幾秒內送出。\n"
    assert relay.status == "pending" and line_emu.calls == []


def test_reply_to_a_fan_without_an_open_conversation_is_refused(config_path):
    seed(config_path)
    cli(config_path, "inbox", "done", "小慧")
    assert cli(config_path, "reply", "小慧", "hi", expect=2).stderr == "錯誤：小慧 目前沒有進行中的對話。\n"
    assert rows(config_path, Outbox) == []
