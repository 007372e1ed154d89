"""``superfan drop create|list|show``: exclusive drops from a terminal.

``create`` previews first (who receives it on which platform, who is left out and why, the LINE
messages it uses against what is left this month, a sample of recipients); ``--dry-run`` stops
there. Otherwise it writes the drop, its deliveries and their outbox rows in one transaction and
a running ``superfan run`` sends them (its drainers look every couple of seconds); a drop that
needs more LINE messages than are left is refused (exit 2) with the way out (``--platform
discord``). The quota left is LINE's own figure for the month (read from the Messaging API when
``[line]`` is enabled and its token is set) less the LINE drop messages still queued.

Registered from ``bot/cli.py``; the CLI's helpers (config, exit codes) are taken from there when a
command runs, so importing this module does not import the CLI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from bot.i18n import t
from crm.errors import BadInput

if TYPE_CHECKING:
    from bot.config import Config
    from crm.drops import Preview
    from crm.settings import CrmSettings

log = logging.getLogger(__name__)
drop_app = typer.Typer(no_args_is_help=True, help="Exclusive drops for your top tiers: preview, create, results.")
out = Console(soft_wrap=True)


@dataclass(frozen=True)
class CreateOptions:
    min_tier: str
    text: str
    link: str | None
    image: str | None
    topic: str | None
    platform: str | None
    at: str | None
    sponsored: bool
    evergreen: bool
    dry_run: bool
    as_json: bool
    by: str
    now: str | None


def _run(fn: Any, *args: Any) -> Any:
    from bot.cli_support import command  # the CLI's exit codes and one-line errors

    return command(fn)(*args)


def _say(key: str, locale: str, **params: object) -> None:
    out.print(t(f"drops.{key}", locale, **params), highlight=False, markup=False)


@drop_app.command("create")
def create(
    min_tier: Annotated[str, typer.Option("--min-tier", help="The lowest tier that receives it (e.g. 鐵粉).")],
    text: Annotated[str, typer.Option("--text", help="What fans read.")],
    link: Annotated[str | None, typer.Option("--link", help="A link added at the end.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="An https image URL.")] = None,
    topic: Annotated[str | None, typer.Option("--topic", help="Only fans with this preference or tag.")] = None,
    platform: Annotated[str | None, typer.Option("--platform", help="line, discord or line,discord "
                                                                    "(default: the enabled ones).")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Send at this ISO-8601 time (with offset).")] = None,
    sponsored: Annotated[bool, typer.Option("--sponsored", help="Paid content: starts with the disclosure.")] = False,
    evergreen: Annotated[bool, typer.Option("--evergreen", help="Fans who reach the tier later get it then.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Preview only; nothing is written or sent.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    by: Annotated[str, typer.Option("--by", help="Who creates it (recorded).")] = "cli",
    now: Annotated[str | None, typer.Option("--now", help="Pretend it is this ISO time.")] = None,
) -> None:
    """Preview and create a drop for a tier and above (the outbox sends it; see `superfan run`)."""
    _run(_create, CreateOptions(min_tier, text, link, image, topic, platform, at, sponsored, evergreen, dry_run,
                                as_json, by, now))


@drop_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many, newest first.")] = 20,
    now: Annotated[str | None, typer.Option("--now", help="Pretend it is this ISO time.")] = None,
) -> None:
    """Drops, newest first, with what was sent, failed and is pending."""
    _run(_list, as_json, limit, now)


@drop_app.command("show")
def show(
    drop_id: Annotated[int, typer.Argument(help="The drop's number (superfan drop list).")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    now: Annotated[str | None, typer.Option("--now", help="Pretend it is this ISO time.")] = None,
) -> None:
    """One drop: sent / failed / pending per platform, why deliveries failed, LINE quota used."""
    _run(_show, drop_id, as_json, now)


def platforms_of(given: str | None, cfg: Config) -> tuple[str, ...]:
    """``--platform``, else the enabled platforms (else both); an asked-for platform must be on."""
    from crm.drop_audience import check_platforms

    enabled = tuple(p for p, on in (("line", cfg.line.enabled), ("discord", cfg.discord.enabled)) if on)
    chosen = check_platforms(given.split(",")) if given else enabled or ("line", "discord")
    for p in chosen:
        if given and p not in enabled:
            raise BadInput(f"[{p}] is not enabled, so nothing would send it", code="drop.platform_off", platform=p)
    return chosen


def _at(text: str | None) -> datetime | None:
    from crm.clock import parse_iso

    if not text:
        return None
    try:
        return parse_iso(text)
    except ValueError:
        raise BadInput(f"--at {text!r}: an ISO-8601 time with an offset", code="drop.bad_at", value=text) from None


async def line_quota_left(cfg: Config, pending: int) -> int | None:
    """LINE messages left this month (LINE's consumption, less ``pending`` queued); None when
    LINE is off, its token is not set or it cannot be asked."""
    from bot.config import ConfigError
    from bot.line_adapter.sender import LineSender

    if not cfg.line.enabled:
        return None
    try:
        token = cfg.secret(cfg.line.channel_access_token_env)
    except ConfigError:
        return None
    sender = LineSender(cfg.line.api_base, token, monthly_quota=cfg.line.monthly_quota,
                        timezone=cfg.creator.timezone, request_timeout=5.0)
    await sender.start()
    try:
        used = await sender.consumption()
    except Exception as exc:
        log.warning("LINE quota: could not read this month's consumption (%s)", type(exc).__name__)
        return None
    finally:
        await sender.close()
    return max(0, cfg.line.monthly_quota - used - pending)


async def _create(o: CreateOptions) -> None:
    from bot.app import open_crm
    from bot.cli_support import current_config, now_from, print_json
    from crm.drops import DropDraft, QuotaRefused, create_drop, pending_line_messages, preview_drop

    cfg = current_config()
    locale = cfg.creator.locale
    async with open_crm(cfg) as crm:
        when = now_from(o.now)
        draft = DropDraft(text=o.text, min_tier=o.min_tier, link=o.link, image_url=o.image, topic=o.topic,
                          platforms=platforms_of(o.platform, cfg), created_by=o.by, scheduled_at=_at(o.at),
                          sponsored=o.sponsored, evergreen=o.evergreen)
        left = None
        if "line" in draft.platforms:
            async with crm.read() as session:
                pending = await pending_line_messages(session)
            left = await line_quota_left(cfg, pending)
        quota = cfg.line.monthly_quota
        if o.dry_run:
            async with crm.read() as session:
                preview = await preview_drop(session, crm.settings, draft, quota_left=left, quota=quota)
            if o.as_json:
                print_json({"dry_run": True, **preview.as_dict()})
                return
            render_preview(preview, crm.settings, locale)
            _say("quota_over" if not preview.fits else "dry_run", locale)
            return
        try:
            async with crm.sessions.begin() as session:
                made = await create_drop(session, crm.settings, draft, when, quota_left=left, quota=quota)
        except QuotaRefused:
            if not o.as_json:
                async with crm.read() as session:
                    render_preview(await preview_drop(session, crm.settings, draft, quota_left=left, quota=quota),
                                   crm.settings, locale)
            raise
    if o.as_json:
        print_json({"id": made.id, "line_batches": made.line_batches, "discord_dms": made.discord_dms,
                     "posted": made.posted, **made.preview.as_dict()})
        return
    render_preview(made.preview, crm.settings, locale)
    counts = made.preview.audience.counts()
    total = len({r.fan_id for r in made.preview.audience.recipients})
    if draft.scheduled_at is not None and draft.scheduled_at > when:
        _say("created_scheduled", locale, id=made.id, total=total, at=_local(draft.scheduled_at, cfg))
    else:
        _say("created", locale, id=made.id, total=total, line=counts["line"], batches=made.line_batches,
             discord=counts["discord"])


def _local(at: datetime, cfg: Config) -> str:
    from zoneinfo import ZoneInfo

    return at.astimezone(ZoneInfo(cfg.creator.timezone)).strftime("%Y-%m-%d %H:%M")


def render_preview(p: Preview, settings: CrmSettings, locale: str) -> None:
    """The preview as staff read it: counts, who is left out and why, the quota, a sample."""
    draft = p.draft
    topic = t("drops.topic_part", locale, topic=draft.topic) if draft.topic else ""
    tier = settings.tiers.name(p.min_tier, locale)
    _say("preview_title", locale, tier=tier, topic=topic)
    counts = p.audience.counts()
    _say("counts", locale, total=len({r.fan_id for r in p.audience.recipients}), line=counts["line"],
         discord=counts["discord"])
    left_out = sum(len(v) for v in p.audience.left_out.values())
    if left_out:
        _say("left_out", locale, count=left_out)
        for reason, fans in sorted(p.audience.left_out.items(), key=lambda kv: -len(kv[1])):
            _say("left_out_line", locale, reason=t(f"drops.reason.{reason}", locale, topic=draft.topic or ""),
                 count=len(fans))
    else:
        _say("left_out_none", locale)
    if "line" in draft.platforms:
        if p.quota_left is None:
            _say("quota_unknown", locale, needed=p.line_messages)
        else:
            _say("quota", locale, needed=p.line_messages, left=p.quota_left, quota=p.quota)
    if p.sample:
        more = len({r.fan_id for r in p.audience.recipients}) - len(p.sample)
        names = "、".join(p.sample) + (t("drops.sample_more", locale, count=more) if more > 0 else "")
        _say("sample", locale, names=names)
    if p.post_channel_id:
        _say("post", locale, channel=p.post_channel_id)
    if draft.sponsored:
        _say("sponsored", locale, disclosure=settings.drops.disclosure)
    if draft.evergreen:
        _say("evergreen", locale, tier=tier)


async def _list(as_json: bool, limit: int, now: str | None) -> None:
    from bot.app import open_crm
    from bot.cli_support import current_config, now_from, print_json
    from crm.drop_reports import list_drops

    cfg = current_config()
    async with open_crm(cfg) as crm:
        async with crm.read() as session:
            drops = await list_drops(session, now_from(now), limit=limit)
    if as_json:
        print_json(drops)
        return
    locale = cfg.creator.locale
    if not drops:
        _say("list_none", locale)
        return
    _say("list_title", locale)
    for d in drops:
        flags = (t("drops.flag_sponsored", locale) if d["sponsored"] else "") + \
                (t("drops.flag_evergreen", locale) if d["evergreen"] else "")
        if d["status"] == "scheduled":
            flags += t("drops.flag_scheduled", locale, at=_local(datetime.fromisoformat(d["scheduled_at"]), cfg))
        topic = t("drops.topic_part", locale, topic=d["topic"]) if d["topic"] else ""
        _say("list_line", locale, id=d["id"], status=t(f"drops.status.{d['status']}", locale),
             tier=crm.settings.tiers.name(d["min_tier"], locale) if d["min_tier"] in crm.settings.tiers.keys
             else d["min_tier"], topic=topic, created=_local(datetime.fromisoformat(d["created_at"]), cfg),
             sent=d["sent"], failed=d["failed"], pending=d["pending"], flags=flags)


async def _show(drop_id: int, as_json: bool, now: str | None) -> None:
    from bot.app import open_crm
    from bot.cli_support import current_config, now_from, print_json
    from crm.drop_reports import drop_report

    cfg = current_config()
    async with open_crm(cfg) as crm:
        async with crm.read() as session:
            d = await drop_report(session, drop_id, now_from(now))
    if as_json:
        print_json(d)
        return
    locale = cfg.creator.locale
    rules = crm.settings.tiers
    _say("show_title", locale, id=d["id"], status=t(f"drops.status.{d['status']}", locale))
    _say("show_text", locale, text=d["text"])
    topic = t("drops.topic_part", locale, topic=d["topic"]) if d["topic"] else ""
    _say("show_audience", locale, tier=rules.name(d["min_tier"], locale) if d["min_tier"] in rules.keys
         else d["min_tier"], topic=topic, platforms=", ".join(d["platforms"]))
    for platform, tally in d["per_platform"].items():
        if platform in d["platforms"] or any(tally.values()):
            _say("show_platform", locale, platform=platform.upper() if platform == "line" else "Discord", **tally)
    if d["failures"]:
        _say("show_reasons", locale)
        for f in d["failures"]:
            _say("show_reason_line", locale, reason=f"{f['platform']}: {f['reason']}", count=f["count"])
    _say("show_quota", locale, used=d["quota_used"])
    if d["post"]:
        post = d["post"]
        message = f" / {post['message_id']}" if post["message_id"] else ""
        if "reactions" in post:
            message += t("drops.show_reactions", locale, reactions=post["reactions"], fans=post["fans_reacting"])
        _say("show_post", locale, channel=post["channel_id"], message=message)
    _say("show_created", locale, at=_local(datetime.fromisoformat(d["created_at"]), cfg), by=d["created_by"] or "-")
    if d["finished_at"]:
        _say("show_finished", locale, at=_local(datetime.fromisoformat(d["finished_at"]), cfg))
