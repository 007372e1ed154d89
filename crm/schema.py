"""The database schema's version: Alembic migrations, the head revision, and the start-up check.

Every command checks the schema before it starts (:func:`ensure_schema`); the head revision is read
from the migration files themselves so that the check does not import Alembic (~0.15 s) when the
database is already at head.
"""

from __future__ import annotations

import asyncio
import functools
import re
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from crm.errors import SchemaOutOfDate


def migrations_dir() -> Path:
    import migrations

    return Path(migrations.__file__).parent


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["database_url"] = url
    return cfg


async def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (Alembic runs in a worker thread)."""
    from alembic import command

    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)


_REVISION = re.compile(r"^revision(?:\s*:[^=]*)?\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:\s*:[^=]*)?\s*=\s*(.*)$", re.MULTILINE)
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


@functools.cache
def head_revision() -> str:
    """The newest migration's revision id, read from ``migrations/versions`` without Alembic.

    Importing Alembic costs a command ~0.15 s before it starts; every command checks the schema
    (:func:`ensure_schema`), and the files' own ``revision``/``down_revision`` lines say which one
    nothing revises. Anything unusual (a merge, two heads, a file in another shape) is left to
    Alembic's own reading.
    """
    return read_head(migrations_dir() / "versions") or _alembic_head()


def read_head(versions: Path) -> str | None:
    """The one revision in ``versions`` that no other file revises, or ``None`` when that cannot
    be told from the files' ``revision = '…'`` and ``down_revision = …`` lines alone."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in versions.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        found = _REVISION.search(source)
        down = _DOWN_REVISION.search(source)
        if found is None or down is None:
            if path.name == "__init__.py":
                continue
            return None
        revisions.add(found.group(1))
        revised.update(_QUOTED.findall(down.group(1)))
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


def _alembic_head() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrations_dir()))
    head = script.get_current_head()
    assert head is not None
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        try:
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
        except Exception:
            return None
        finally:
            await conn.rollback()
    return None if row is None else str(row[0])


async def ensure_schema(engine: AsyncEngine, url: str, *, auto_migrate: bool = True) -> None:
    """Make sure the schema is at head: migrate a fresh or outdated database, or say what to run."""
    current = await current_revision(engine)
    if current == head_revision():
        return
    if not auto_migrate:
        raise SchemaOutOfDate("the database schema is not up to date: run `superfan migrate`")
    await migrate(url)
