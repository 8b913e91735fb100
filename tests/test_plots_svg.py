"""The interval charts (SVG): every configuration drawn where its numbers say, in its role's colour,
with round axis ticks; the differences chart shows CRN's narrower paired interval next to Welch's."""

import itertools
import math
import xml.etree.ElementTree as ET

import polars as pl
import pytest

from simlab_pipelines.analysis import ci_plot, differences_plot
from simlab_pipelines.analysis.plots import ROLE_COLOURS, data_uri
from simlab_pipelines.analysis.svg import Mark, Row, interval_chart, nice_ticks

NS = "{http://www.w3.org/2000/svg}"


def _summary(rows: list[tuple[str, float, float]]) -> pl.DataFrame:
    return pl.DataFrame({"experiment": ["e"] * len(rows), "config_key": [r[0] for r in rows],
                         "metric": ["wait"] * len(rows), "mean": [r[1] for r in rows],
                         "half_width": [r[2] for r in rows], "confidence": [0.95] * len(rows)})


def _points(svg: bytes) -> list[tuple[float, float, str]]:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    return [(float(c.get("cx")), float(c.get("cy")), c.get("fill"))
            for c in root.iter(f"{NS}circle") if float(c.get("cy")) > 40]  # not the legend's


def _whiskers(svg: bytes) -> list[float]:
    """Each interval's drawn length in pixels (the first horizontal segment of each path)."""
    lengths = []
    for path in ET.fromstring(svg).iter(f"{NS}path"):
        start, end = path.get("d").split("H")[:2]
        lengths.append(float(end.split("M")[0]) - float(start[1:].split()[0]))
    return lengths


def test_ci_plot_places_each_configuration_by_its_mean_and_interval():
    summary = _summary([("b", 20.0, 2.0), ("a", 10.0, 1.0), ("c", 15.0, 4.0)])
    svg = ci_plot(summary, "wait", highlights={"b": "recommended"}, unit="min")
    points = _points(svg)
    assert len(points) == 3
    # rows top to bottom in key order; x grows with the mean
    (xa, ya, fa), (xb, yb, fb), (xc, yc, fc) = points
    assert ya < yb < yc and xa < xc < xb
    assert fb == ROLE_COLOURS["recommended"] and fa == fc != fb
    # whisker lengths proportional to the half-widths (1 : 2 : 4)
    a, b, c = _whiskers(svg)
    assert b / a == pytest.approx(2.0, rel=0.02) and c / a == pytest.approx(4.0, rel=0.02)
    text = svg.decode()
    assert "recommended" in text and "wait (min): mean, 95% confidence interval" in text
    assert data_uri(svg).startswith("data:image/svg+xml;base64,")


def test_labels_are_escaped_and_missing_intervals_draw_a_bare_point():
    summary = _summary([("<x&y>", 3.0, float("nan")), ("z", 5.0, 0.5)])
    svg = ci_plot(summary, "wait")
    assert "&lt;x&amp;y&gt;" in svg.decode()
    assert len(_points(svg)) == 2 and len(_whiskers(svg)) == 1


def test_differences_plot_draws_paired_and_unpaired_intervals_and_zero():
    rows = []
    for config, diff, paired_half, welch_half in (("c1", 2.0, 0.5, 2.0), ("c2", -1.0, 0.3, 1.5)):
        for paired, half in ((True, paired_half), (False, welch_half)):
            rows.append({"experiment": "e", "metric": "wait", "config_key": config,
                         "baseline_key": "base", "paired": paired, "mean_difference": diff,
                         "ci_low": diff - half, "ci_high": diff + half, "confidence": 0.95})
    svg = differences_plot(pl.DataFrame(rows), "wait")
    points = _points(svg)
    assert len(points) == 4
    paired = [p for p in points if p[2] == "#1f6fb4"]
    assert len(paired) == 2
    whiskers = _whiskers(svg)
    assert whiskers[0] / whiskers[1] == pytest.approx(0.25, rel=0.02)  # c1: paired vs Welch
    zero = [line for line in ET.fromstring(svg).iter(f"{NS}line") if line.get("stroke") == "#aa3333"]
    assert len(zero) == 1
    x0 = float(zero[0].get("x1"))
    c1 = [x for x, _, _ in points[:2]]
    c2 = [x for x, _, _ in points[2:]]
    assert all(x > x0 for x in c1) and all(x < x0 for x in c2)  # +2 right of zero, -1 left


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (-3.2, 17.9), (1020.5, 1075.3),
                                       (1e-5, 3e-5), (-250.0, -10.0)])
def test_nice_ticks_cover_the_range_with_round_steps(low, high):
    ticks = nice_ticks(low, high)
    assert 3 <= len(ticks) <= 11
    assert low <= ticks[0] and ticks[-1] <= high
    steps = {round(b - a, 12) for a, b in itertools.pairwise(ticks)}
    assert len({round(s / min(steps), 6) for s in steps}) == 1  # evenly spaced
    step = min(steps)
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1, 2, 2.5, 5)
    assert ticks[0] - low < step and high - ticks[-1] < step


def test_chart_of_one_value_still_has_an_axis():
    svg = interval_chart([Row("only", [Mark(5.0, 0.0, "#000")])], title="t", x_label="x")
    assert len(_points(svg)) == 1 and len(list(ET.fromstring(svg).iter(f"{NS}text"))) > 3
