"""superfan.toml → frozen, validated settings. Secrets come only from environment variables.

Every problem is reported at start-up, one line each (unknown key, wrong type, missing secret for
an enabled adapter), so a creator fixes the file once instead of once per error. Each line comes
from the catalogue (``config.*``), in ``[creator] locale`` when the file got that far, else in
zh-TW; ``str(error)`` is the English text, for logs. Secrets are only
required where they are used: ``superfan run`` loads with ``need_secrets=True`` (or calls
:func:`require_secrets`); offline commands (``fans``, ``import``, ``export`` …) work without them.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bot.config_checks import problems, secret_problems
from bot.config_errors import (
    DEFAULT_SOURCE,
    TOML_AT,
    ConfigError,
    Problem,
    literal,
    locale_above_mistake,
    locale_of,
    problem,
    unreadable,
)
from bot.i18n import pick_locale
from crm.reply_hours import parse_reply_hours
from crm.scoring import DEFAULT_DAILY_CAPS, DEFAULT_WEIGHTS, ScoringRules
from crm.settings import DEFAULT_THANKS, CrmSettings, DigestRules, DropRules, SlaRules, TrueFanGoal
from crm.tiers import DEFAULT_TIERS, Tier, TierRules


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite+aiosqlite:///superfan.db"
    auto_migrate: bool = True
    busy_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class CreatorConfig:
    name: str = "superfan"
    timezone: str = "Asia/Taipei"
    locale: str = "zh-TW"


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    purchase_path: str = "/hooks/purchase"
    purchase_secret_env: str = "SUPERFAN_PURCHASE_SECRET"
    max_body_bytes: int = 1_048_576


@dataclass(frozen=True)
class LineConfig:
    enabled: bool = False
    channel_secret_env: str = "LINE_CHANNEL_SECRET"
    channel_access_token_env: str = "LINE_CHANNEL_ACCESS_TOKEN"
    webhook_path: str = "/line/webhook"
    api_base: str = "https://api.line.me"
    monthly_quota: int = 200
    reply_token_ttl_seconds: float = 50.0
    profile_refresh_hours: float = 24.0
    profile_requests_per_second: float = 100.0
    send_max_attempts: int = 4
    send_backoff_seconds: float = 0.5


@dataclass(frozen=True)
class DiscordConfig:
    enabled: bool = False
    token_env: str = "DISCORD_TOKEN"
    guild_id: int = 0
    inbox_channel_id: int = 0
    staff_channel_id: int = 0
    staff_role_ids: list[int] = field(default_factory=list)
    api_base: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg/"
    tier_role_ids: dict[str, int] = field(default_factory=dict)
    note_prefix: str = "//"
    cumulative_tier_roles: bool = False
    sync_commands: bool = True
    defer_after_seconds: float = 1.5
    role_sync_seconds: float = 60.0
    ready_timeout_seconds: float = 60.0
    redact_deleted_messages: bool = True


@dataclass(frozen=True)
class SlaConfig:
    reply_within_hours: float = 24.0
    remind_before_hours: float = 4.0
    hours: dict[str, list[str]] = field(default_factory=dict)
    rest_days: list[str] = field(default_factory=list)
    holidays: list[str] = field(default_factory=list)
    thanks: list[str] = field(default_factory=lambda: list(DEFAULT_THANKS))


@dataclass(frozen=True)
class DigestConfig:
    at: str = "09:00"
    quiet_after_days: int = 14
    care_phrases: list[str] = field(default_factory=lambda: list(DigestRules().care_phrases))
    care_days: int = 7
    list_limit: int = 50
    #: A run missed by up to this long (a busy or sleeping machine) still happens; longer
    #: downtime is caught up once at start.
    misfire_grace_minutes: int = 60
    #: The creator's own LINE user id: the digest is also pushed there (costs LINE quota). Empty: off.
    line_user_id: str = ""


@dataclass(frozen=True)
class ScoringConfig:
    half_life_days: float = 90.0
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    purchase_per_unit: dict[str, float] = field(default_factory=lambda: {"TWD": 0.005})
    daily_caps: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DAILY_CAPS))
    cooldown_seconds: dict[str, float] = field(default_factory=lambda: {"message": 60.0})


@dataclass(frozen=True)
class TiersConfig:
    demote_fraction: float = 0.8
    true_fan_tier: str = "superfan"
    commitment_actions: int = 5
    commitment_days: int = 60
    min_tenure_days: float = 45.0
    levels: list[dict[str, Any]] = field(
        default_factory=lambda: [{"key": t.key, "threshold": t.threshold, "names": dict(t.names)}
                                 for t in DEFAULT_TIERS]
    )


@dataclass(frozen=True)
class GoalConfig:
    true_fans: int = 0
    income: float = 0.0
    yearly_spend_per_fan: float = 0.0
    currency: str = "TWD"


@dataclass(frozen=True)
class PurchasesConfig:
    """The purchase webhook's limits: ``[goal] currency`` is accepted besides ``currencies``."""

    max_amount: float = 1_000_000.0
    currencies: list[str] = field(default_factory=lambda: ["TWD", "USD", "JPY"])


