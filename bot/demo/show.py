"""What ``superfan demo`` shows when the community has run: every word from the catalogue.

The sections reuse the terminal renderers of the real commands (``superfan stats``/``fans``,
``superfan fan``, ``superfan digest``), so the demo shows what a creator will see day to day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table

from bot import render_cli
from bot.demo.traffic import Traffic
from bot.i18n import t
from bot.render_digest import print_digest
from crm.tiers import TierRules

BAR_WIDTH = 40


@dataclass(frozen=True)
class DropResult:
    """One drop as the demo reports it: who it was for, and what the emulators received."""

    drop_id: int
    tier: str
    eligible: int
    recipients: dict[str, int]
    sent: dict[str, int]
    failed: dict[str, int]
    left_out: dict[str, int]
    #: LINE user ids the LINE emulator delivered the drop to (multicast), and Discord user ids
    #: the Discord emulator got a DM carrying the drop's text for.
    line_received: frozenset[str]
    discord_received: frozenset[str]
    quota_used: int
    quota: int


@dataclass(frozen=True)
class Shown:
    """Everything the demo prints after the run (gathered while the database is open)."""

    stats: dict[str, Any]
    top_fan: dict[str, Any] | None
    digest: dict[str, Any]
    drop: DropResult | None
    extra: dict[str, Any] = field(default_factory=dict)


def section(console: Console, key: str, locale: str, **params: object) -> None:
    console.print()
    console.print(Rule(t(f"demo.section.{key}", locale, **params), style="cyan"))


def traffic_summary(console: Console, traffic: Traffic, locale: str, *, fans: int, days: int) -> None:
    """What went through which adapter, and what had no path (and why: see traffic.py)."""
    table = Table(title=t("demo.sent_title", locale, fans=fans, days=days), show_edge=False)
    table.add_column(t("demo.col_route", locale))
    table.add_column("#", justify="right")
    for key, count in (("line_webhook", len(traffic.line_events)), ("discord_messages", len(traffic.discord_messages)),
                       ("discord_dms", len(traffic.discord_dms)), ("discord_reactions", len(traffic.discord_reactions)),
                       ("discord_checkins", len(traffic.discord_checkins)), ("purchases", len(traffic.purchases))):
        table.add_row(t(f"demo.route.{key}", locale), f"{count:,}")
    console.print(table)
    if traffic.skipped:
        skipped = t("demo.list_separator", locale).join(
            t("demo.skipped_item", locale, platform=t(f"demo.platform.{k.split(':')[0]}", locale),
              kind=t(f"report.kind.{k.split(':')[1]}", locale), count=f"{v:,}")
            for k, v in sorted(traffic.skipped.items()))
        console.print(t("demo.skipped", locale, items=skipped), highlight=False, style="dim")


def funnel(console: Console, stats: dict[str, Any], locale: str) -> None:
    """The tiers, highest first, as bars (the widest tier fills the bar)."""
    tiers = list(reversed(stats["tiers"]))
    widest = max((tier["count"] for tier in tiers), default=0) or 1
    table = Table(show_header=False, show_edge=False, box=None, padding=(0, 1))
    table.add_column(justify="right")
    table.add_column()
    table.add_column(justify="right")
    for n, tier in enumerate(tiers):
        width = max(1 if tier["count"] else 0, round(BAR_WIDTH * tier["count"] / widest))
        colour = ("magenta", "red", "yellow", "green", "blue")[min(n, 4)]
        table.add_row(tier["name"], f"[{colour}]{'█' * width}[/{colour}]", f"{tier['count']:,}")
    console.print(table)
    goal = stats["true_fans"]
    console.print(t("cli.stats_goal", locale, tier=goal["tier"], count=goal["count"], goal=goal["goal"],
                    pct=goal["progress_pct"]), highlight=False)


def drop_report(console: Console, drop: DropResult, locale: str) -> None:
    table = Table(show_edge=False)
    table.add_column(t("demo.col_platform", locale))
    for key in ("col_recipients", "col_sent", "col_failed", "col_received"):
        table.add_column(t(f"demo.{key}", locale), justify="right")
    received = {"line": len(drop.line_received), "discord": len(drop.discord_received)}
    for platform in ("line", "discord"):
        table.add_row(t(f"demo.platform.{platform}", locale), str(drop.recipients.get(platform, 0)),
                      str(drop.sent.get(platform, 0)), str(drop.failed.get(platform, 0)), str(received[platform]))
    console.print(t("demo.drop_line", locale, id=drop.drop_id, tier=drop.tier, eligible=drop.eligible),
                  highlight=False)
    console.print(table)
    if drop.left_out:
        reasons = ", ".join(f"{t(f'demo.left_out.{k}', locale)} {v}" for k, v in sorted(drop.left_out.items()))
        console.print(t("demo.drop_left_out", locale, reasons=reasons), highlight=False)
    console.print(t("demo.drop_quota", locale, used=drop.quota_used, quota=drop.quota), highlight=False)


def show(console: Console, shown: Shown, locale: str, rules: TierRules) -> None:
    """The funnel, top fans, the top fan's card, the digest and the drop report."""
    section(console, "funnel", locale, fans=shown.stats["fans"])
    funnel(console, shown.stats, locale)
    section(console, "top", locale)
    render_cli.fans_table(console, shown.stats["top"], locale)
    if shown.top_fan is not None:
        section(console, "card", locale)
        render_cli.fan_card(console, shown.top_fan, locale, rules)
    section(console, "digest", locale)
    print_digest(console, shown.digest, locale)
    if shown.drop is not None:
        section(console, "drop", locale)
        drop_report(console, shown.drop, locale)


def finished(console: Console, locale: str, *, html: str, seconds: float) -> None:
    console.print()
    console.print(Panel(t("demo.finished", locale, path=html, seconds=f"{seconds:.0f}"), style="green",
                        expand=False), highlight=False)
