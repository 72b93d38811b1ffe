"""The server-side SVG charts: labelled for screen readers, every string escaped, bars to scale."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from orgwarden.console.charts import bar_chart, meter, short, stacked_bars

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup.split("</svg>")[0] + "</svg>")


def test_a_bar_chart_is_labelled_and_escapes_its_labels() -> None:
    hostile = '<img src=x onerror="alert(1)">'
    markup = str(bar_chart([(hostile, 2.0), ("b", 6.0)], title="Spend <per> day", unit="USD"))
    assert "<img" not in markup
    svg = parse(markup)
    assert svg.get("role") == "img"
    title = svg.find(f"{SVG}title")
    assert title is not None
    assert title.text == "Spend <per> day"
    assert svg.get("aria-labelledby") == title.get("id")
    bars = svg.findall(f"{SVG}rect")
    heights = [float(bar.get("height") or 0) for bar in bars]
    assert heights[1] == 3 * heights[0]  # to scale
    assert bars[0].find(f"{SVG}title").text == f"{hostile}: $2.00"  # type: ignore[union-attr]


def test_stacked_bars_stack_each_day_and_have_a_legend() -> None:
    markup = str(stacked_bars(["d1", "d2"], [("a", [1.0, 0.0]), ("b", [3.0, 2.0])], title="Tokens"))
    svg = parse(markup)
    rects = svg.findall(f"{SVG}rect")
    assert len(rects) == 4
    assert re.findall(r'<li><span class="swatch s(\d)"', markup) == ["0", "1"]


def test_a_meter_warns_near_and_over_the_cap() -> None:
    assert 'class="meter ok"' in str(meter(10, 100, "Org"))
    assert 'class="meter near"' in str(meter(75, 100, "Org"))
    over = str(meter(150, 100, "Org"))
    assert 'class="meter over"' in over
    assert 'width="100.00"' in over  # the fill stops at the end of the track
    assert "(no limit)" in str(meter(5, None, "Org"))


def test_axis_labels_are_short() -> None:
    assert [short(v, u) for v, u in ((0, ""), (2500, ""), (1_200_000, ""), (0.05, "USD"), (1500, "USD"))] == [
        "0", "2.5k", "1.2M", "$0.05", "$1.5k",
    ]  # fmt: skip
