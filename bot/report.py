"""``superfan report``: the community's figures as one self-contained HTML file.

Tier funnel, fans per tier week by week, true fans against the goal, the reply promise, engagement
by kind, top fans, drop results and the LINE quota. Charts are inline SVG (``bot/report_svg.py``)
next to tables of the same numbers; no script, font, image or stylesheet is fetched, so the file
opens from disk, offline, and can be mailed or printed. Every word comes from the catalogue
(``bot/i18n/<locale>.report.toml``), zh-TW unless the config says ``en``.

Each figure in a table carries ``data-figure="<section>.<…>"`` so a test (or a curious creator
with a DOM inspector) can check it against the database. ``superfan demo`` calls
:func:`write_report` on its own database.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from datetime import datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from bot import report_svg as svg
from bot.i18n import pick_locale, t
from crm.report_data import STATES

if TYPE_CHECKING:
    from bot.app import Crm
    from bot.config import Config
    from crm.report_data import ReportData
    from crm.settings import CrmSettings

log = logging.getLogger(__name__)
DEFAULT_OUT = Path("superfan-report.html")
PLATFORMS = {"line": "LINE", "discord": "Discord"}
#: How long ``superfan report`` waits for LINE's own count of this month's messages.
LINE_TIMEOUT_S = 5.0
LANG = {"zh-TW": "zh-Hant-TW", "en": "en"}
#: Latin faces first (they have no Han glyphs, so Chinese falls through to a Traditional Chinese
#: face rather than a Japanese or Simplified one), then the usual TC faces of each system, then
#: colour emoji (fans' names are full of them).
FONTS = ('-apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, "PingFang TC", '
         '"Hiragino Sans TC", "Microsoft JhengHei", "Noto Sans TC", "Noto Sans CJK TC", "Source Han Sans TC", '
         '"Heiti TC", system-ui, sans-serif, "Apple Color Emoji", "Segoe UI Emoji", "Noto Color Emoji"')
CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: #1f2328; font-family: FONTS; line-height: 1.55;
       -webkit-font-smoothing: antialiased; }
main { max-width: 960px; margin: 0 auto; padding: 32px 20px 64px; }
h1 { font-size: 1.9rem; margin: 0 0 4px; letter-spacing: .01em; }
h2 { font-size: 1.3rem; margin: 0 0 4px; padding-top: 8px; }
.sub, .lead, .note { color: #59636e; margin: 0 0 12px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 12px; margin: 20px 0 8px; }
.tiles div { border: 1px solid #d0d7de; border-radius: 8px; padding: 12px 14px; }
.tiles dt { color: #59636e; font-size: .9rem; }
.tiles dd { margin: 0; font-size: 1.6rem; font-weight: 700; font-variant-numeric: tabular-nums; }
section { border-top: 1px solid #d0d7de; margin-top: 28px; padding-top: 12px; break-inside: avoid; }
figure.chart { margin: 8px 0; }
figure.chart figcaption { color: #59636e; font-size: .9rem; }
.empty { padding: 18px; border: 1px dashed #8c959f; border-radius: 8px; color: #59636e; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; margin: 8px 0; }
th, td { border-bottom: 1px solid #d0d7de; padding: 4px 8px; text-align: right; white-space: nowrap; }
td.text { white-space: normal; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
thead th { color: #59636e; font-weight: 600; }
details summary { cursor: pointer; color: #59636e; }
@media print { details { display: block; } main { padding: 0; } section { break-inside: avoid; } }
""".replace("FONTS", FONTS)


async def write_report(crm: Crm, out: Path, *, now: datetime, locale: str | None = None) -> Path:
    """Build the report as at ``now`` from ``crm``'s database and write it to ``out`` (replaced
    whole, never left half-written); returns the absolute path. With LINE on, LINE's own count of
    this month's messages is asked for (a few seconds at most) and shown beside superfan's."""
    from crm.report_data import build_report

    locale = pick_locale(locale or crm.settings.locale)
    async with crm.read() as session:
        data = await build_report(session, crm.settings, now, line_quota=_line_quota(crm.config))
    html = render_report(data, crm.settings, locale, line_used=await line_usage(crm.config))
    return await asyncio.to_thread(_write, out, html)