@dataclass(frozen=True)
class CheckinConfig:
    keywords: list[str] = field(default_factory=lambda: ["打卡", "checkin"])


@dataclass(frozen=True)
class PrivacyConfig:
    store_message_text: bool = True
    summary_chars: int = 140


@dataclass(frozen=True)
class DropsConfig:
    """``[drops]``: see :class:`crm.settings.DropRules`."""

    prefer: str = "discord"
    disclosure: str = "#廣告"
    tier_channel_ids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    creator: CreatorConfig = field(default_factory=CreatorConfig)
    web: WebConfig = field(default_factory=WebConfig)
    line: LineConfig = field(default_factory=LineConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    sla: SlaConfig = field(default_factory=SlaConfig)
    digest: DigestConfig = field(default_factory=DigestConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    tiers: TiersConfig = field(default_factory=TiersConfig)
    goal: GoalConfig = field(default_factory=GoalConfig)
    purchases: PurchasesConfig = field(default_factory=PurchasesConfig)
    checkin: CheckinConfig = field(default_factory=CheckinConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    drops: DropsConfig = field(default_factory=DropsConfig)
    source: str = DEFAULT_SOURCE

    def secret(self, env_name: str) -> str:
        """The value of a secret's environment variable (never logged)."""
        value = os.environ.get(env_name, "")
        if not value:
            raise ConfigError(problem("env_missing", env=env_name), locale=self.creator.locale)
        return value

    def crm_settings(self) -> CrmSettings:
        s = self.scoring
        return CrmSettings(
            scoring=ScoringRules(weights=s.weights, purchase_per_unit=s.purchase_per_unit,
                                 daily_caps=s.daily_caps, cooldown_seconds=s.cooldown_seconds,
                                 half_life_days=s.half_life_days, timezone=self.creator.timezone),
            tiers=TierRules(
                tiers=tuple(Tier(lv["key"], float(lv["threshold"]), dict(lv.get("names", {})))
                            for lv in self.tiers.levels),
                demote_fraction=self.tiers.demote_fraction, true_fan_tier=self.tiers.true_fan_tier,
                commitment_actions=self.tiers.commitment_actions, commitment_days=self.tiers.commitment_days,
                min_tenure_days=self.tiers.min_tenure_days),
            goal=TrueFanGoal(count=self.goal.true_fans or None, income=self.goal.income or None,
                             yearly_spend_per_fan=self.goal.yearly_spend_per_fan or None,
                             currency=self.goal.currency),
            locale=self.creator.locale,
            store_text=self.privacy.store_message_text,
            summary_chars=self.privacy.summary_chars,
            digest=DigestRules(quiet_after_days=self.digest.quiet_after_days,
                               care_phrases=tuple(self.digest.care_phrases), care_days=self.digest.care_days,
                               list_limit=self.digest.list_limit),
            sla=self.sla_rules(),
            drops=DropRules(prefer=self.drops.prefer, disclosure=self.drops.disclosure,
                            tier_channel_ids=dict(self.drops.tier_channel_ids)),
        )

    def sla_rules(self) -> SlaRules:
        """``[sla]`` as the domain uses it; raises ValueError when the reply hours are invalid."""
        calendar, bad = parse_reply_hours(self.creator.timezone, self.sla.hours, self.sla.rest_days,
                                          self.sla.holidays)
        if calendar is None:
            raise ValueError("; ".join(bad))
        return SlaRules(reply_within_hours=self.sla.reply_within_hours,
                        remind_before_hours=self.sla.remind_before_hours, calendar=calendar,
                        thanks=tuple(self.sla.thanks),
                        inbox=self.discord.enabled and self.discord.inbox_channel_id != 0)


def config_path(explicit: str | None) -> Path | None:
    """``--config``, else ``$SUPERFAN_CONFIG``, else ``./superfan.toml`` if present, else none."""
    if explicit:
        return Path(explicit)
    if os.environ.get("SUPERFAN_CONFIG"):
        return Path(os.environ["SUPERFAN_CONFIG"])
    default = Path("superfan.toml")
    return default if default.exists() else None


def load_config(explicit: str | None = None, *, need_secrets: bool = False) -> Config:
    """Read and validate the config; with ``need_secrets``, missing secrets are problems too.

    Secrets are needed only by what talks to LINE or Discord (``superfan run``), so every other
    command works on a machine that holds the database but not the tokens.
    """
    path = config_path(explicit)
    if path is None:
        return validate(Config(), need_secrets=need_secrets)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(unreadable(exc), source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError(problem("file_not_utf8"), source=str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = TOML_AT.search(str(exc))
        reason = TOML_AT.sub("", str(exc)).strip()
        found = (problem("not_toml_at", line=int(at[1]), column=int(at[2]), reason=reason) if at
                 else problem("not_toml", reason=str(exc)))
        raise ConfigError(found, source=str(path), locale=locale_above_mistake(text, exc)) from None
    return parse(data, source=str(path), need_secrets=need_secrets)


def parse(data: dict[str, Any], source: str = "<config>", *, need_secrets: bool = False) -> Config:
    errors: list[Problem] = []
    sections: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    known = [name for name in hints if name != "source"]
    for name, value in data.items():
        if name not in known:
            errors.append(problem("unknown_section", section=f"[{name}]", known=[f"[{k}]" for k in known]))
            continue
        if not isinstance(value, dict):
            errors.append(problem("section_not_table", section=f"[{name}]"))
            continue
        sections[name] = _section(hints[name], name, value, errors)
    cfg = Config(**sections, source=source)
    errors += problems(cfg)
    if need_secrets:
        errors += secret_problems(cfg)
    if errors:
        raise ConfigError(*errors, source=source, locale=locale_of(data))
    return cfg


def _section(cls: Any, name: str, values: dict[str, Any], errors: list[Problem]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in hints:
            errors.append(problem("unknown_key", key=f"{name}.{key}", known=[f.name for f in fields(cls)]))
            continue
        wrong = _type_problem(hints[key], value)
        if wrong:
            errors.append(problem(wrong, key=f"{name}.{key}", value=literal(value)))
            continue
        kwargs[key] = float(value) if hints[key] is float else value
    return cls(**kwargs)


#: The catalogue code for a value that is not of the key's type.
_NOT = {float: "not_number", int: "not_integer", str: "not_string", bool: "not_boolean"}


def _type_problem(hint: Any, value: Any) -> str | None:
    """The catalogue code of what is wrong with ``value`` for a key typed ``hint``, or None."""
    origin = typing.get_origin(hint)
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else _NOT[float]
    if hint in (int, str, bool):
        ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
        return None if ok else _NOT[hint]
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return "not_list"
        if item is not typing.Any and any(_type_problem(item, v) for v in value):
            return f"items_{_NOT[item]}" if item in _NOT else "items_wrong"
        return None
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            return "not_table"
        if any(_type_problem(item, v) for v in value.values()):
            return f"values_{_NOT[item]}" if item in _NOT else "values_wrong"
        return None
    if isinstance(hint, types.UnionType):
        return None
    return None


def validate(cfg: Config, *, need_secrets: bool = False) -> Config:
    errors = problems(cfg) + (secret_problems(cfg) if need_secrets else [])
    if errors:
        raise ConfigError(*errors, source=cfg.source, locale=pick_locale(cfg.creator.locale))
    return cfg


def require_secrets(cfg: Config) -> Config:
    """Raise :class:`ConfigError` (one line per missing variable) unless every enabled adapter's
    secrets are in the environment. ``superfan run`` calls this before connecting anything."""
    errors = secret_problems(cfg)
    if errors:
        raise ConfigError(*errors, source=cfg.source, locale=pick_locale(cfg.creator.locale))
    return cfg


def with_overrides(cfg: Config, **sections: Any) -> Config:
    """A copy with whole sections replaced (tests and the demo build configs this way)."""
    from dataclasses import replace

    return replace(cfg, **sections)
