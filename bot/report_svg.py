"""The report's charts, drawn as inline SVG strings (no JavaScript, no fonts or files to fetch).

Every series has a colour from the Okabe–Ito palette (distinguishable with the common colour
vision deficiencies) *and* a pattern of its own, every bar carries its number or a ``<title>``,
and each chart sits beside a table of the same figures: the report reads in greyscale and in print.
Texts are passed in already translated; everything is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH = 720
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999933", "#882255")
#: One overlay per series: nothing, diagonal lines, cross-hatch, dots, horizontals, verticals, …
_MARKS = (
    "",
    '<path d="M0,8 L8,0" stroke="#fff" stroke-width="1.6"/>',
    '<path d="M0,8 L8,0 M0,0 L8,8" stroke="#fff" stroke-width="1.2"/>',
    '<circle cx="4" cy="4" r="1.5" fill="#fff"/>',
    '<path d="M0,4 L8,4" stroke="#fff" stroke-width="1.6"/>',
    '<path d="M4,0 L4,8" stroke="#fff" stroke-width="1.6"/>',
    '<path d="M0,0 L8,8" stroke="#fff" stroke-width="1.6"/>',
    '<rect x="2" y="2" width="4" height="4" fill="#fff"/>',
)
INK, MUTED, GRID = "#1f2328", "#59636e", "#d0d7de"


def fill(chart: str, n: int) -> str:
    """The paint of series ``n`` in ``chart`` (its colour and pattern, defined in the chart's own ``<defs>``)."""
    return f"url(#{chart}-s{n % len(PALETTE)})"


def _defs(chart: str, count: int) -> str:
    patterns = "".join(
        f'<pattern id="{chart}-s{n}" width="8" height="8" patternUnits="userSpaceOnUse">'
        f'<rect width="8" height="8" fill="{PALETTE[n]}"/>{_MARKS[n]}</pattern>'
        for n in range(min(count, len(PALETTE))))
    return f"<defs>{patterns}</defs>"


def _svg(chart: str, height: float, body: str, label: str, series: int = 0) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg" data-chart="{chart}" role="img" '
            f'aria-label="{escape(label)}" viewBox="0 0 {WIDTH} {height:.0f}" width="100%" '
            f'preserveAspectRatio="xMidYMid meet">{_defs(chart, series)}{body}</svg>')


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: int = 12, color: str = INK,
          weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{color}" '
            f'font-weight="{weight}">{escape(text)}</text>')


def nice_max(value: float, *, whole: bool = True) -> float:
    """The top of an axis of four steps at or above ``value``: each step 1, 2, 2.5, 3 or 5 × 10^k,
    and a whole number when ``whole`` (counts get whole-numbered gridlines)."""
    if value <= 0:
        return 4.0 if whole else 1.0
    raw = value / 4
    power = 10.0 ** math.floor(math.log10(raw))
    steps = [s * power for s in (1, 2, 2.5, 3, 5, 10)]
    if whole:
        steps = [s for s in steps if s >= 1 and float(s).is_integer()] or [1.0]
    return 4.0 * next((s for s in steps if s >= raw), 10 * power)


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def legend(chart: str, names: Sequence[str], *, y: float = 14, x: float = 48.0) -> str:
    """Swatches with their pattern and name, left to right."""
    parts: list[str] = []
    for n, name in enumerate(names):
        parts.append(f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="14" height="14" fill="{fill(chart, n)}" '
                     f'stroke="{INK}" stroke-width="0.5"/>')
        parts.append(_text(x + 19, y + 1, name))
        x += 19 + 7.5 * max(4, sum(2 if ord(c) > 0x2E80 else 1 for c in name)) + 18
    return "".join(parts)


def _axis(left: float, top: float, plot_w: float, plot_h: float, ymax: float, unit: str) -> str:
    parts = []
    for n in range(5):
        y = top + plot_h - plot_h * n / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w:.1f}" y2="{y:.1f}" stroke="{GRID}" '
                     f'stroke-width="1"/>')
        parts.append(_text(left - 6, y + 4, _number(ymax * n / 4) + unit, anchor="end", size=11, color=MUTED))
    return "".join(parts)


