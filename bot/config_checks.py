"""What is wrong with a loaded config, one line per problem (checks across keys and sections).

:func:`bot.config.load_config` runs these at start-up; per-key types are checked while parsing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crm.reply_hours import parse_reply_hours

if TYPE_CHECKING:
    from bot.config import Config


def secret_problems(cfg: Config) -> list[str]:
    """The environment variables an enabled adapter needs but that are not set."""
    errors: list[str] = []
    if cfg.line.enabled:
        for env in (cfg.line.channel_secret_env, cfg.line.channel_access_token_env):
            if not os.environ.get(env):
                errors.append(f"line is enabled but environment variable {env} is not set")
    if cfg.discord.enabled and not os.environ.get(cfg.discord.token_env):
        errors.append(f"discord is enabled but environment variable {cfg.discord.token_env} is not set")
    return errors


def problems(cfg: Config) -> list[str]:
    """Cross-field checks that hold whatever the command (secrets: :func:`secret_problems`)."""
    errors: list[str] = []
    if not 0 < cfg.line.profile_requests_per_second <= 2000:
        errors.append("line.profile_requests_per_second must be above 0 and at most 2000 (LINE's own limit)")
    try:
        ZoneInfo(cfg.creator.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(f"creator.timezone {cfg.creator.timezone!r} is not a known time zone")
    if cfg.creator.locale not in ("zh-TW", "en"):
        errors.append(f"creator.locale must be \"zh-TW\" or \"en\", not {cfg.creator.locale!r}")
    if not cfg.database.url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        errors.append("database.url must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    hh, _, mm = cfg.digest.at.partition(":")
    if not (hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60):
        errors.append(f"digest.at must be HH:MM, not {cfg.digest.at!r}")
    for key in ("quiet_after_days", "care_days", "list_limit", "misfire_grace_minutes"):
        if getattr(cfg.digest, key) < 1:
            errors.append(f"digest.{key} must be at least 1")
    if cfg.scoring.half_life_days <= 0:
        errors.append("scoring.half_life_days must be positive")
    for lv in cfg.tiers.levels:
        if not isinstance(lv, dict) or "key" not in lv or "threshold" not in lv:
            errors.append(f"tiers.levels entries need key and threshold: {lv!r}")
    errors += _sla_problems(cfg)
    if cfg.drops.prefer not in ("discord", "line", "both"):
        errors.append(f"drops.prefer must be \"discord\", \"line\" or \"both\", not {cfg.drops.prefer!r}")
    levels = {lv.get("key") for lv in cfg.tiers.levels if isinstance(lv, dict)}
    for key in cfg.drops.tier_channel_ids:
        if key not in levels:
            errors.append(f"drops.tier_channel_ids: {key!r} is not a tier key (tiers.levels)")
    if not errors:
        try:
            cfg.crm_settings()
        except ValueError as exc:
            errors.append(f"tiers: {exc}")
    errors += _discord_problems(cfg)
    errors += _purchases_problems(cfg)
    return errors


def _sla_problems(cfg: Config) -> list[str]:
    s, errors = cfg.sla, []
    if not s.reply_within_hours > 0:
        errors.append("sla.reply_within_hours must be positive")
    if s.remind_before_hours < 0:
        errors.append("sla.remind_before_hours must not be negative (0: no reminders)")
    return errors + parse_reply_hours(cfg.creator.timezone, s.hours, s.rest_days, s.holidays)[1]


def _purchases_problems(cfg: Config) -> list[str]:
    p, errors = cfg.purchases, []
    if not p.max_amount > 0:
        errors.append("purchases.max_amount must be positive")
    bad = [c for c in p.currencies if not (len(c) == 3 and c.isascii() and c.isalpha() and c.isupper())]
    if bad:
        errors.append(f"purchases.currencies takes ISO 4217 codes such as TWD, not {bad!r}")
    return errors


def _discord_problems(cfg: Config) -> list[str]:
    d, errors = cfg.discord, []
    if not 0 <= d.defer_after_seconds <= 2.5:
        errors.append("discord.defer_after_seconds must be between 0 and 2.5 (Discord waits 3 seconds)")
    if d.role_sync_seconds <= 0 or d.ready_timeout_seconds <= 0:
        errors.append("discord.role_sync_seconds and discord.ready_timeout_seconds must be positive")
    keys = {lv.get("key") for lv in cfg.tiers.levels if isinstance(lv, dict)}
    unknown = sorted(set(d.tier_role_ids) - keys)
    if unknown:
        errors.append(f"discord.tier_role_ids has {', '.join(unknown)}, which are not tier keys "
                      f"({', '.join(sorted(k for k in keys if k))})")
    return errors
