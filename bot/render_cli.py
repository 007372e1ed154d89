"""Terminal rendering of CRM documents (rich). Text comes from the message catalogue."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.table import Table

from bot.i18n import t
from bot.tiers_cli import standing_lines
from crm.tiers import TierRules


async def write_json_list(sink: TextIO, chunks: AsyncIterable[Iterable[dict[str, Any]]]) -> int:
    """A JSON list written item by item as the chunks come (``fans --json`` of 100k fans holds one
    chunk, not the list); the text is ``json.dumps(items, ensure_ascii=False, indent=2)``'s."""
    count = 0
    async for chunk in chunks:
        for item in chunk:
            text = orjson.dumps(item, option=orjson.OPT_INDENT_2).decode()
            sink.write(("[\n  " if count == 0 else ",\n  ") + text.replace("\n", "\n  "))
            count += 1
    sink.write("\n]\n" if count else "[]\n")
    return count


#: Characters written at a time by :func:`print_in_pieces`: at most 3 bytes each in UTF-8, a piece stays
#: below the 8 KiB that Python's text layer hands to the file as one write.
PIECE_CHARS = 2048


def print_in_pieces(console: Console, renderable: Any) -> None:
    """Print ``renderable`` as ``console.print`` would, in pieces smaller than a pipe's buffer.

    A single write larger than the pipe holds that the reader abandons half-way (``| head``) is cut
    short without an error by Python's text layer, so the command would end 0 with its rows dropped;
    written in pieces, the next piece meets the closed pipe and the command ends as ``--json`` does.
    """
    with console.capture() as captured:
        console.print(renderable)
    text = captured.get()
    for start in range(0, len(text), PIECE_CHARS):
        console.file.write(text[start:start + PIECE_CHARS])
    console.file.flush()


def fans_table(console: Console, docs: list[dict[str, Any]], locale: str) -> None:
    if not docs:
        console.print(t("cli.no_fans", locale), highlight=False)
        return
    table = Table(title=t("cli.fans_title", locale))
    for key in ("col_id", "col_name", "col_tier", "col_score", "col_platforms", "col_last_seen"):
        table.add_column(t(f"cli.{key}", locale), justify="right" if key in ("col_id", "col_score") else "left")
    for d in docs:
        platforms = ", ".join(sorted({i["platform"] for i in d["identities"]}))
        table.add_row(str(d["id"]), d["display_name"], d["tier"] + (" 📌" if d["tier_pinned"] else ""),
                      f"{d['score']:.1f}", platforms, (d["last_seen"] or "")[:16])
    print_in_pieces(console, table)


#: Platform names as their makers write them (not translated).
PLATFORMS = {"line": "LINE", "discord": "Discord"}


def kind_name(kind: str, locale: str) -> str:
    """An interaction kind in the creator's words, as the /fan card in Discord names it; a kind
    added later shows its key."""
    key = f"discord.kind.{kind}"
    text = t(key, locale)
    return kind if text == key else text


def fan_card(console: Console, d: dict[str, Any], locale: str, rules: TierRules | None = None) -> None:
    none = t("cli.none", locale)
    console.print(f"[bold]{t('cli.fan_title', locale, id=d['id'], name=d['display_name'])}[/bold]", highlight=False)
    console.print(t("cli.fan_tier", locale, tier=d["tier"] + (" 📌" if d["tier_pinned"] else ""),
                    score=f"{d['score']:.1f}"), highlight=False)
    if rules is not None and d.get("tier_standing"):
        for line in standing_lines(d["tier_standing"], rules, locale):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    if d["score_explained"]:
        table = Table(title=t("cli.fan_breakdown", locale), show_edge=False)
        for col in ("kind", "count", "points", "today"):
            table.add_column(t(f"cli.col_{col}", locale), justify="left" if col == "kind" else "right")
        for kind, e in sorted(d["score_explained"].items(), key=lambda item: -item[1]["decayed"]):  # most first
            table.add_row(kind_name(kind, locale), str(int(e["count"])), f"{e['points']:.1f}", f"{e['decayed']:.1f}")
        console.print(table)
    console.print(t("cli.fan_identities", locale, items=", ".join(
        f"{i['platform']}:{i['external_id']} ({i['display_name'] or '-'})" for i in d["identities"])),
        highlight=False, markup=False)
    console.print(t("cli.fan_preferences", locale, items=", ".join(d["preferences"]) or none), highlight=False)
    console.print(t("cli.fan_tags", locale, items=", ".join(d["tags"]) or none), highlight=False)
    if d["notes"]:
        console.print(t("cli.fan_notes", locale), highlight=False)
        for note in d["notes"]:
            console.print(f"  {note['at'][:16]}  {note['text']}", highlight=False, markup=False)
    conv = d.get("open_conversation")
    if conv:
        console.print(t("cli.fan_open_conv", locale, since=conv["waiting_since"][:16], due=conv["due_at"][:16],
                        overdue=t("cli.overdue", locale) if conv["overdue"] else ""), highlight=False)
    if d.get("interactions"):
        table = Table(title=t("cli.fan_recent", locale), show_edge=False)
        for col in ("at", "platforms", "kind", "amount", "summary"):
            table.add_column(t(f"cli.col_{col}", locale))
        for i in d["interactions"]:
            amount = f"{i['amount']} {i['currency']}" if i["amount"] is not None else ""
            table.add_row(i["at"][:16], PLATFORMS.get(i["platform"], i["platform"]), kind_name(i["kind"], locale),
                          amount, i["summary"] or "")
        console.print(table)


def stats(console: Console, data: dict[str, Any], locale: str) -> None:
    goal = data["true_fans"]
    console.print(t("cli.stats_goal", locale, tier=goal["tier"], count=goal["count"], goal=goal["goal"],
                    pct=goal["progress_pct"]), highlight=False)
    console.print(t("cli.stats_tiers", locale, fans=data["fans"]), highlight=False)
    table = Table()
    table.add_column(t("cli.col_tier", locale))
    table.add_column("#", justify="right")
    for tier in reversed(data["tiers"]):
        table.add_row(tier["name"], str(tier["count"]))
    console.print(table)
    if data["top"]:
        fans_table(console, data["top"], locale)
