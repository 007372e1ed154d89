"""What is wrong with a loaded config, one :class:`~bot.config_errors.Problem` per mistake (checks
across keys and sections).

:func:`bot.config.load_config` runs these at start-up; per-key types are checked while parsing.
"""

from __future__ import annotations

import os
from datetime import date
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.config_errors import Problem, literal, problem
from crm.reply_hours import WEEKDAYS, parse_reply_hours

if TYPE_CHECKING:
    from bot.config import Config

def secret_problems(cfg: Config) -> list[Problem]:
    """The environment variables an enabled adapter needs but that are not set."""
    errors: list[Problem] = []
    if cfg.line.enabled:
        for env in (cfg.line.channel_secret_env, cfg.line.channel_access_token_env):
            if not os.environ.get(env):
                errors.append(problem("line_secret_missing", env=env))
    if cfg.discord.enabled and not os.environ.get(cfg.discord.token_env):
        errors.append(problem("discord_secret_missing", env=cfg.discord.token_env))
    return errors


def problems(cfg: Config) -> list[Problem]:
    """Cross-field checks that hold whatever the command (secrets: :func:`secret_problems`)."""
    errors: list[Problem] = []
    if not 0 < cfg.line.profile_requests_per_second <= 2000:
        errors.append(problem("profile_rate"))
    try:
        ZoneInfo(cfg.creator.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(problem("bad_timezone", value=literal(cfg.creator.timezone)))
    if cfg.creator.locale not in ("zh-TW", "en"):
        errors.append(problem("bad_locale", value=literal(cfg.creator.locale)))
    if not cfg.database.url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        errors.append(problem("bad_database_url"))
    hh, _, mm = cfg.digest.at.partition(":")
    if not (hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60):
        errors.append(problem("bad_digest_at", value=literal(cfg.digest.at)))
    for key in ("quiet_after_days", "care_days", "list_limit", "misfire_grace_minutes"):
        if getattr(cfg.digest, key) < 1:
            errors.append(problem("at_least_one", key=f"digest.{key}"))
    if cfg.scoring.half_life_days <= 0:
        errors.append(problem("must_be_positive", key="scoring.half_life_days"))
    errors += _tier_problems(cfg)
    errors += _sla_problems(cfg)
    if cfg.drops.prefer not in ("discord", "line", "both"):
        errors.append(problem("bad_drops_prefer", value=literal(cfg.drops.prefer)))
    levels = {lv.get("key") for lv in cfg.tiers.levels if isinstance(lv, dict)}
    for key in cfg.drops.tier_channel_ids:
        if key not in levels:
            errors.append(problem("not_a_tier_key", key="drops.tier_channel_ids", value=literal(key)))
    if not errors:
        try:
            cfg.crm_settings()
        except ValueError as exc:  # a rule of crm's that the checks above do not know yet
            errors.append(problem("tiers_refused", reason=str(exc)))
    errors += _discord_problems(cfg)
    errors += _purchases_problems(cfg)
    return errors


def _tier_problems(cfg: Config) -> list[Problem]:
    """What :class:`crm.tiers.TierRules` would refuse, said key by key."""
    tiers, errors = cfg.tiers, []
    levels = [lv for lv in tiers.levels if isinstance(lv, dict) and "key" in lv and "threshold" in lv]
    for lv in tiers.levels:
        if lv not in levels:
            errors.append(problem("tier_level_incomplete", value=literal(lv)))
    if not tiers.levels:
        errors.append(problem("no_tiers"))
    thresholds = [lv["threshold"] for lv in levels]
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in thresholds):
        errors.append(problem("tier_threshold_not_number"))
    elif any(b <= a for a, b in zip(thresholds, thresholds[1:], strict=False)):
        errors.append(problem("tier_thresholds_order"))
    if not 0 < tiers.demote_fraction <= 1:
        errors.append(problem("demote_fraction"))
    keys = [lv["key"] for lv in levels]
    if levels and len(levels) == len(tiers.levels) and tiers.true_fan_tier not in keys:
        errors.append(problem("not_a_tier_key", key="tiers.true_fan_tier", value=literal(tiers.true_fan_tier)))
    if tiers.commitment_actions < 1:
        errors.append(problem("at_least_one", key="tiers.commitment_actions"))
    if tiers.commitment_days < 1:
        errors.append(problem("at_least_one", key="tiers.commitment_days"))
    if tiers.min_tenure_days < 0:
        errors.append(problem("must_not_be_negative", key="tiers.min_tenure_days"))
    return errors


def _sla_problems(cfg: Config) -> list[Problem]:
    s, errors = cfg.sla, []
    if not s.reply_within_hours > 0:
        errors.append(problem("must_be_positive", key="sla.reply_within_hours"))
    if s.remind_before_hours < 0:
        errors.append(problem("remind_before_negative"))
    return errors + _reply_hours_problems(cfg)


def _reply_hours_problems(cfg: Config) -> list[Problem]:
    """``sla.hours``, ``rest_days`` and ``holidays``: crm's :func:`parse_reply_hours` decides what it
    accepts (asked one entry at a time), the catalogue says what is wrong with each."""
    s, tz, errors = cfg.sla, cfg.creator.timezone, []
    weekdays = list(WEEKDAYS)
    for name, spans in s.hours.items():
        if name.lower() not in WEEKDAYS:
            errors.append(problem("not_a_weekday", key="sla.hours", value=literal(name), weekdays=weekdays))
            continue
        bad = [span for span in spans if parse_reply_hours(tz, {name: [span]}, [], [])[1]]
        for span in bad:
            errors.append(problem("bad_reply_span", key=f"sla.hours.{name}", value=literal(span)))
        if not bad and parse_reply_hours(tz, {name: spans}, [], [])[1]:
            errors.append(problem("overlapping_spans", key=f"sla.hours.{name}"))
    for name in s.rest_days:
        if name.lower() not in WEEKDAYS:
            errors.append(problem("not_a_weekday", key="sla.rest_days", value=literal(name), weekdays=weekdays))
    for text in s.holidays:
        try:
            date.fromisoformat(text)
        except ValueError:
            errors.append(problem("not_a_date", key="sla.holidays", value=literal(text)))
    if not errors and parse_reply_hours(tz, s.hours, s.rest_days, s.holidays)[0] is None:
        errors.append(problem("no_reply_hours"))
    return errors


def _purchases_problems(cfg: Config) -> list[Problem]:
    p, errors = cfg.purchases, []
    if not p.max_amount > 0:
        errors.append(problem("must_be_positive", key="purchases.max_amount"))
    bad = [c for c in p.currencies if not (len(c) == 3 and c.isascii() and c.isalpha() and c.isupper())]
    if bad:
        errors.append(problem("bad_currencies", value=literal(bad)))
    return errors


def _discord_problems(cfg: Config) -> list[Problem]:
    d, errors = cfg.discord, []
    if not 0 <= d.defer_after_seconds <= 2.5:
        errors.append(problem("defer_after_seconds"))
    for key in ("role_sync_seconds", "ready_timeout_seconds"):
        if getattr(d, key) <= 0:
            errors.append(problem("must_be_positive", key=f"discord.{key}"))
    keys = {lv.get("key") for lv in cfg.tiers.levels if isinstance(lv, dict)}
    unknown = sorted(set(d.tier_role_ids) - keys)
    if unknown:
        errors.append(problem("tier_role_ids", names=unknown, tiers=sorted(str(k) for k in keys if k)))
    return errors
