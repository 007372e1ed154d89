"""Who is who: (platform, external_id) → fan, lookup by id / identity / name."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Table, bindparam, delete, func, insert, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.db import datetime_encoder, fetch_rows, insert_rows, next_ids
from crm.errors import AmbiguousFan, CrmError, FanNotFound
from crm.models import Fan, Identity, table
from crm.names import clean_display_name, name_key
from crm.settings import CrmSettings

CHUNK = 400
LOOKUP_CHUNK = 5000
Key = tuple[str, str]
_ic, _fc = table(Identity).c, table(Fan).c
_IDENTITIES = (
    select(_ic.external_id, _ic.fan_id, _fc.opted_out, _ic.id, _ic.display_name, _fc.display_name, _fc.tier,
           _fc.tier_pinned, _fc.score_base, _fc.last_seen_at)
    .select_from(table(Identity).join(table(Fan), _fc.id == _ic.fan_id))
    .where(_ic.platform == bindparam("platform"), _ic.external_id.in_(bindparam("ids", expanding=True)))
)
IDENTITY_COLUMNS = ("fan_id", "platform", "external_id", "display_name", "name_key", "created_at")
FAN_COLUMNS = ("display_name", "name_key", "opted_out", "score_base", "tier", "first_seen_at", "last_seen_at")


class FanRef(NamedTuple):
    """A batch's view of one identity's fan (a tuple: thousands are made per batch)."""

    fan_id: int
    opted_out: bool
    new: bool = False
    identity_id: int | None = None
    identity_name: str | None = None
    fan_name: str | None = None
    tier: str | None = None
    tier_pinned: str | None = None
    score_base: float = 0.0
    #: the fan's last-seen time as the driver gives it (SQLite: its DATETIME text, unparsed)
    last_seen: Any = None


class RowQueue(Protocol):
    """Where new fans' rows may be queued instead of inserted at once
    (:meth:`crm.interaction_sink.InteractionSink.queue_rows`)."""

    async def queue_rows(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> bool: ...


async def resolve_identities(
    session: AsyncSession,
    names: dict[Key, str | None],
    span: dict[Key, tuple[datetime, datetime]],
    settings: CrmSettings,
    now: datetime,
    *,
    queue: RowQueue | None = None,
) -> dict[Key, FanRef]:
    """Map every (platform, external_id) to its fan, creating fans on first sight.

    ``names`` carries the newest display name seen per identity (kept fresh on the identity and,
    when the fan's name came from it, on the fan). ``span`` gives first/last-seen times for new fans.
    Safe against a concurrent writer creating the same identity: the loser's fan is discarded.
    With ``queue`` the new fans may be inserted after this returns (before anything the caller
    queues later): a first import's 10^4 new fans then go in while its rows are worked out.
    """
    keys = list(names)
    found = await _lookup(session, keys)
    missing = [k for k in keys if k not in found]
    if missing:
        enc = datetime_encoder(session)
        lowest, created_at = settings.tiers.lowest, enc(now)
        displays = [clean_display_name(names[k], f"{k[0]}:{k[1][-6:]}") for k in missing]
        fan_rows = [(display, name_key(display), False, 0.0, lowest, enc(span[k][0]), enc(span[k][1]))
                    for k, display in zip(missing, displays, strict=True)]
        id_rows = [(platform, external_id, seen, name_key(seen) if seen else None, created_at)
                   for platform, external_id in missing for seen in (names[(platform, external_id)],)]
        ids = await next_ids(session, table(Fan), len(fan_rows))
        if ids is not None:
            # SQLite under BEGIN IMMEDIATE: this transaction is the only writer, so the ids are
            # ours and no other writer can create these identities first.
            inserts = ((table(Fan), ("id", *FAN_COLUMNS), [(i, *row) for i, row in zip(ids, fan_rows, strict=True)]),
                       (table(Identity), IDENTITY_COLUMNS, [(i, *row) for i, row in zip(ids, id_rows, strict=True)]))
            for target, columns, rows in inserts:
                if queue is None or not await queue.queue_rows(target, columns, rows):
                    await insert_rows(session, target, columns, rows)
            for k, fan_id, display, row in zip(missing, ids, displays, fan_rows, strict=True):
                found[k] = FanRef(fan_id, False, True, None, names[k], display, lowest, None, 0.0, row[-1])
        else:
            await _create_racing(session, missing, fan_rows, id_rows, found)
    fresh = set(missing)
    await refresh_seen_names(session, {k: n for k, n in names.items() if n and k not in fresh}, found)
    return found


async def _create_racing(session: AsyncSession, missing: list[Key], fan_rows: list[tuple[Any, ...]],
                         id_rows: list[tuple[Any, ...]], found: dict[Key, FanRef]) -> None:
    """Create fans where another writer may create the same identities at once (PostgreSQL).

    Identities go in with ``ON CONFLICT DO NOTHING`` and are read back: where another writer won,
    its fan is used and the fan made here is deleted.
    """
    created: list[int] = []
    for start in range(0, len(fan_rows), CHUNK):
        result = await session.execute(
            insert(Fan).returning(Fan.id, sort_by_parameter_order=True),
            [dict(zip(FAN_COLUMNS, row, strict=True)) for row in fan_rows[start : start + CHUNK]],
        )
        created.extend(int(r[0]) for r in result)
    await insert_rows(session, table(Identity), IDENTITY_COLUMNS,
                      [(fan_id, *row) for fan_id, row in zip(created, id_rows, strict=True)],
                      ignore_conflicts_on=("platform", "external_id"))
    mine = await _lookup(session, missing)
    orphans = [fid for k, fid in zip(missing, created, strict=True) if mine[k].fan_id != fid]
    if orphans:
        await session.execute(delete(Fan).where(Fan.id.in_(orphans)))
    for k, fid in zip(missing, created, strict=True):
        found[k] = mine[k]._replace(new=mine[k].fan_id == fid)


async def _lookup(session: AsyncSession, keys: list[Key]) -> dict[Key, FanRef]:
    """Identities by (platform, external_id): ``platform = ? AND external_id IN (…)`` per platform,
    which SQLite answers from the unique index (a row-value ``IN`` list would scan the table)."""
    by_platform: dict[str, list[str]] = {}
    for platform, external_id in keys:
        by_platform.setdefault(platform, []).append(external_id)
    out: dict[Key, FanRef] = {}
    for platform, ids in by_platform.items():
        for start in range(0, len(ids), LOOKUP_CHUNK):
            rows = await fetch_rows(session, _IDENTITIES, {"platform": platform,
                                                           "ids": ids[start : start + LOOKUP_CHUNK]})
            for external_id, fan_id, opted_out, ident_id, ident_name, fan_name, tier, pinned, base, seen in rows:
                out[(platform, external_id)] = FanRef(int(fan_id), bool(opted_out), False, int(ident_id),
                                                      ident_name, fan_name, tier, pinned, float(base), seen)
    return out


async def refresh_seen_names(session: AsyncSession, names: dict[Key, str | None], found: dict[Key, FanRef]) -> None:
    """Keep display names fresh; the fan's own name follows when it was this identity's old name."""
    stale: list[dict[str, object]] = []
    for (platform, external_id), seen in names.items():
        ref = found[(platform, external_id)]
        old, fan_name = ref.identity_name, ref.fan_name or ""
        new = clean_display_name(seen, old or "")
        if new and new != old:
            stale.append({"iid": ref.identity_id, "fid": ref.fan_id, "new": new, "key": name_key(new),
                          "follow": fan_name == old or old is None and fan_name.startswith(f"{platform}:")})
    if not stale:
        return
    await session.execute(
        update(table(Identity)).where(table(Identity).c.id == bindparam("iid"))
        .values(display_name=bindparam("new"), name_key=bindparam("key")),
        [{"iid": s["iid"], "new": s["new"], "key": s["key"]} for s in stale],
    )
    follow = [{"fid": s["fid"], "new": s["new"], "key": s["key"]} for s in stale if s["follow"]]
    if follow:
        await session.execute(
            update(table(Fan)).where(table(Fan).c.id == bindparam("fid"))
            .values(display_name=bindparam("new"), name_key=bindparam("key")),
            follow,
        )


async def fan_by_identity(session: AsyncSession, platform: str, external_id: str) -> Fan | None:
    return (
        await session.execute(
            select(Fan).join(Identity, Identity.fan_id == Fan.id)
            .where(Identity.platform == platform, Identity.external_id == external_id)
        )
    ).scalar_one_or_none()


async def find_fan(session: AsyncSession, query: str, *, fuzzy_cutoff: float = 75.0,
                   settings: CrmSettings | None = None) -> Fan:
    """Resolve what a creator types: ``42``, ``#42``, ``line:U…``, ``discord:123…`` or a name.

    Names match exactly first (fan or any identity name), then width/case-insensitively, then by
    substring, then fuzzily. Several equally good matches raise :class:`AmbiguousFan`, best match
    first, each told apart by platform, tier and last seen (``settings`` gives the tier names and
    the timezone; the defaults otherwise).

    Every step is indexed or bounded: exact and width/case-insensitive matches are one indexed
    ``name_key`` query on fans and one on identities (an ``OR`` across their join read every
    fan); a substring scans the name-key indexes only; fuzzy matching scores the distinct name
    keys, never every fan row.
    """
    text = query.strip()
    if not text:
        raise FanNotFound(query)
    digits = text.removeprefix("#")
    if digits.isdigit():
        fan = await session.get(Fan, int(digits))
        if fan is not None:
            return fan
    if ":" in text:
        platform, _, external_id = text.partition(":")
        fan = await fan_by_identity(session, platform.strip().lower(), external_id.strip())
        if fan is not None:
            return fan
    key = name_key(text)
    found = await _by_key(session, text, key) if key else []
    if not found and key:
        found = await _by_substring(session, key)
    if not found and key:
        found = await _fuzzy(session, key, fuzzy_cutoff)
    if len(found) == 1:
        fan = await session.get(Fan, found[0][0])
        if fan is not None:
            return fan
    if found:
        shown = await _fans(session, [fid for fid, _ in found[:AmbiguousFan.SHOWN]])
        raise AmbiguousFan(query, found, await _told_apart(session, shown, settings or CrmSettings()))
    raise FanNotFound(query)


#: Name matches looked at per step; past this many a name tells nobody apart anyway.
NAME_MATCHES = 200
_KEY_FANS = select(_fc.id).where(_fc.name_key == bindparam("key")).limit(NAME_MATCHES)
_KEY_IDENTITIES = (select(_ic.fan_id, _ic.display_name).where(_ic.name_key == bindparam("key"))
                   .limit(NAME_MATCHES))
_LIKE_FANS = select(_fc.id).where(_fc.name_key.like(bindparam("pattern"), escape="\\")).limit(NAME_MATCHES)
_LIKE_IDENTITIES = (select(_ic.fan_id).where(_ic.name_key.like(bindparam("pattern"), escape="\\"))
                    .limit(NAME_MATCHES))
#: Past this many distinct keys a fuzzy range is cut short (a scan bounded however many fans there are).
FUZZY_KEYS = 5000
_TOP = "\U0010ffff"


def _key_range(key: Any, column: Any) -> Any:
    return select(key).where(column >= bindparam("low"), column < bindparam("high")).distinct().limit(FUZZY_KEYS)


#: Distinct name keys by the prefix of the key, and of the key without its first character
#: (migration 0012's expression indexes; ``substr(name_key, 2)`` exactly as indexed).
_KEY_RANGES = tuple(_key_range(key, column) for key, column in (
    (_fc.name_key, _fc.name_key), (_ic.name_key, _ic.name_key),
    (_fc.name_key, func.substr(_fc.name_key, literal_column("2"))),
    (_ic.name_key, func.substr(_ic.name_key, literal_column("2")))))
_FANS_OF_KEYS = select(_fc.id, _fc.name_key).where(_fc.name_key.in_(bindparam("keys", expanding=True)))
_IDENTITIES_OF_KEYS = select(_ic.fan_id, _ic.name_key).where(_ic.name_key.in_(bindparam("keys", expanding=True)))
_PLATFORMS = select(_ic.fan_id, _ic.platform).where(_ic.fan_id.in_(bindparam("ids", expanding=True)))


_NAMES_OF = select(_fc.id, _fc.display_name, _fc.score_base).where(_fc.id.in_(bindparam("ids", expanding=True)))
Found = list[tuple[int, str]]  # (fan id, display name) of the matches, best first


async def _fans(session: AsyncSession, ids: Sequence[int]) -> list[Fan]:
    """The fans of ``ids`` (a handful: the unique match, or the candidates shown), in that order."""
    by_id = {f.id: f for f in (await session.execute(select(Fan).where(Fan.id.in_(list(ids))))).scalars()}
    return [by_id[i] for i in ids if i in by_id]


async def _ranked(session: AsyncSession, ids: Sequence[int]) -> list[tuple[int, str]]:
    """(id, display name) of ``ids``, most engaged first: of equally good matches, the likelier one.
    Plain columns, no ORM fan: a common nickname matches hundreds of fans."""
    rows = await fetch_rows(session, _NAMES_OF, {"ids": list(dict.fromkeys(ids))}) if ids else []
    return [(int(fid), str(name)) for fid, name, _ in sorted(rows, key=lambda r: (-float(r[2]), int(r[0])))]


async def _by_key(session: AsyncSession, text: str, key: str) -> Found:
    """Fans whose name (or an identity's name) is ``text`` exactly; failing that, has its name key."""
    by_identity = await fetch_rows(session, _KEY_IDENTITIES, {"key": key})
    fans = await _ranked(session, [int(r[0]) for r in await fetch_rows(session, _KEY_FANS, {"key": key})]
                         + [int(fid) for fid, _ in by_identity])
    exact = {int(fid) for fid, name in by_identity if name == text}
    return [f for f in fans if f[1] == text or f[0] in exact] or fans


async def _by_substring(session: AsyncSession, key: str) -> Found:
    pattern = "%" + key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    ids = [int(r[0]) for r in await fetch_rows(session, _LIKE_FANS, {"pattern": pattern})]
    ids += [int(r[0]) for r in await fetch_rows(session, _LIKE_IDENTITIES, {"pattern": pattern})]
    return await _ranked(session, ids)


async def _fuzzy(session: AsyncSession, key: str, cutoff: float) -> Found:
    """Fans whose name key is close to ``key`` (the best and those within 3 points of it).

    Scores only candidate keys read from indexes: keys that start like ``key`` (a typo after the
    first character), that start with its second character (one extra character typed first),
    or whose second character is its second (a typo in the first character); each range holds
    at most :data:`FUZZY_KEYS` distinct keys. Then only the fans of the best keys are read.
    """
    ranges = [(0, key[0])] + ([(0, key[1]), (2, key[1])] if len(key) > 1 else [])
    keys: set[str] = set()
    for rest, prefix in ranges:
        for stmt in _KEY_RANGES[rest : rest + 2]:
            rows = await fetch_rows(session, stmt, {"low": prefix, "high": prefix + _TOP})
            keys.update(str(k) for (k,) in rows if k)
    from rapidfuzz import fuzz, process  # only for a mistyped name: a fan card by id never needs it

    best = process.extract(key, keys, scorer=fuzz.WRatio, score_cutoff=cutoff, limit=20)
    if not best:
        return []
    top = best[0][1]
    rank = {choice: n for n, (choice, score, _) in enumerate(best) if score >= top - 3}
    params = {"keys": list(rank)}
    owners = await fetch_rows(session, _FANS_OF_KEYS, params) + await fetch_rows(session, _IDENTITIES_OF_KEYS, params)
    order = {int(fid): rank[str(k)] for fid, k in sorted(owners, key=lambda r: -rank[str(r[1])])}
    fans = await _ranked(session, list(order))
    return sorted(fans, key=lambda f: order[f[0]])  # stable: most engaged first among equal keys


async def _told_apart(session: AsyncSession, fans: Sequence[Fan], settings: CrmSettings) -> list[CrmError]:
    """One line per candidate (catalogue code ``fan.candidate``): platforms, tier, last seen."""
    shown = fans[:AmbiguousFan.SHOWN]
    platforms: dict[int, set[str]] = {}
    for fid, platform in await fetch_rows(session, _PLATFORMS, {"ids": [f.id for f in shown]}):
        platforms.setdefault(int(fid), set()).add(str(platform))
    tz, rules = settings.scoring.tz, settings.tiers
    out = []
    for fan in shown:
        accounts = sorted(platforms.get(fan.id, ())) or ["-"]
        where = ", ".join(accounts)
        seen = fan.last_seen_at.astimezone(tz).date().isoformat() if fan.last_seen_at else "-"
        tier = dict(rules.get(fan.tier).names) if fan.tier in rules.keys else {"en": fan.tier}
        out.append(CrmError(f"#{fan.id} {fan.display_name} ({where}, {fan.tier}, last seen {seen})",
                            code="fan.candidate", id=fan.id, name=fan.display_name, platforms=accounts,
                            tier=tier, last_seen=seen))
    return out
