"""Server-side SVG charts: pure Python, no JavaScript chart library, allowed by the strict CSP.

Each chart is an ``<svg role="img">`` with a ``<title>`` it is labelled by (``aria-labelledby``);
the page puts the same numbers in a ``<table>`` after it (``macros.chart_table``) for screen readers
and for comparing with the CSV. Colours come from CSS classes (``console.css``), so light and dark
both work; only presentation attributes (sizes, positions) are written here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Final

from markupsafe import Markup, escape

WIDTH: Final = 720
HEIGHT: Final = 240
_LEFT: Final = 64
_BOTTOM: Final = 28
_TOP: Final = 12
_SERIES_CLASSES: Final = 6
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def fmt(value: float, unit: str = "") -> str:
    """A number for axis labels and titles: thousands separated, cents for dollars."""
    if unit == "USD":
        return f"${value:,.2f}"
    text = f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def short(value: float, unit: str = "") -> str:
    """A compact axis label: ``$1.5k``, ``12M``, ``0.25``."""
    prefix = "$" if unit == "USD" else ""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{prefix}{value / size:.3g}{suffix}"
    return f"{prefix}{value:.2f}" if unit == "USD" and value else f"{prefix}{value:.3g}"


def _nice_max(value: float) -> float:
    """A round axis top at or above ``value``: 1, 2, 2.5 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude * (1 + 1e-9):
            return step * magnitude
    return 10 * magnitude


def _axis(top: float, unit: str, plot_w: float, plot_h: float) -> list[str]:
    parts = []
    for i in range(5):
        value = top * i / 4
        y = _TOP + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>')
        label = escape(short(value, unit))
        parts.append(f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    return parts


def _x_labels(labels: Sequence[str], slot: float) -> list[str]:
    longest = max((len(label) for label in labels), default=1)
    fits = max(1, int((WIDTH - _LEFT) // (longest * 7.5 + 12)))  # labels that fit side by side at 13 px
    every = max(1, math.ceil(len(labels) / fits))
    parts = []
    for i, label in enumerate(labels):
        if i % every == 0:
            x = _LEFT + slot * (i + 0.5)
            parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{escape(label)}</text>')
    return parts


def _frame(title: str, body: list[str], legend: list[str] | None = None) -> Markup:
    title_id = _id("chart")
    head = (
        f'<svg class="chart" role="img" aria-labelledby="{title_id}" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' width="100%" preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{title_id}">{escape(title)}</title>'
    )
    return Markup(head + "".join(body) + "</svg>" + "".join(legend or []))  # noqa: S704 - every value escaped


def bar_chart(points: Sequence[tuple[str, float]], *, title: str, unit: str = "") -> Markup:
    """Vertical bars, one per (label, value)."""
    plot_w, plot_h = WIDTH - _LEFT - 8, HEIGHT - _TOP - _BOTTOM
    top = _nice_max(max((v for _, v in points), default=0.0))
    slot = plot_w / max(1, len(points))
    body = _axis(top, unit, plot_w, plot_h)
    for i, (label, value) in enumerate(points):
        h = plot_h * max(0.0, value) / top
        x = _LEFT + slot * i + slot * 0.15
        body.append(
            f'<rect class="bar s0" x="{x:.1f}" y="{_TOP + plot_h - h:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}">'
            f"<title>{escape(label)}: {escape(fmt(value, unit))}</title></rect>"
        )
    body += _x_labels([label for label, _ in points], slot)
    return _frame(title, body)


def stacked_bars(
    days: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *, title: str = "", unit: str = ""
) -> Markup:
    """One bar per day, stacked by series (name, one value per day), with a legend."""
    plot_w, plot_h = WIDTH - _LEFT - 8, HEIGHT - _TOP - _BOTTOM
    totals = [sum(values[i] for _, values in series) for i in range(len(days))]
    top = _nice_max(max(totals, default=0.0))
    slot = plot_w / max(1, len(days))
    body = _axis(top, unit, plot_w, plot_h)
    for i, day in enumerate(days):
        y: float = _TOP + plot_h
        x = _LEFT + slot * i + slot * 0.15
        for k, (name, values) in enumerate(series):
            h = plot_h * max(0.0, values[i]) / top
            y -= h
            body.append(
                f'<rect class="bar s{k % _SERIES_CLASSES}" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}"'
                f' height="{h:.1f}"><title>{escape(day)} {escape(name)}: {escape(fmt(values[i], unit))}</title></rect>'
            )
    body += _x_labels(days, slot)
    legend = ['<ul class="legend">']
    for k, (name, _) in enumerate(series):
        legend.append(f'<li><span class="swatch s{k % _SERIES_CLASSES}" aria-hidden="true"></span>{escape(name)}</li>')
    legend.append("</ul>")
    return _frame(title, body, legend if series else None)


def meter(value: float, cap: float | None, label: str, *, unit: str = "USD") -> Markup:
    """A limit bar: ``value`` against ``cap`` (no cap: the value alone), warning at 75 %, over at 100 %."""
    ratio = 0.0 if not cap else value / cap
    level = "over" if ratio >= 1 else "near" if ratio >= 0.75 else "ok"
    width = 100.0 * min(1.0, ratio)
    title_id = _id("meter")
    text = f"{label}: {fmt(value, unit)}" + (f" of {fmt(cap, unit)} ({ratio:.0%})" if cap else " (no limit)")
    return Markup(  # noqa: S704 - every value escaped
        f'<svg class="meter {level}" role="img" aria-labelledby="{title_id}" viewBox="0 0 100 6"'
        f' width="100%" height="14" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{title_id}">{escape(text)}</title>'
        f'<rect class="track" x="0" y="0" width="100" height="6" rx="1"/>'
        f'<rect class="fill" x="0" y="0" width="{width:.2f}" height="6" rx="1"/></svg>'
    )