def _x_labels(labels: Sequence[str], left: float, slot: float, y: float) -> str:
    every = max(1, math.ceil(len(labels) / 12))
    return "".join(_text(left + slot * (n + 0.5), y, label, anchor="middle", size=11, color=MUTED)
                   for n, label in enumerate(labels) if n % every == 0 or n == len(labels) - 1)


def stacked_columns(chart: str, label: str, columns: Sequence[str], series: Sequence[tuple[str, Sequence[int]]],
                    *, height: int = 280) -> str:
    """One column per entry of ``columns``, each stacking the series' values (lowest series at the
    bottom), the column's total above it; a legend on top."""
    left, right, top, bottom = 48.0, 12.0, 34.0, 28.0
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    totals = [sum(values[n] for _, values in series) for n in range(len(columns))]
    ymax = nice_max(max(totals, default=0))
    slot = plot_w / max(1, len(columns))
    bar = slot * 0.64
    parts = [legend(chart, [name for name, _ in series]), _axis(left, top, plot_w, plot_h, ymax, "")]
    for n, column in enumerate(columns):
        x = left + slot * n + (slot - bar) / 2
        y = top + plot_h
        for s, (name, values) in enumerate(series):
            value = values[n]
            if value <= 0:
                continue
            h = plot_h * value / ymax
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{fill(chart, s)}" '
                         f'stroke="#fff" stroke-width="0.6"><title>{escape(f"{column} · {name}: {value:,}")}</title>'
                         f'</rect>')
        if totals[n]:
            parts.append(_text(x + bar / 2, y - 4, f"{totals[n]:,}", anchor="middle", size=11))
    parts.append(_x_labels(columns, left, slot, height - 8))
    return _svg(chart, height, "".join(parts), label, len(series))


def percent_columns(chart: str, label: str, columns: Sequence[str], values: Sequence[float | None], *,
                    none_text: str = "–", height: int = 220) -> str:
    """Columns on a 0–100 % scale, each labelled with its value (``none_text`` where there is none)."""
    left, right, top, bottom = 48.0, 12.0, 14.0, 28.0
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    slot = plot_w / max(1, len(columns))
    bar = slot * 0.64
    parts = [_axis(left, top, plot_w, plot_h, 100.0, "%")]
    for n, (column, value) in enumerate(zip(columns, values, strict=True)):
        x = left + slot * n + (slot - bar) / 2
        if value is None:
            parts.append(_text(x + bar / 2, top + plot_h - 4, none_text, anchor="middle", size=11, color=MUTED))
            continue
        h = plot_h * value / 100.0
        parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                     f'fill="{fill(chart, 0)}"><title>{escape(f"{column}: {value:g}%")}</title></rect>')
        parts.append(_text(x + bar / 2, top + plot_h - h - 4, f"{value:g}%", anchor="middle", size=11))
    parts.append(_x_labels(columns, left, slot, height - 8))
    return _svg(chart, height, "".join(parts), label, 1)


def line(chart: str, label: str, columns: Sequence[str], values: Sequence[float | None], *, unit: str = "",
         reference: tuple[float, str] | None = None, height: int = 220) -> str:
    """A line through the values (a gap where there is none), dots labelled; ``reference`` is a
    dashed horizontal line (value, caption), e.g. the 24-hour promise."""
    left, right, top, bottom = 48.0, 12.0, 14.0, 28.0
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    known = [v for v in values if v is not None]
    ymax = nice_max(max([*known, reference[0] if reference else 0.0], default=0.0) * 1.1, whole=False)
    slot = plot_w / max(1, len(columns))
    parts = [_axis(left, top, plot_w, plot_h, ymax, unit)]

    def at(n: int, v: float) -> tuple[float, float]:
        return left + slot * (n + 0.5), top + plot_h - plot_h * v / ymax

    if reference:
        _, y = at(0, reference[0])
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w:.1f}" y2="{y:.1f}" stroke="{PALETTE[5]}" '
                     f'stroke-width="1.5" stroke-dasharray="6 4"/>')
        parts.append(_text(left + plot_w - 4, y - 5, reference[1], anchor="end", size=11, color=PALETTE[5]))
    run: list[str] = []
    for n, value in enumerate([*values, None]):
        if value is None:
            if len(run) > 1:
                parts.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{PALETTE[0]}" stroke-width="2.5"/>')
            run = []
            continue
        x, y = at(n, value)
        run.append(f"{x:.1f},{y:.1f}")
    for n, value in enumerate(values):
        if value is not None:
            x, y = at(n, value)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{PALETTE[0]}" stroke="#fff" stroke-width="1.5">'
                         f'<title>{escape(f"{columns[n]}: {value:g}{unit}")}</title></circle>')
            parts.append(_text(x, y - 9, f"{value:g}", anchor="middle", size=11))
    parts.append(_x_labels(columns, left, slot, height - 8))
    return _svg(chart, height, "".join(parts), label, 1)


