"""The daily digest in words: sections shared by the terminal, the Discord embed and the LINE text.

Input is the digest JSON (:meth:`crm.digest.Digest.as_json`, also the outbox payload), so the
Discord sender can render a row queued by another instance. Every word comes from the catalogue
(``bot/i18n/<locale>.digest.toml``); fan names are shown as they are, never logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.text import Text

from bot.i18n import t

PLATFORMS = {"line": "LINE", "discord": "Discord"}


@dataclass(frozen=True)
class Section:
    """A heading, its lines (at most the digest's list limit), and how many more there are."""

    heading: str
    lines: list[str] = field(default_factory=list)
    more: int = 0


def _when(text: str | None) -> str:
    """``2026-11-22T09:00:00+08:00`` → ``11-22 09:00`` (already in the creator's time zone)."""
    return text[5:16].replace("T", " ") if text else ""


def _pct(value: float | None, locale: str) -> str:
    return t("digest.no_figure", locale) if value is None else f"{value:g}%"


def _hours(value: float | None, locale: str) -> str:
    return t("digest.no_figure", locale) if value is None else t("digest.hours", locale, value=_few_digits(value))


def _few_digits(hours: float) -> str:
    """Hours as a person says them: whole from 10 on (25.07 → 25), one decimal below (4.14 → 4.1)."""
    return f"{hours:.0f}" if hours >= 10 else f"{round(hours, 1):g}"


def title(d: dict[str, Any], locale: str) -> str:
    return t("digest.title", locale, date=d["generated_at"][:10])


def sections(d: dict[str, Any], locale: str) -> list[Section]:
    """The digest's sections in reading order: who waits, the promise, tiers, the care list, the goal."""
    counts = d["counts"]
    out = [_unanswered(d, locale)]
    sla = d["sla"]
    out.append(Section(t("digest.sla", locale, days=sla["window_days"]), [t(
        "digest.sla_line", locale, conversations=sla["conversations"], answered=sla["answered"],
        within=sla["within_sla"], pct=_pct(sla["within_sla_pct"], locale),
        median=_hours(sla["median_first_response_hours"], locale), breaches=sla["breaches"])]))
    out.append(Section(t("digest.tier_changes", locale, since=_when(d["since"]), count=counts["tier_changes"]),
                       [t("digest.tier_change_line", locale, arrow="⬆️" if c["direction"] == "up" else "⬇️",
                          name=c["display_name"], before=c["from_tier"] or t("digest.tier_new", locale),
                          after=c["to_tier"]) for c in d["tier_changes"]],
                       counts["tier_changes"] - len(d["tier_changes"])))
    out.append(Section(t("digest.quiet", locale, days=d["quiet_after_days"], count=counts["quiet_superfans"]),
                       [t("digest.quiet_line", locale, name=q["display_name"], tier=q["tier"], days=q["days_quiet"])
                        for q in d["quiet_superfans"]], counts["quiet_superfans"] - len(d["quiet_superfans"])))
    out.append(Section(t("digest.asked", locale, count=counts["asked_after_you"]),
                       [t("digest.asked_line", locale, name=a["display_name"], tier=a["tier"],
                          platform=PLATFORMS.get(a["platform"], a["platform"]), phrase=a["phrase"], at=_when(a["at"]))
                        for a in d["asked_after_you"]], counts["asked_after_you"] - len(d["asked_after_you"])))
    out.append(Section(t("digest.anniversaries", locale, count=counts["anniversaries"]),
                       [t("digest.anniversary_line", locale, name=a["display_name"], tier=a["tier"], years=a["years"])
                        for a in d["anniversaries"]], counts["anniversaries"] - len(d["anniversaries"])))
    if "rising" in d:  # a digest queued by an older superfan has none
        out.append(Section(t("digest.rising", locale, count=counts["rising"]),
                           [t("digest.rising_line", locale, name=r["display_name"], tier=r["tier"],
                              next=r["next_tier"], score=r["score"], threshold=r["threshold"]) for r in d["rising"]],
                           counts["rising"] - len(d["rising"])))
    if d.get("drops"):
        out.append(Section(t("digest.drops", locale), [_drop_line(x, locale) for x in d["drops"]]))
    tf = d["true_fans"]
    out.append(Section(t("digest.true_fans", locale, tier=tf["tier"], count=tf["count"], goal=tf["goal"],
                         pct=tf["progress_pct"])))
    return out


def _drop_line(x: dict[str, Any], locale: str) -> str:
    flags = (t("digest.drop_sponsored", locale) if x["sponsored"] else "") + \
            (t("digest.drop_evergreen", locale) if x["evergreen"] else "")
    return t("digest.drop_line", locale, id=x["id"], tier=x["tier"], status=t(f"drops.status.{x['status']}", locale),
             sent=x["sent"], failed=x["failed"], pending=x["pending"], quota=x["quota_used"], flags=flags)


def _unanswered(d: dict[str, Any], locale: str) -> Section:
    counts = d["counts"]
    if not counts["unanswered"]:
        return Section(t("digest.unanswered_none", locale))
    lines = [t("digest.unanswered_line", locale, mark=t("digest.overdue_mark", locale) if u["overdue"] else "",
               name=u["display_name"], tier=u["tier"], platform=PLATFORMS.get(u["platform"], u["platform"]),
               hours=_few_digits(u["hours_waiting"]), due=_when(u["due_at"])) for u in d["unanswered"]]
    return Section(t("digest.unanswered", locale, count=counts["unanswered"], overdue=counts["overdue"]), lines,
                   counts["unanswered"] - len(d["unanswered"]))


def print_digest(console: Console, d: dict[str, Any], locale: str) -> None:
    """``superfan digest`` on a terminal."""
    console.print(Text(title(d, locale), style="bold"))
    for section in sections(d, locale):
        console.print()
        console.print(Text(section.heading, style="bold"))
        for line in section.lines:
            console.print(f"  {line}", highlight=False, markup=False)
        if section.more > 0:
            console.print(f"  {t('digest.more', locale, count=section.more)}", highlight=False, markup=False)


def line_text(d: dict[str, Any], locale: str) -> str:
    """The short version pushed to the creator's own LINE (one message: counts only, no names)."""
    counts, tf = d["counts"], d["true_fans"]
    return t("digest.line_text", locale, date=d["generated_at"][:10], unanswered=counts["unanswered"],
             overdue=counts["overdue"], days=d["sla"]["window_days"], pct=_pct(d["sla"]["within_sla_pct"], locale),
             changes=counts["tier_changes"],
             care=counts["quiet_superfans"] + counts["asked_after_you"] + counts["anniversaries"],
             tier=tf["tier"], count=tf["count"], goal=tf["goal"])
