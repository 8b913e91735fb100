"""The answer sentence carries the comparison's numbers; plots are SVG; the HTML report is valid,
self-contained and written atomically."""

import base64
import html
import os
import re
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest

from simlab_pipelines.analysis import (
    OBSERVATION_COLUMNS,
    aligned_samples,
    answer,
    ci_plot,
    compare,
    differences_plot,
    format_estimate,
    markdown_table,
    subset_selection,
    summarise,
    write_report,
)

CONFIGS = {"a-8_b-3": {"a": 8, "b": 3}, "a-8_b-4": {"a": 8, "b": 4},
           "a-10_b-3": {"a": 10, "b": 3}, "a-10_b-4": {"a": 10, "b": 4}}
# True mean of the metric per configuration (lower is better); a-10_b-3 equals the baseline.
TRUE = {"a-8_b-3": 20.0, "a-8_b-4": 14.0, "a-10_b-3": 20.0, "a-10_b-4": 12.0}


@pytest.fixture(scope="module")
def observations() -> pl.DataFrame:
    rng = np.random.default_rng(12)
    common = rng.normal(0.0, 3.0, 40)  # common random numbers: a shared replication effect
    rows = [("exp", key, r, metric, TRUE[key] * scale + common[r] + rng.normal(0.0, 1.0))
            for key in CONFIGS for r in range(40)
            for metric, scale in (("wait", 1.0), ("served", 5.0))]
    return pl.DataFrame(rows, schema=OBSERVATION_COLUMNS, orient="row")


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text)]


def test_answer_carries_the_numbers_of_the_comparison(observations):
    comparisons = compare(observations, "a-8_b-3")
    _, aligned = aligned_samples(observations, "wait")
    subset = subset_selection(aligned, minimize=True, common_random_numbers=True)
    text = answer(comparisons, "wait", question="Add a or b?", selection=subset,
                  configurations=CONFIGS, unit=" min")
    assert text.startswith("Add a or b? Against today's setting a-8_b-3 (95 % CI, paired over "
                           "40 replications), a-10_b-4 ")
    paired = comparisons.filter(pl.col("paired") & (pl.col("metric") == "wait"))
    for row in paired.iter_rows(named=True):
        half = row["ci_high"] - row["mean_difference"]
        if row["ci_high"] < 0:
            value, hw = format_estimate(-row["mean_difference"], half)
            assert f"lowers {'wait' if row['config_key'] == 'a-10_b-4' else 'it'} by " \
                   f"{value} ± {hw} min" in text
            # The printed numbers are the frame's, rounded to the half-width's precision.
            assert abs(float(value) + row["mean_difference"]) <= 0.5 * 10 ** -len(
                value.partition(".")[2]) + 1e-12
        else:
            signed, hw = format_estimate(row["mean_difference"], half)
            assert "a-10_b-3 (a 8 → 10) does not change it significantly" in text
            assert re.search(rf"significantly \([+-]?{re.escape(signed.lstrip('-'))} ± {hw} min\)",
                             text)
    # Most improvement first, what changed is said, and the best is named with the subset.
    assert text.index("a-10_b-4 (a 8 → 10, b 3 → 4)") < text.index("a-8_b-4 (b 3 → 4)")
    assert text.endswith("Subset selection (paired screening at 95 %, lower wait is better) "
                         "keeps a-10_b-4 as possibly the best.")
    assert len([s for s in re.split(r"(?<=[.?])\s", text) if s]) <= 3


def test_answer_without_pairing_and_maximising(observations):
    unpaired = compare(observations, "a-8_b-3").filter(~pl.col("paired"))
    text = answer(unpaired, "served", minimize=False, max_items=1)
    assert "Welch, 40 replications each" in text
    assert "a-8_b-4 raises served by" not in text  # a lower value is not an improvement
    assert "2 other configurations not shown" in text
    with pytest.raises(ValueError, match="no rows for metric 'nope'"):
        answer(unpaired, "nope")


@pytest.mark.parametrize(("value", "half", "want"), [
    (6.1234, 0.8123, ("6.1", "0.8")), (1.234, 0.15, ("1.23", "0.15")),
    (1.2345, 0.96, ("1.2", "1.0")), (123.4, 23.4, ("123", "23")), (5.0, 0.0, ("5", "0")),
])
def test_format_estimate(value, half, want):
    assert format_estimate(value, half) == want


def test_plots_are_svg_and_markdown_table(observations):
    summary = summarise(observations)
    assert ci_plot(summary, "wait", highlight="a-10_b-4").startswith(b"<svg")
    assert differences_plot(compare(observations, "a-8_b-3"), "wait").startswith(b"<svg")
    table = markdown_table(summary.filter(pl.col("metric") == "wait"),
                           ["config_key", "n", "mean"], digits=3)
    lines = table.splitlines()
    assert lines[0] == "| config_key | n | mean |" and lines[1] == "| --- | ---: | ---: |"
    assert len(lines) == 2 + len(CONFIGS)
    with pytest.raises(ValueError, match="no rows for metric"):
        ci_plot(summary, "nope")


