"""Display names fetched from a platform's profile API (LINE), and when each was last fetched.

Names seen on events are kept by :func:`crm.identity.resolve_identities`; this module serves the
background worker that asks the platform for them. The time of the last fetch is stored on the
identity (``identities.profile_refreshed_at``), so which fans still need a look-up is known from
the database alone: after a restart nothing is lost and nobody is fetched twice. Opted-out and
erased fans are never looked up and never get a name back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.models import Fan, Identity, table
from crm.names import clean_display_name, name_key
from crm.settings import CrmSettings

#: Ids per ``IN (…)`` list: well under every driver's limit of bound parameters.
LOOKUP_CHUNK = 5000

_ids, _fans = table(Identity), table(Fan)


async def never_fetched(session: AsyncSession, platform: str, *, after_id: int = 0,
                        limit: int = 500) -> list[tuple[int, str]]:
    """Identities on ``platform`` whose profile was never fetched, as ``(identity id, external id)``
    in id order from ``after_id`` on, at most ``limit``; opted-out fans are left out.

    The worker pages through them with ``after_id`` (the last id of the page before), so a large
    backlog is read in small steps and a restart resumes from the database, not from memory.
    """
    rows = await session.execute(
        select(_ids.c.id, _ids.c.external_id)
        .join(_fans, _fans.c.id == _ids.c.fan_id)
        .where(_ids.c.platform == platform, _ids.c.profile_refreshed_at.is_(None), _ids.c.id > after_id,
               _fans.c.opted_out.is_(False))
        .order_by(_ids.c.id).limit(limit))
    return [(int(identity_id), str(external_id)) for identity_id, external_id in rows]


async def profiles_due(session: AsyncSession, platform: str, external_ids: Sequence[str], now: datetime,
                       max_age: timedelta) -> dict[str, bool]:
    """Whether each identity's profile is worth fetching: True when it was never fetched or not
    within ``max_age`` (the time is stored, so this holds across restarts), False when it is fresh
    or the fan opted out. Ids without an identity yet are left out (nothing to store a name on:
    ask again once the fan exists)."""
    due: dict[str, bool] = {}
    for start in range(0, len(external_ids), LOOKUP_CHUNK):
        rows = await session.execute(
            select(_ids.c.external_id, _ids.c.profile_refreshed_at, _fans.c.opted_out)
            .join(_fans, _fans.c.id == _ids.c.fan_id)
            .where(_ids.c.platform == platform, _ids.c.external_id.in_(external_ids[start : start + LOOKUP_CHUNK])))
        for external_id, refreshed_at, opted_out in rows:
            due[external_id] = not opted_out and (refreshed_at is None or now - refreshed_at >= max_age)
    return due


async def profile_due(session: AsyncSession, platform: str, external_id: str, now: datetime,
                      max_age: timedelta) -> bool | None:
    """:func:`profiles_due` for one identity: None when there is no such identity yet."""
    return (await profiles_due(session, platform, [external_id], now, max_age)).get(external_id)


async def refresh_profiles(session: AsyncSession, settings: CrmSettings, *, platform: str,
                           names: Mapping[str, str | None], now: datetime) -> None:
    """Store display names fetched from a platform's profile API, and when they were fetched.

    ``names`` maps external ids to the fetched name (None: asked, and the platform has no profile
    to give, e.g. a user who blocked the account; it is not asked again before the interval). An
    identity's name changes, and its fan's with it when the fan's name came from this identity
    (the rule :func:`crm.identity.resolve_identities` applies to names seen on events). Unknown
    identities and opted-out fans are left alone, so a late profile answer never resurrects an
    erased fan. A few set-based statements however many names: a burst of new fans is named in
    batches. ``settings`` is taken like every other identity writer's, for rules to come.
    """
    ids = list(names)
    found: list[tuple[int, int, str, str | None, str]] = []
    for start in range(0, len(ids), LOOKUP_CHUNK):
        rows = await session.execute(
            select(_ids.c.id, _ids.c.fan_id, _ids.c.external_id, _ids.c.display_name, _fans.c.display_name)
            .join(_fans, _fans.c.id == _ids.c.fan_id)
            .where(_ids.c.platform == platform, _ids.c.external_id.in_(ids[start : start + LOOKUP_CHUNK]),
                   _fans.c.opted_out.is_(False)))
        found.extend((int(i), int(f), str(e), old, fan_name or "") for i, f, e, old, fan_name in rows)
    if not found:
        return
    renamed: list[dict[str, object]] = []
    followed: list[dict[str, object]] = []
    for identity_id, fan_id, external_id, old, fan_name in found:
        new = clean_display_name(names[external_id], old or "")
        if not new or new == old:
            continue
        renamed.append({"iid": identity_id, "new": new, "key": name_key(new)})
        if fan_name == old or old is None and fan_name.startswith(f"{platform}:"):
            followed.append({"fid": fan_id, "new": new, "key": name_key(new)})
    if renamed:
        await session.execute(update(_ids).where(_ids.c.id == bindparam("iid"))
                              .values(display_name=bindparam("new"), name_key=bindparam("key")), renamed)
    if followed:
        await session.execute(update(_fans).where(_fans.c.id == bindparam("fid"))
                              .values(display_name=bindparam("new"), name_key=bindparam("key")), followed)
    fetched = [identity_id for identity_id, *_ in found]
    for start in range(0, len(fetched), LOOKUP_CHUNK):
        await session.execute(update(_ids).where(_ids.c.id.in_(fetched[start : start + LOOKUP_CHUNK]))
                              .values(profile_refreshed_at=now))


async def refresh_profile(session: AsyncSession, settings: CrmSettings, *, platform: str, external_id: str,
                          display_name: str | None, now: datetime) -> None:
    """Store one fetched display name (see :func:`refresh_profiles`)."""
    await refresh_profiles(session, settings, platform=platform, names={external_id: display_name}, now=now)
