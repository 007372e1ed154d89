"""``superfan tiers [--try 鐵粉=50] [--json] [--now ISO]``: the tier calibration view.

Shows how today's scores spread over the tiers (a text histogram), the fans within 20% of the
next tier ("rising"), and, with ``--try``, who a trial threshold would move up or down, so a
creator can see the effect before writing it into ``[tiers]``. Only reads.
Registered from ``bot/cli.py``; the CLI helpers are imported when the command runs.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.cells import cell_len
from rich.console import Console

from bot.i18n import t
from crm.errors import BadInput
from crm.tier_calibration import Calibration
from crm.tiers import TierRules

BAR_WIDTH = 30


def tiers_command(
    trial: Annotated[list[str] | None, typer.Option(
        "--try", help="A trial threshold, TIER=POINTS (e.g. 鐵粉=50); repeatable.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    now: Annotated[str | None, typer.Option("--now", help="Evaluate at this ISO-8601 time.")] = None,
) -> None:
    """Score distribution per tier, rising fans, and what a trial threshold would change."""
    from bot.cli_support import command

    command(_tiers)(trial or [], as_json, now)


def parse_trial(items: list[str], rules: TierRules, locale: str = "zh-TW") -> dict[str, float]:
    """``["鐵粉=50"]`` → ``{"superfan": 50.0}``; a bad item, or thresholds that no longer rise
    from tier to tier, is a usage error (exit 2)."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            points = float(value)
        except ValueError:
            points = -1.0
        if not sep or points < 0:
            raise BadInput(f"--try {item!r}: write TIER=POINTS, e.g. superfan=50", code="tiers.bad_trial", value=item)
        out[rules.resolve(name)] = points
    thresholds = [(rules.name(tier.key, locale), out.get(tier.key, tier.threshold)) for tier in rules.tiers]
    if any(low >= high for (_, low), (_, high) in itertools.pairwise(thresholds)):
        raise BadInput("--try: tier thresholds must rise from tier to tier", code="tiers.trial_order",
                       value=" ".join(items), order=" < ".join(f"{n} {v:g}" for n, v in thresholds))
    return out


async def _tiers(trial_items: list[str], as_json: bool, now: str | None) -> None:
    from bot.app import open_crm
    from bot.cli import out
    from bot.cli_support import current_config, now_from, print_json
    from crm.tier_calibration import calibrate

    async with open_crm(current_config()) as crm:
        when = now_from(now)
        rules = crm.settings.tiers
        trial = parse_trial(trial_items, rules, crm.settings.locale)
        async with crm.read() as session:
            view = await calibrate(session, crm.settings, when, trial)
    if as_json:
        print_json(asdict(view))
    else:
        print_calibration(out, view, rules, crm.settings.locale)


def calibration_lines(view: Calibration, rules: TierRules, locale: str, *, short: bool = False) -> list[str]:
    """The view as plain lines (the terminal and, with ``short``, Discord's /stats)."""
    lines = [t("tiers.histogram_title", locale)]
    peak = max((b.count for b in view.bins), default=0) or 1
    width = 12 if short else BAR_WIDTH
    pad = max(cell_len(n) for n in rules.display_names(locale))
    sep = t("tiers.sep", locale)
    for b in view.bins:
        if short and b.count == 0:
            continue
        span = f"{b.low:g}–{b.high:g}" if b.high is not None else f"{b.low:g}+"
        bar = "█" * round(width * b.count / peak) if b.count else ""
        name = rules.name(b.tier, locale)
        lines.append(f"{name}{' ' * (pad - cell_len(name))} {span:>11} {bar} {b.count}")
    lines.append(t("tiers.counts", locale, counts=sep.join(
        f"{rules.name(k, locale)} {n}" for k, n in view.counts.items())))
    if view.rising:
        lines.append(t("tiers.rising_title", locale, pct=20))
        for r in view.rising[: 5 if short else len(view.rising)]:
            lines.append(t("tiers.rising_line", locale, id=r.fan_id, name=r.name, tier=rules.name(r.tier, locale),
                           next=rules.name(r.next_tier, locale), value=f"{r.value:.1f}", threshold=f"{r.threshold:g}"))
    else:
        lines.append(t("tiers.no_rising", locale, pct=20))
    if view.trial:
        tried = sep.join(f"{rules.name(k, locale)} {v:g}" for k, v in view.trial.items())
        lines.append(t("tiers.trial_title", locale, trial=tried, moves=len(view.moves)))
        for m in view.moves:
            up = rules.rank(m.to_tier) > rules.rank(m.from_tier)
            lines.append(t("tiers.move_up" if up else "tiers.move_down", locale, id=m.fan_id, name=m.name,
                           frm=rules.name(m.from_tier, locale), to=rules.name(m.to_tier, locale)))
    elif not short:
        lines.append(t("tiers.try_hint", locale))
    return lines


def print_calibration(console: Console, view: Calibration, rules: TierRules, locale: str) -> None:
    for line in calibration_lines(view, rules, locale):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def standing_lines(standing: dict[str, Any], rules: TierRules, locale: str) -> list[str]:
    """The fan card's "why this tier, what the next one needs" (``tier_standing`` of a fan document)."""
    tier = rules.get(standing["tier"])
    lines = [t(f"tiers.why.{standing['why']}", locale, tier=tier.name(locale), score=f"{standing['score']:g}",
               threshold=f"{tier.threshold:g}", pace=f"{standing['pace'] or 0:g}", days=rules.commitment_days,
               fraction=round(rules.demote_fraction * 100))]
    if standing["why"] == "pinned":
        return lines
    if standing["next_tier"] is None:
        return lines + [t("tiers.why.top", locale)]
    lines.append(t("tiers.why.next_score", locale, next=rules.name(standing["next_tier"], locale),
                   points=f"{standing['points_missing']:g}"))
    if standing["commitments_missing"] is not None:
        missing = [("part_commitments", standing["commitments_missing"]), ("part_tenure", standing["tenure_days_missing"]),
                   ("part_pace", standing["pace_missing"])]
        parts = [t(f"tiers.why.{key}", locale, n=f"{n:g}", days=rules.commitment_days) for key, n in missing if n]
        if parts:
            lines.append(t("tiers.why.next_pace", locale, parts=t("tiers.why.sep", locale).join(parts)))
    return lines