def funnel(chart: str, label: str, steps: Sequence[tuple[str, int, str]]) -> str:
    """Centred bars, widest at the top: (name, value, caption) per step, highest tier last."""
    row, top = 40.0, 8.0
    height = top * 2 + row * len(steps)
    widest = max((v for _, v, _ in steps), default=0) or 1
    centre, span = 360.0, 380.0
    parts = []
    for n, (name, value, caption) in enumerate(steps):
        y = top + row * n
        w = max(2.0, span * value / widest)
        parts.append(f'<rect x="{centre - w / 2:.1f}" y="{y + 4:.1f}" width="{w:.1f}" height="{row - 10:.1f}" '
                     f'fill="{fill(chart, n)}"><title>{escape(f"{name}: {value:,}")}</title></rect>')
        parts.append(_text(centre - span / 2 - 12, y + row / 2 + 4, name, anchor="end", size=13, weight="bold"))
        parts.append(_text(centre + span / 2 + 12, y + row / 2 + 4, caption, size=12))
    return _svg(chart, height, "".join(parts), label, len(steps))


def segments(chart: str, label: str, parts_in: Sequence[tuple[str, int]], total: int | None, *,
             caption: str = "", height: int = 64) -> str:
    """One horizontal bar split into named parts (with a legend), out of ``total`` when given
    (the rest left as an empty track), e.g. a month's LINE quota or a drop's deliveries."""
    left, right, top = 8.0, 8.0, 24.0
    plot_w = WIDTH - left - right
    used = sum(v for _, v in parts_in)
    scale = max(total or 0, used) or 1
    out = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="22" fill="#f6f8fa" stroke="{MUTED}" stroke-width="1"/>']
    x = left
    for n, (name, value) in enumerate(parts_in):
        if value <= 0:
            continue
        w = plot_w * value / scale
        out.append(f'<rect x="{x:.1f}" y="{top}" width="{w:.1f}" height="22" fill="{fill(chart, n)}" stroke="#fff" '
                   f'stroke-width="0.6"><title>{escape(f"{name}: {value:,}")}</title></rect>')
        x += w
    out.append(legend(chart, [f"{name} {value:,}" for name, value in parts_in], x=left))
    if caption:
        out.append(_text(WIDTH - right, top + 38, caption, anchor="end", size=12, color=MUTED))
    return _svg(chart, height, "".join(out), label, len(parts_in))


def stacked_rows(chart: str, label: str, names: Sequence[str], rows: Sequence[tuple[str, Sequence[int]]]) -> str:
    """One horizontal bar per row (its label on the left, its total on the right), each split into
    the named parts, all on one scale; a legend on top. E.g. each drop's deliveries per platform."""
    left, right, top, row = 150.0, 56.0, 28.0, 30.0
    plot_w = WIDTH - left - right
    height = top + row * len(rows) + 6
    widest = max((sum(values) for _, values in rows), default=0) or 1
    parts = [legend(chart, names, x=left)]
    for n, (name, values) in enumerate(rows):
        y = top + row * n
        parts.append(_text(left - 8, y + row / 2 + 4, name, anchor="end"))
        x = left
        for s, value in enumerate(values):
            if value <= 0:
                continue
            w = plot_w * value / widest
            parts.append(f'<rect x="{x:.1f}" y="{y + 5:.1f}" width="{w:.1f}" height="{row - 10:.1f}" '
                         f'fill="{fill(chart, s)}" stroke="#fff" stroke-width="0.6">'
                         f'<title>{escape(f"{name} · {names[s]}: {value:,}")}</title></rect>')
            x += w
        parts.append(_text(x + 6, y + row / 2 + 4, f"{sum(values):,}", size=11, color=MUTED))
    return _svg(chart, height, "".join(parts), label, len(names))
