"""What fans wrote never reaches the log through an error: SQL parameters, exception messages,
the writer's own lines. Driven through the real engine and the real writer."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from bot.config import Config
from bot.log_safety import WITHHELD, FanSafeFormatter, safe_traceback
from bot.write_failures import brief
from bot.writer import Action, GroupWriter
from crm.interaction import InteractionIn
from crm.models import Identity

SECRET_TEXT = "小慧的祕密 0912-345-678"
NOW = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """Everything logged at INFO and above, as ``superfan`` formats it (not --verbose)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(FanSafeFormatter())
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(old)


async def test_a_database_error_names_neither_the_statement_parameters_nor_the_fan(sessions, log_text):
    row = {"fan_id": 999_999, "platform": "line", "external_id": "U1", "display_name": SECRET_TEXT,
           "name_key": SECRET_TEXT, "created_at": NOW}
    try:  # no such fan: the foreign key refuses it
        async with sessions.begin() as s:
            await s.execute(insert(Identity), [row])
    except IntegrityError as exc:
        assert SECRET_TEXT not in str(exc)  # hide_parameters on the engine
        logging.getLogger("superfan.test").exception("storing failed")
    else:
        pytest.fail("the row was stored")
    assert SECRET_TEXT not in log_text.getvalue()
    assert "IntegrityError" in log_text.getvalue() and "FOREIGN KEY" in log_text.getvalue().upper()


def test_a_traceback_keeps_where_it_failed_and_withholds_a_message_that_may_quote_a_fan():
    try:
        try:
            {}[SECRET_TEXT]
        except KeyError as exc:
            raise ValueError(f"no fan named {SECRET_TEXT}") from exc
    except ValueError as exc:
        text = safe_traceback(exc)
    assert SECRET_TEXT not in text
    assert "KeyError" in text and "ValueError" in text and WITHHELD in text
    assert "test_log_safety.py" in text  # the frames are kept
    assert "Connection refused" in brief(ConnectionRefusedError(111, "Connection refused"))


def test_verbose_shows_everything_on_the_creators_own_terminal():
    try:
        raise ValueError(SECRET_TEXT)
    except ValueError:
        import sys

        ei = sys.exc_info()
    assert SECRET_TEXT in FanSafeFormatter(full=True).formatException(ei)  # type: ignore[arg-type]
    assert SECRET_TEXT not in FanSafeFormatter().formatException(ei)  # type: ignore[arg-type]


async def test_the_writer_logs_a_failing_op_without_its_text(sessions, log_text):
    writer = GroupWriter(sessions, Config().crm_settings(), clock=lambda: NOW)
    await writer.start()

    async def broken(session, now):
        raise RuntimeError(f"could not parse {SECRET_TEXT}")

    item = InteractionIn("line", "U2", "dm_in", NOW, "ev-log-1", SECRET_TEXT, text=SECRET_TEXT)
    try:
        with pytest.raises(RuntimeError):
            await writer.submit([item, Action("broken", broken)])
    finally:
        await writer.close()
    logged = log_text.getvalue()
    assert "action broken failed" in logged and "RuntimeError" in logged
    assert SECRET_TEXT not in logged


def test_discord_voice_notices_are_not_shown_but_other_discord_warnings_are(caplog: pytest.LogCaptureFixture) -> None:
    from bot.log_safety import setup_logging, without_voice_notices

    logger = logging.getLogger("discord.client")
    setup_logging(verbose=False)  # as the superfan command starts
    try:
        with caplog.at_level(logging.WARNING, logger="discord.client"):
            logger.warning("PyNaCl is not installed, voice will NOT be supported")
            logger.warning("We are being rate limited.")
    finally:
        logger.removeFilter(without_voice_notices)
    assert [r.getMessage() for r in caplog.records] == ["We are being rate limited."]
