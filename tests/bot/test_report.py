"""``superfan report``: the page a creator opens shows exactly the database's figures, in their language.

The community is the one of tests/crm/test_report_data.py (built through the real crm functions at
known times); every figure in the page carries ``data-figure`` and is compared with it. The
headless-browser checks live in tests/bot/test_report_chromium.py.
"""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.app import Crm, open_crm
from bot.cli import app
from bot.config import Config, LineConfig, load_config
from bot.report import write_report
from bot.sandbox.line_emulator import LineEmulator
from crm.report_data import WEEKS_SHOWN
from tests.crm.test_report_data import NOW, WEEKS, expected, seed


class Figures(HTMLParser):
    """``data-figure`` → text, ``data-empty`` sections, chart ids, the ``lang`` of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, str] = {}
        self.empty: list[str] = []
        self.charts: list[str] = []
        self.lang = ""
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang") or ""
        if a.get("data-empty"):
            self.empty.append(str(a["data-empty"]))
        if tag == "svg" and a.get("data-chart"):
            self.charts.append(str(a["data-chart"]))
        self._open.append((tag, a.get("data-figure")))
        if a.get("data-figure"):
            self.figures[str(a["data-figure"])] = ""

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, key in self._open:
            if key:
                self.figures[key] += data


def parse(html: str) -> Figures:
    found = Figures()
    found.feed(html)
    return found


def number(text: str) -> float | None:
    """``1,234`` → 1234.0, ``40%`` → 40.0, ``2 小時`` → 2.0, ``–`` → None."""
    match = re.search(r"-?[\d,]+(?:\.\d+)?", text)
    return float(match.group().replace(",", "")) if match else None


def weekly(figures: dict[str, str], key: str) -> list[float | None]:
    """A weekly row's last three weeks (the seeded ones); the weeks before them must be empty."""
    values = [number(figures[f"{key}.{n}"]) for n in range(WEEKS_SHOWN)]
    assert all(v in (0, None) for v in values[: WEEKS_SHOWN - WEEKS]), (key, values)
    return values[WEEKS_SHOWN - WEEKS:]


def assert_page_matches(figures: dict[str, str], want: dict[str, Any], drop_id: int) -> None:
    """Every figure the seeded community must show, read back from the page."""
    assert number(figures["fans"]) == want["fans"]
    assert number(figures["interactions"]) == want["interactions"]
    for key, (count, at_least, pct) in want["funnel"].items():
        assert number(figures[f"funnel.{key}.count"]) == count
        assert number(figures[f"funnel.{key}.at_least"]) == at_least
        assert number(figures[f"funnel.{key}.of_previous"]) == pct
    for key, per_week in want["tiers_by_week"].items():
        assert weekly(figures, f"tiers.{key}") == per_week
    assert weekly(figures, "true_fans.weekly") == want["true_fans_weekly"]
    assert number(figures["true_fans.count"]) == want["true_fans_weekly"][-1]
    assert number(figures["true_fans.goal"]) == 1000
    for n, (waits, within, late, undecided, pct, median) in enumerate(want["sla_weeks"]):
        assert [weekly(figures, f"sla.{k}")[n] for k in ("waits", "within", "breaches", "undecided", "pct", "median")] \
            == [waits, within, late, undecided, pct, median]
    for kind, per_week in want["engagement"].items():
        assert weekly(figures, f"engagement.{kind}") == per_week
    assert [figures[f"top.{n}.name"] for n in range(1, 5)] == want["top_names"]
    assert "top.5.name" not in figures and "不公開" not in figures.values()
    for platform, counts in want["drop"].items():
        for state, value in counts.items():
            assert number(figures[f"drops.{drop_id}.{platform}.{state}"]) == value
    quota = want["quota"]
    assert [number(figures[k]) for k in ("quota.pushes", "quota.drops", "quota.replies", "quota.quota")] \
        == [quota["pushes"], quota["drop_messages"], quota["replies"], 200]


#: LINE on with a quota of 200, but no token in the environment: LINE itself is not asked.
LINE_ON = LineConfig(enabled=True, monthly_quota=200, channel_access_token_env="REPORT_TEST_NO_TOKEN")


def crm_for(engine: Any, sessions: Any, settings: Any, **config: Any) -> Crm:
    cfg = Config(**config)
    return Crm(cfg, engine, sessions, settings)


async def test_every_figure_in_the_page_is_the_databases(engine, sessions, settings, tmp_path):
    ids = await seed(sessions, settings)
    crm = crm_for(engine, sessions, settings, line=LINE_ON)
    path = await write_report(crm, tmp_path / "out" / "report.html", now=NOW)
    assert path == (tmp_path / "out" / "report.html").resolve()
    html = path.read_text(encoding="utf-8")
    page = parse(html)
    assert_page_matches(page.figures, expected(ids), ids["drop"])
    assert page.lang == "zh-Hant-TW" and "粉絲分層漏斗" in html and "鐵粉" in html
    assert page.empty == []  # no section says "no data"
    assert {"funnel", "tiers", "engagement", "sla_pct", "sla_median", "quota"} <= set(page.charts)


