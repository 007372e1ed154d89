"""Preferences (declared by the fan or inferred), staff tags and staff notes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.db import insert_ignore
from crm.errors import BadInput, FanNotFound
from crm.models import Fan, FanTopic, Note
from crm.names import name_key

SOURCES = ("fan", "staff", "inferred")
MAX_NOTE = 4000


def normalise_topic(topic: str) -> str:
    """Topics compare width- and case-insensitively: ``＃Coffee`` and ``coffee`` are one topic."""
    key = name_key(topic).lstrip("#")
    if not key or len(key) > 64:
        raise BadInput(f"bad topic {topic!r} (1–64 characters)", code="topic.bad", topic=topic, max=64)
    return key


async def _require_fan(session: AsyncSession, fan_id: int) -> None:
    if await session.get(Fan, fan_id) is None:
        raise FanNotFound(f"#{fan_id}")


async def add_topic(session: AsyncSession, fan_id: int, topic: str, *, source: str, now: datetime) -> str:
    if source not in SOURCES:
        raise BadInput(f"bad topic source {source!r}", code="topic.bad_source", source=source)
    await _require_fan(session, fan_id)
    key = normalise_topic(topic)
    await session.execute(
        insert_ignore(session, FanTopic, "fan_id", "topic", "source"),
        [{"fan_id": fan_id, "topic": key, "source": source, "created_at": now}],
    )
    return key


async def remove_topic(session: AsyncSession, fan_id: int, topic: str, *, source: str) -> bool:
    result = await session.execute(
        delete(FanTopic).where(FanTopic.fan_id == fan_id, FanTopic.topic == normalise_topic(topic),
                               FanTopic.source == source)
    )
    return bool(getattr(result, "rowcount", 0))


async def topics(session: AsyncSession, fan_id: int, *, sources: tuple[str, ...] = SOURCES) -> list[str]:
    rows = await session.execute(
        select(FanTopic.topic).where(FanTopic.fan_id == fan_id, FanTopic.source.in_(sources))
        .distinct().order_by(FanTopic.topic)
    )
    return list(rows.scalars())


async def infer_topics(session: AsyncSession, fan_id: int, text: str, keywords: dict[str, list[str]],
                       now: datetime) -> list[str]:
    """Tag a fan with the configured topics whose keywords appear in what they wrote."""
    folded = name_key(text)
    found = [topic for topic, words in keywords.items() if any(name_key(w) in folded for w in words if w)]
    for topic in found:
        await add_topic(session, fan_id, topic, source="inferred", now=now)
    return found


async def add_note(session: AsyncSession, fan_id: int, text: str, *, author: str, now: datetime) -> Note:
    text = text.strip()
    if not text or len(text) > MAX_NOTE:
        raise BadInput(f"a note needs 1–{MAX_NOTE} characters", code="note.bad_length", max=MAX_NOTE)
    await _require_fan(session, fan_id)
    note = Note(fan_id=fan_id, author=author, text=text, created_at=now)
    session.add(note)
    await session.flush()
    return note