def _write(out: Path, html: str) -> Path:
    """Write ``html`` to ``out`` (into it, as ``superfan-report.html``, when it is a folder)."""
    target = out.expanduser().resolve()
    if target.is_dir():
        target = target / DEFAULT_OUT.name
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        partial.write_text(html, encoding="utf-8")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _line_quota(config: Config) -> int | None:
    return config.line.monthly_quota if config.line.enabled else None


async def line_usage(config: Config) -> int | None:
    """LINE's count of this month's messages (``GET /v2/bot/message/quota/consumption``), or None
    when LINE is off, its token is not set, or it does not answer in time."""
    if not config.line.enabled or not os.environ.get(config.line.channel_access_token_env):
        return None
    from linebot.v3.messaging import AsyncApiClient, AsyncMessagingApi, Configuration

    settings = Configuration(host=config.line.api_base.rstrip("/"),
                             access_token=os.environ[config.line.channel_access_token_env])
    try:
        async with AsyncApiClient(settings) as client:
            answer = await AsyncMessagingApi(client).get_message_quota_consumption(_request_timeout=LINE_TIMEOUT_S)
        return int(answer.total_usage)
    except Exception as exc:  # the report is still worth having with superfan's own count
        log.warning("report: LINE's message count unavailable (%s)", type(exc).__name__)
        return None


