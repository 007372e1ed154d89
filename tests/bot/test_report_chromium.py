"""The report rendered by a real browser (Debian's headless Chromium): the charts drew, the figures hold.

Three renders of the seeded community's report: Chromium's own DOM (``--dump-dom``) must carry the
database's figures; a screenshot of the page must not be blank; and a screenshot of every chart laid
out alone in a cell of its own must show coloured marks in each cell, where an empty control
chart shows none. Skipped only when ``chromium`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.report import write_report
from tests.bot.test_report import LINE_ON, assert_page_matches, crm_for, parse
from tests.crm.test_report_data import NOW, expected, seed

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
CELL_W, CELL_H, COLUMNS = 600, 300, 2
#: A chart drew when at least this share of its cell is inked and this many pixels are coloured
#: (the smallest mark is a gauge's sliver beside its legend swatch).
DREW, MARKS = 0.01, 120


def chromium(tmp: Path, url: str, *args: str) -> str:
    """Run headless Chromium once on ``url`` with a throwaway profile (removed afterwards); its stdout."""
    profile = tmp / "chromium-profile"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", *args, url]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def ink(image: object, box: tuple[int, int, int, int]) -> tuple[float, int]:
    """Within the box: the share of pixels that are not white (text, axes, marks), and how many
    are clearly coloured (bars, lines, segments: not white, grey or black)."""
    from PIL import Image, ImageChops

    assert isinstance(image, Image.Image)
    r, g, b = image.crop(box).convert("RGB").split()
    low = ImageChops.darker(ImageChops.darker(r, g), b)
    high = ImageChops.lighter(ImageChops.lighter(r, g), b)
    inked = low.point(lambda v: 255 if v < 235 else 0).histogram()[255]
    colour = ImageChops.subtract(high, low).point(lambda v: 255 if v > 60 else 0).histogram()[255]
    return inked / (low.width * low.height), colour


def charts_alone(html: str, chart_ids: list[str]) -> str:
    """The report with every chart pinned into a cell of a grid and everything else hidden, plus
    an empty control chart in the last cell."""
    cells = [*chart_ids, "control"]
    rules = ["body { visibility: hidden; }",
             "figure.chart { visibility: visible; position: fixed; margin: 0; overflow: hidden; background: #fff; "
             f"width: {CELL_W}px; height: {CELL_H}px; }}",
             "figure.chart figcaption { display: none; }"]
    for n, name in enumerate(cells):
        rules.append(f"#chart-{name} {{ left: {(n % COLUMNS) * CELL_W}px; top: {(n // COLUMNS) * CELL_H}px; }}")
    control = ('<figure class="chart" id="chart-control"><svg xmlns="http://www.w3.org/2000/svg" '
               'viewBox="0 0 720 280" width="100%"></svg></figure>')
    return html.replace("</head>", f"<style>{' '.join(rules)}</style></head>").replace("</main>", control + "</main>")


@pytest.fixture
async def report(engine, sessions, settings, tmp_path) -> tuple[Path, dict[str, int]]:
    ids = await seed(sessions, settings)
    path = await write_report(crm_for(engine, sessions, settings, line=LINE_ON), tmp_path / "report.html", now=NOW)
    return path, ids


async def test_chromium_draws_every_chart_and_shows_the_databases_figures(report, tmp_path):
    from PIL import Image

    path, ids = report
    dom = await asyncio.to_thread(chromium, tmp_path, path.as_uri(), "--dump-dom")
    page = parse(dom)
    assert_page_matches(page.figures, expected(ids), ids["drop"])

    full = tmp_path / "full.png"
    await asyncio.to_thread(chromium, tmp_path, path.as_uri(), f"--screenshot={full}", "--window-size=1000,2400")
    with Image.open(full) as shot:
        inked, colour = ink(shot, (0, 0, 1000, 2400))
    assert inked > 0.05 and colour > 20_000  # a page with charts, not a blank one

    chart_ids = [c for c in _figure_ids(path.read_text("utf-8"))]
    assert {"funnel", "tiers_over_time", "true_fans", "true_fans_weekly", "sla_pct", "sla_median", "engagement",
            "drops", "quota"} == set(chart_ids)
    grid = tmp_path / "charts.html"
    grid.write_text(charts_alone(path.read_text("utf-8"), chart_ids), encoding="utf-8")
    rows = math.ceil((len(chart_ids) + 1) / COLUMNS)
    shot_path = tmp_path / "charts.png"
    await asyncio.to_thread(chromium, tmp_path, grid.as_uri(), f"--screenshot={shot_path}",
                            f"--window-size={COLUMNS * CELL_W},{rows * CELL_H}")
    with Image.open(shot_path) as shot:
        assert shot.size == (COLUMNS * CELL_W, rows * CELL_H)
        share = {}
        for n, name in enumerate([*chart_ids, "control"]):
            x, y = (n % COLUMNS) * CELL_W, (n // COLUMNS) * CELL_H
            share[name] = ink(shot, (x, y, x + CELL_W, y + CELL_H))
    assert share.pop("control") == (0.0, 0)
    assert {name: value for name, value in share.items() if value[0] < DREW or value[1] < MARKS} == {}, share


def _figure_ids(html: str) -> list[str]:
    import re

    return re.findall(r'<figure class="chart" id="chart-([\w-]+)"', html)