class Checker(HTMLParser):
    """Collects tags and checks every non-void element is closed in order."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.links, self.errors = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for name in ("href", "src"):
            if name in attrs and tag != "img":
                self.links.append(attrs[name])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_report_is_valid_self_contained_html(observations, tmp_path):
    summary, comparisons = summarise(observations), compare(observations, "a-8_b-3")
    target = write_report(tmp_path / "out" / "report.html", title="exp <report>",
                          answer="The answer & more.", summary=summary, comparisons=comparisons,
                          metrics=["wait"], notes=["a note"])
    text = target.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "exp &lt;report&gt;" in text and "The answer &amp; more." in text
    checker = Checker()
    checker.feed(text)
    checker.close()
    assert not checker.errors and not checker.stack
    # the only links are the table of contents' links inside the page
    assert len(checker.images) == 2 and all(link.startswith("#") for link in checker.links)
    for src in checker.images:
        prefix = "data:image/svg+xml;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix):], validate=True).startswith(b"<svg")
    assert "http://" not in text and "https://" not in text
    assert oct(os.stat(target).st_mode & 0o777) == "0o644"


def test_report_is_written_atomically(observations, tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("previous report")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(target, title="t", answer="a", summary=summarise(observations),
                     metrics=["wait"])
    # The old report is untouched and no temporary file is left behind.
    assert target.read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    monkeypatch.undo()
    write_report(target, title="t", answer="a", summary=summarise(observations), metrics=["wait"])
    assert target.read_text().rstrip().endswith("</html>")


def test_analyse_experiment_ties_the_pieces_together(observations):
    from simlab_pipelines.analysis import COMPARISON_COLUMNS, analyse_experiment

    result = analyse_experiment(observations, experiment="exp", baseline="a-8_b-3",
                                objective_metric="wait", minimize=True, indifference_zone=0.5,
                                question="Add a or b?", configurations=CONFIGS)
    tables = result.tables()
    assert tables["comparisons"].columns == list(COMPARISON_COLUMNS)
    assert tables["summary"].columns == ["experiment", "config_key", "metric", "n", "mean",
                                         "stddev", "ci_low", "ci_high", "half_width", "confidence",
                                         "undefined"]
    assert result.subset.keep == ("a-10_b-4",)
    assert result.selection.procedure == "bonferroni-crn" and result.selection.best == "a-10_b-4"
    # The recommendation first, the statistics in the second paragraph.
    first, statistics = result.answer.split("\n\n")
    assert first.startswith(("Recommendation: ", "Keep ")) and result.recommendation is not None
    # in the reader's words: the setting, not the key
    assert "a 10, b 4" in first and result.recommendation.choice not in first
    assert statistics.startswith("Statistics: 95 % t intervals over 40 replications")
    assert "Against today's setting a-8_b-3 " in statistics
    # Without a baseline: the comparisons and the answer are against the best configuration;
    # every pair on request, and when there is no objective to say which is best.
    free = analyse_experiment(observations, experiment="exp", baseline=None,
                              objective_metric="wait", common_random_numbers=False)
    pairs = free.comparisons.select("config_key", "baseline_key").unique()
    assert pairs.height == 3 and set(pairs["baseline_key"]) == {"a-10_b-4"}
    for request in ({"all_pairs": True}, {"objective_metric": None}):
        arguments = {"objective_metric": "wait", **request}
        every = analyse_experiment(observations, experiment="exp", baseline=None, **arguments)
        assert every.comparisons.select("config_key", "baseline_key").unique().height == 6
    assert "Against the best configuration a-10_b-4 (95 % CI, paired" in free.answer
    assert free.subset.paired is False and free.selection is None


def test_report_puts_the_recommendation_and_trade_offs_first(observations, tmp_path):
    from simlab_pipelines.analysis import analyse_experiment
    from simlab_pipelines.report import report_roles

    result = analyse_experiment(observations, experiment="exp", baseline="a-8_b-3",
                                objective_metric="wait", minimize=True, indifference_zone=0.5,
                                configurations=CONFIGS, units={"wait": "min", "served": "$"},
                                tradeoffs=["served"])
    roles = report_roles("a-8_b-3", result.recommendation, result.subset.best)
    assert roles["a-8_b-3"] == "today's setting"
    assert roles[result.recommendation.choice] == "recommended"
    text = write_report(tmp_path / "r.html", title="exp", answer=result.answer,
                        summary=result.summary, comparisons=result.comparisons,
                        selection=result.selection, headline=["wait", "served"],
                        units={"wait": "min", "served": "$"}, configurations=CONFIGS,
                        roles=roles).read_text(encoding="utf-8")
    first, statistics = result.answer.split("\n\n")
    # recommendation, then the trade-off table with a legend, then the contents, then statistics
    sentences = html.escape(first.split("\n")[0])  # the alternatives' lines are a list below
    order = [text.index(sentences), text.index('id="trade-offs"'),
             text.index("Legend:"), text.index("<nav>"), text.index('id="statistics"'),
             text.index(html.escape(statistics))]
    assert order == sorted(order)
    table = text[text.index('id="trade-offs"'):text.index("Legend:")]
    assert "<th>wait (min)</th>" in table and "<th>served</th>" in table and "$" in table
    assert f'<tr class="recommended"><td class=text>{result.recommendation.choice}<' in table
    assert '<tr class="today-s-setting"><td class=text>a-8_b-3<' in table
    # the ± of the cells is explained: unpaired intervals of means, not the paired differences
    assert "(unpaired)" in text[text.index("Each cell"):text.index("<nav>")]
    # every section in the contents is a heading of the page
    for anchor in re.findall(r'<a href="#([^"]+)">', text):
        assert f'id="{anchor}"' in text
    # no column repeats one value on every row: n, experiment and confidence are said once
    assert "<th>n</th>" not in text and "<th>experiment</th>" not in text
    assert "n = 40" in text