def render_report(data: ReportData, settings: CrmSettings, locale: str, *, line_used: int | None = None) -> str:
    """The whole HTML document."""
    tz = settings.scoring.tz
    weeks = [w.strftime("%m/%d") for w in data.weeks]
    r = _Render(data, settings, locale, weeks)
    body = [
        "<header>",
        f"<h1>{escape(t('report.title', locale))}</h1>",
        f'<p class="sub">{escape(t("report.subtitle", locale, at=data.generated_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"), timezone=data.timezone))}</p>',
        '<dl class="tiles">',
        _tile(t("report.fans_total", locale), "fans", f"{data.fans:,}"),
        _tile(t("report.interactions_total", locale, weeks=len(data.weeks)), "interactions", f"{data.interactions:,}"),
        _tile(t("report.true_fans.count", locale), "true_fans.count", f"{data.true_fans.count:,}",
              f" / {data.true_fans.goal:,}"),
        _tile(t("report.sla.tile", locale), "sla.recent.pct", r.pct(data.sla_recent.within_sla_pct)),
        "</dl>",
        "</header>",
    ]
    if data.empty:
        body.append(f'<p class="empty" data-empty="report">{escape(t("report.no_data", locale))} '
                    f'{escape(t("report.no_data_hint", locale))}</p>')
    body += [r.funnel(), r.tiers_over_time(), r.true_fans(), r.sla(), r.engagement(), r.top(), r.drops(),
             r.quota(line_used)]
    return (f'<!doctype html>\n<html lang="{LANG.get(locale, "zh-Hant-TW")}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(t('report.title', locale))}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")


def _tile(label: str, key: str, value: str, after: str = "") -> str:
    return f'<div><dt>{escape(label)}</dt><dd><span data-figure="{key}">{escape(value)}</span>{escape(after)}</dd></div>'


def _cell(key: str, value: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f'<td{attr} data-figure="{escape(key)}">{escape(value)}</td>'


def _table(head: Iterable[str], rows: Iterable[str], *, folded: bool, locale: str, text_cols: int = 1) -> str:
    """A table; its first ``text_cols`` columns are words (left-aligned), the rest numbers."""
    heads = "".join(f'<th class="text">{escape(h)}</th>' if n < text_cols else f"<th>{escape(h)}</th>"
                    for n, h in enumerate(head))
    table = f"<table><thead><tr>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    if folded:
        return f"<details><summary>{escape(t('report.table_caption', locale))}</summary>{table}</details>"
    return table


class _Render:
    """One method per section; each returns a ``<section>`` with its chart(s) and table."""

    def __init__(self, data: ReportData, settings: CrmSettings, locale: str, weeks: list[str]) -> None:
        self.data, self.settings, self.locale, self.weeks = data, settings, locale, weeks
        self.tz = settings.scoring.tz

    def t(self, key: str, **params: object) -> str:
        return t(f"report.{key}", self.locale, **params)

    def pct(self, value: float | None) -> str:
        return self.t("none") if value is None else f"{value:g}%"

    def hours(self, value: float | None) -> str:
        return self.t("none") if value is None else self.t("hours", value=f"{value:g}")

    def section(self, name: str, title: str, lead: str, *content: str) -> str:
        return (f'<section id="{name}"><h2>{escape(title)}</h2><p class="lead">{escape(lead)}</p>'
                f"{''.join(content)}</section>")

    def chart(self, name: str, drawing: str, caption: str = "") -> str:
        cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        return f'<figure class="chart" id="chart-{name}">{drawing}{cap}</figure>'

    def empty(self, name: str, key: str = "no_data") -> str:
        return f'<p class="empty" data-empty="{name}">{escape(self.t(key))}</p>'

    def tier_name(self, key: str) -> str:
        return self.settings.tiers.name(key, self.locale)

    def funnel(self) -> str:
        steps = self.data.funnel
        title, lead = self.t("funnel.title"), self.t("funnel.lead")
        if not self.data.fans:
            return self.section("funnel", title, lead, self.empty("funnel"))
        drawn = [(self.tier_name(s.key), s.at_least, self.t("funnel.caption", at_least=f"{s.at_least:,}", pct=self.pct(s.of_previous_pct))
                  if s.of_previous_pct is not None else self.t("funnel.caption_first", at_least=f"{s.at_least:,}"))
                 for s in steps]
        rows = [f"<tr><td>{escape(self.tier_name(s.key))}</td>{_cell(f'funnel.{s.key}.count', f'{s.count:,}')}"
                f"{_cell(f'funnel.{s.key}.at_least', f'{s.at_least:,}')}"
                f"{_cell(f'funnel.{s.key}.of_previous', self.pct(s.of_previous_pct))}</tr>" for s in reversed(steps)]
        return self.section("funnel", title, lead,
                            self.chart("funnel", svg.funnel("funnel", title, drawn)),
                            _table([self.t("funnel.tier"), self.t("funnel.count"), self.t("funnel.at_least"),
                                    self.t("funnel.of_previous")], rows, folded=False, locale=self.locale))

    def weekly_table(self, prefix: str, columns: list[tuple[str, str]], values: dict[str, list[str]]) -> str:
        """Rows are weeks; ``columns`` (key, heading); ``values[key][week]`` already formatted."""
        rows = [f"<tr><td>{escape(self.t('week_of', date=week))}</td>"
                + "".join(_cell(f"{prefix}.{key}.{n}", values[key][n]) for key, _ in columns) + "</tr>"
                for n, week in enumerate(self.weeks)]
        return _table([self.t("week"), *(h for _, h in columns)], rows, folded=True, locale=self.locale)

    def tiers_over_time(self) -> str:
        title, lead = self.t("tiers_over_time.title"), self.t("tiers_over_time.lead")
        by_week = self.data.tiers_by_week
        if not any(any(v) for v in by_week.values()):
            return self.section("tiers_over_time", title, lead, self.empty("tiers_over_time"))
        keys = list(by_week)
        series = [(self.tier_name(k), by_week[k]) for k in keys]
        since = self.data.tiers_recorded_from
        note = []
        if since is not None:
            text = self.t("tiers_over_time.recorded_from", date=since.astimezone(self.tz).strftime("%Y-%m-%d"))
            note.append(f'<p class="note" data-figure="tiers.recorded_from">{escape(text)}</p>')
        return self.section("tiers_over_time", title, lead, *note,
                            self.chart("tiers_over_time", svg.stacked_columns("tiers", title, self.weeks, series)),
                            self.weekly_table("tiers", [(k, self.tier_name(k)) for k in keys],
                                              {k: [f"{v:,}" for v in by_week[k]] for k in keys}))

    def true_fans(self) -> str:
        tf = self.data.true_fans
        tier = self.tier_name(tf.tier)
        title, lead = self.t("true_fans.title"), self.t("true_fans.lead", tier=tier, goal=f"{tf.goal:,}")
        progress = self.t("true_fans.progress", count=f"{tf.count:,}", goal=f"{tf.goal:,}", pct=f"{tf.progress_pct:g}")
        gauge = svg.segments("true_fans", title, [(tier, tf.count)], tf.goal, caption=progress)
        table = _table([self.t("true_fans.count"), self.t("true_fans.goal"), self.t("true_fans.pct")],
                       [f"<tr>{_cell('true_fans.count_table', f'{tf.count:,}')}{_cell('true_fans.goal', f'{tf.goal:,}')}"
                        f"{_cell('true_fans.progress_pct', f'{tf.progress_pct:g}%')}</tr>"], folded=False, locale=self.locale)
        parts = [self.chart("true_fans", gauge), table]
        if any(tf.weekly):
            weekly = svg.stacked_columns("true_fans_weekly", self.t("true_fans.weekly"), self.weeks,
                                         [(self.t("true_fans.series"), tf.weekly)], height=220)
            parts += [self.chart("true_fans_weekly", weekly, self.t("true_fans.weekly")),
                      self.weekly_table("true_fans", [("weekly", self.t("true_fans.count"))],
                                        {"weekly": [f"{v:,}" for v in tf.weekly]})]
        return self.section("true_fans", title, lead, *parts)

    def sla(self) -> str:
        title, lead = self.t("sla.title"), self.t("sla.lead")
        recent = self.data.sla_recent
        decided = recent.within_sla + recent.breaches
        summary = self.t("sla.recent", pct=self.pct(recent.within_sla_pct), within=recent.within_sla,
                         decided=decided, median=self.hours(recent.median_first_response_hours),
                         breaches=recent.breaches)
        weeks = self.data.sla_weeks
        if not any(w.waits for w in weeks):
            note = f'<p class="note">{escape(summary)}</p>' if recent.conversations else ""
            return self.section("sla", title, lead, note, self.empty("sla"))
        promise = self.settings.sla.reply_within_hours
        pct_chart = svg.percent_columns("sla_pct", self.t("sla.pct_chart"), self.weeks,
                                        [w.within_sla_pct for w in weeks], none_text=self.t("none"))
        median_chart = svg.line("sla_median", self.t("sla.median_chart"), self.weeks,
                                [w.median_first_response_hours for w in weeks], unit="h",
                                reference=(promise, self.t("sla.promise", hours=f"{promise:g}")))
        cols = [("waits", self.t("sla.waits")), ("within", self.t("sla.within")), ("breaches", self.t("sla.breaches")),
                ("undecided", self.t("sla.undecided")), ("pct", self.t("sla.pct")), ("median", self.t("sla.median"))]
        values = {"waits": [f"{w.waits:,}" for w in weeks], "within": [f"{w.within_sla:,}" for w in weeks],
                  "breaches": [f"{w.breaches:,}" for w in weeks], "undecided": [f"{w.undecided:,}" for w in weeks],
                  "pct": [self.pct(w.within_sla_pct) for w in weeks],
                  "median": [self.hours(w.median_first_response_hours) for w in weeks]}
        return self.section("sla", title, lead, f'<p class="note" data-figure="sla.recent">{escape(summary)}</p>',
                            self.chart("sla_pct", pct_chart, self.t("sla.pct_chart")),
                            self.chart("sla_median", median_chart, self.t("sla.median_chart")),
                            self.weekly_table("sla", cols, values))

    def kind_name(self, kind: str) -> str:
        name = t(f"report.kind.{kind}", self.locale)
        return kind if name == f"report.kind.{kind}" else name

    def engagement(self) -> str:
        title, lead = self.t("engagement.title"), self.t("engagement.lead")
        found = self.data.engagement
        if not any(any(v) for v in found.values()):
            return self.section("engagement", title, lead, self.empty("engagement"))
        kinds = list(found)
        drawing = svg.stacked_columns("engagement", title, self.weeks, [(self.kind_name(k), found[k]) for k in kinds])
        return self.section("engagement", title, lead, self.chart("engagement", drawing),
                            self.weekly_table("engagement", [(k, self.kind_name(k)) for k in kinds],
                                              {k: [f"{v:,}" for v in found[k]] for k in kinds}))

    def top(self) -> str:
        fans = self.data.top_fans
        title, lead = self.t("top.title", n=len(fans) or 10), self.t("top.lead")
        if not fans:
            return self.section("top", title, lead, self.empty("top"))
        rows = [f"<tr>{_cell(f'top.{f.rank}.rank', str(f.rank))}{_cell(f'top.{f.rank}.name', f.display_name, 'text')}"
                f"{_cell(f'top.{f.rank}.tier', self.tier_name(f.tier), 'text')}{_cell(f'top.{f.rank}.score', f'{f.score:,.1f}')}"
                f"{_cell(f'top.{f.rank}.last_seen', f.last_seen.astimezone(self.tz).strftime('%Y-%m-%d'))}</tr>"
                for f in fans]
        head = [self.t("top.rank"), self.t("top.name"), self.t("top.tier"), self.t("top.score"), self.t("top.last_seen")]
        return self.section("top", title, lead, _table(head, rows, folded=False, locale=self.locale, text_cols=3))

    def drops(self) -> str:
        title, lead = self.t("drops.title"), self.t("drops.lead")
        if not self.data.drops:
            return self.section("drops", title, lead, self.empty("drops", "drops.none"))
        bars: list[tuple[str, list[int]]] = []
        rows = []
        for d in self.data.drops:
            for platform, counts in d.platforms.items():
                where = PLATFORMS.get(platform, platform)
                bars.append((f"#{d.drop_id} {where}", [counts[s] for s in STATES]))
                rows.append(f'<tr><td class="text">#{d.drop_id} {escape(d.text)}</td>'
                            f"<td>{d.created_at.astimezone(self.tz).strftime('%Y-%m-%d')}</td>"
                            f'<td class="text">{escape(self.t("drops.min_tier_value", tier=self.tier_name(d.min_tier)))}</td>'
                            f'<td class="text">{escape(where)}</td>'
                            + "".join(_cell(f"drops.{d.drop_id}.{platform}.{s}", f"{counts[s]:,}") for s in STATES)
                            + "</tr>")
        names = [self.t(f"drops.{s}") for s in STATES]
        head = [self.t("drops.drop"), self.t("drops.created"), self.t("drops.min_tier"), self.t("drops.platform"), *names]
        parts = [self.chart("drops", svg.stacked_rows("drops", title, names, bars))] if any(sum(v) for _, v in bars) else []
        return self.section("drops", title, lead, *parts,
                            _table(head, rows, folded=False, locale=self.locale, text_cols=4))

    def quota(self, line_used: int | None) -> str:
        q = self.data.line_quota
        title, lead = self.t("quota.title"), self.t("quota.lead", month=q.month)
        if q.quota is None and line_used is None and not (q.used or q.replies):
            return self.section("quota", title, lead, self.empty("quota", "quota.off"))
        notes = []
        if line_used is not None:
            notes.append(f'<p class="note" data-figure="quota.line_says">{escape(self.t("quota.line_says", used=f"{line_used:,}"))}</p>')
        elif q.quota is not None:
            notes.append(f'<p class="note">{escape(self.t("quota.line_unreachable"))}</p>')
        used = line_used if line_used is not None else q.used
        caption = (self.t("quota.used", used=f"{used:,}", quota=f"{q.quota:,}", pct=f"{100.0 * used / q.quota:.1f}")
                   if q.quota else self.t("quota.used_no_quota", used=f"{used:,}"))
        parts = [(self.t("quota.pushes"), q.pushes), (self.t("quota.drops"), q.drop_messages)]
        if line_used is not None and line_used > q.used:
            parts.append(("LINE", line_used - q.used))  # sent from elsewhere (LINE Official Account Manager)
        drawing = svg.segments("quota", title, parts, q.quota, caption=caption)
        table = _table([self.t("quota.pushes"), self.t("quota.drops"), self.t("quota.replies_head"),
                        self.t("quota.quota_head")],
                       [f"<tr>{_cell('quota.pushes', f'{q.pushes:,}')}{_cell('quota.drops', f'{q.drop_messages:,}')}"
                        f"{_cell('quota.replies', f'{q.replies:,}')}"
                        f"{_cell('quota.quota', f'{q.quota:,}' if q.quota is not None else self.t('none'))}</tr>"],
                       folded=False, locale=self.locale)
        return self.section("quota", title, lead, *notes, self.chart("quota", drawing),
                            f'<p class="note">{escape(self.t("quota.estimate", pushes=q.pushes, drops=q.drop_messages))}</p>',
                            table)


async def report_command(out: Path, now: str | None = None) -> None:
    """``superfan report [--out PATH] [--now ISO]``: write the report and print where."""
    from bot.app import open_crm
    from bot.cli import out as console
    from bot.cli_support import current_config, now_from

    async with open_crm(current_config()) as crm:
        path = await write_report(crm, out, now=now_from(now))
    console.print(t("report.saved", crm.settings.locale, path=path), highlight=False, markup=False, soft_wrap=True)
