"""Composition root: config → engine → (web app, adapters, scheduler). Nothing happens at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import Config
from crm.db import ensure_schema, make_engine, make_sessionmaker
from crm.settings import CrmSettings


@dataclass(frozen=True)
class Crm:
    """What every adapter and command needs to reach the CRM."""

    config: Config
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    settings: CrmSettings


@asynccontextmanager
async def open_crm(config: Config) -> AsyncIterator[Crm]:
    """Connect, bring the schema to head (or say what to run), and dispose on exit."""
    engine = make_engine(config.database.url)
    try:
        await ensure_schema(engine, config.database.url, auto_migrate=config.database.auto_migrate)
        yield Crm(config, engine, make_sessionmaker(engine), config.crm_settings())
    finally:
        await engine.dispose()