async def test_the_page_needs_nothing_from_the_network(engine, sessions, settings, tmp_path):
    await seed(sessions, settings)
    html = (await write_report(crm_for(engine, sessions, settings), tmp_path / "r.html", now=NOW)).read_text("utf-8")
    assert "<script" not in html.lower()
    # the only URLs are the SVG namespace: no stylesheet, font, image or script to fetch
    assert set(re.findall(r"(?:https?:)?//[\w.-]+", html)) == {"http://www.w3.org"}
    assert not re.search(r"@import|url\((?!#)", html)


async def test_names_and_drop_texts_are_shown_as_text_never_as_markup(engine, sessions, settings, tmp_path):
    from crm.ingest import record_many
    from tests.crm.test_report_data import T3, item

    ids = await seed(sessions, settings)
    name = '<img src=x onerror="alert(1)">&amp;'
    async with sessions.begin() as s:
        await record_many(s, [item("Ux", "purchase", T3, amount=2000)._replace(display_name=name)], settings, T3)
    html = (await write_report(crm_for(engine, sessions, settings), tmp_path / "r.html", now=NOW)).read_text("utf-8")
    assert "<img" not in html and "<script" not in html.lower()
    page = parse(html)
    assert page.figures["top.1.name"] == name  # the browser shows exactly what the fan called themselves
    assert page.figures[f"drops.{ids['drop']}.line.sent"] == "1"


async def test_english_with_the_configs_locale(engine, sessions, settings, tmp_path):
    ids = await seed(sessions, settings)
    crm = crm_for(engine, sessions, settings)
    html = (await write_report(crm, tmp_path / "r.html", now=NOW, locale="en")).read_text("utf-8")
    page = parse(html)
    assert page.lang == "en" and "Tier funnel" in html and "True fan" in html and "粉絲分層漏斗" not in html
    assert page.figures[f"drops.{ids['drop']}.line.failed"] == "1"
    assert [page.figures[f"top.{n}.tier"] for n in range(1, 5)] == ["True fan", "Close friend", "Passer-by", "Passer-by"]
    assert "路人" not in html and "摯友" not in html and "粉絲" not in html  # tiers are named in English throughout
    assert page.figures["tiers.recorded_from"].startswith("Tier changes are on record from 2026-11-10;")


async def test_line_s_own_count_is_shown_when_line_is_on(engine, sessions, settings, tmp_path, monkeypatch):
    await seed(sessions, settings)
    async with LineEmulator() as emu:
        emu.total_usage = 57  # LINE counts a broadcast sent from its console too
        monkeypatch.setenv("REPORT_TEST_LINE_TOKEN", emu.access_token)
        crm = crm_for(engine, sessions, settings, line=LineConfig(
            enabled=True, api_base=emu.base_url, monthly_quota=200, channel_access_token_env="REPORT_TEST_LINE_TOKEN"))
        html = (await write_report(crm, tmp_path / "r.html", now=NOW)).read_text("utf-8")
    page = parse(html)
    assert "57" in page.figures["quota.line_says"]
    assert "57 / 200" in html  # the gauge goes by LINE's figure, superfan's own (3) beside it
    assert [c.path for c in emu.calls] == ["/v2/bot/message/quota/consumption"]


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)
    path = tmp_path / "superfan.toml"
    path.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "main.db"}"\n', encoding="utf-8")
    return path


def test_superfan_report_on_an_empty_database_says_there_is_no_data_yet(config_path, tmp_path):
    result = CliRunner().invoke(app, ["--config", str(config_path), "report"])
    assert result.exit_code == 0, result.stderr
    written = tmp_path / "superfan-report.html"
    assert result.stdout == f"報告已寫入 {written}\n"
    page = parse(written.read_text("utf-8"))
    assert {"report", "funnel", "tiers_over_time", "sla", "engagement", "top", "drops", "quota"} <= set(page.empty)
    assert number(page.figures["fans"]) == 0 and page.figures["sla.recent.pct"] == "–"
    assert "還沒有資料" in written.read_text("utf-8")


def test_superfan_report_out_and_now_in_english(config_path, tmp_path):
    config_path.write_text(config_path.read_text() + '[creator]\nlocale = "en"\n', encoding="utf-8")
    asyncio.run(_seed_file(config_path))
    out = tmp_path / "reports" / "november.html"
    result = CliRunner().invoke(app, ["--config", str(config_path), "report", "--out", str(out),
                                      "--now", NOW.isoformat()])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"Report written to {out}\n"
    page = parse(out.read_text("utf-8"))
    assert page.lang == "en" and number(page.figures["fans"]) == 5
    assert [page.figures[f"top.{n}.name"] for n in range(1, 5)] == expected({})["top_names"]
    into = CliRunner().invoke(app, ["--config", str(config_path), "report", "--out", str(out.parent)])
    assert into.stdout == f"Report written to {out.parent / 'superfan-report.html'}\n"  # a folder: written into it
    assert sorted(p.name for p in out.parent.iterdir()) == ["november.html", "superfan-report.html"]  # nothing half-written left
    bad = CliRunner().invoke(app, ["--config", str(config_path), "report", "--now", "yesterday"])
    assert bad.exit_code == 2 and not (tmp_path / "superfan-report.html").exists()


async def _seed_file(config_path: Path) -> None:
    async with open_crm(load_config(str(config_path))) as crm:
        await seed(crm.sessions, crm.settings)
