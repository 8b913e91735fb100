"""Simulated against closed-form values (M/M/c/K, ``engine.theory``): the comparison the
``agrees_with_theory`` check judges, and the answer it gives in words.

Every (configuration, metric) with a closed form is tested at once: each simulated mean's t
interval over the replications, Bonferroni-adjusted so that all of them together hold with
probability ``1 - THEORY_FAMILY_ALPHA``, must contain the closed-form value. The check
(``checks.theory_check``) and the summary step's answer (``theory_text``) share this one
comparison, so they cannot disagree.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simlab_pipelines.analysis.units import format_quantity, format_setting, format_value
from simlab_pipelines.analysis.words import Words, capital

# Bonferroni over every tested value keeps the chance of a false alarm on a correct engine at
# most 1 % per evaluation.
THEORY_FAMILY_ALPHA = 0.01
# A wait percentile p this close to P(no wait) sits on the jump of the waiting time's distribution
# (its atom at 0): the sample percentile is then 0 in some replications and not in others, and no
# t interval describes it. Those percentiles are left out (and listed).
QUANTILE_ATOM_MARGIN = 0.03
# The metrics each configuration's line of the answer shows (those outside their interval too).
SHOWN = ("mean_number_in_system", "mean_wait", "blocking_probability")


def expected_values(params: Mapping[str, Any]) -> tuple[dict[str, float], list[str]]:
    """The closed-form value of every mmck metric that has one (means, percentiles of the wait
    and the time in system, fraction_wait_over), and the wait percentiles left out because they
    sit on the atom at 0. Raises ValueError without a steady state."""
    from engine import theory  # here: it loads scipy, which only the theory comparison needs

    expected = theory.expected_metrics(dict(params)) | theory.expected_quantiles(dict(params))
    no_wait = theory.wait_distribution(params["servers"], params.get("capacity"),
                                       params["arrival_rate"], params["service_rate"]).no_wait
    on_atom = [f"wait_p{p}" for p in theory.PERCENTILES
               if abs(p / 100 - no_wait) < QUANTILE_ATOM_MARGIN]
    return {k: v for k, v in expected.items() if k not in on_atom}, on_atom


def _no_block_is_plausible(params: Mapping[str, Any], horizon: float, n: int,
                           probability: float, alpha: float) -> bool:
    """Whether seeing no blocked arrival at all in ``n`` replications is consistent with a
    blocking probability of ``probability``: blocked arrivals are about Poisson with mean
    ``lambda · horizon · n · probability``, so P(none) = exp(-mean) must be at least ``alpha``."""
    return math.exp(-params["arrival_rate"] * horizon * n * probability) >= alpha


@dataclass(frozen=True)
class TheoryRow:
    """One simulated value against its closed form."""

    config_key: str
    metric: str
    n: int
    mean: float
    theory: float
    half_width: float  # of the Bonferroni-adjusted interval
    within: bool


@dataclass(frozen=True)
class TheoryComparison:
    """Every tested value, the per-interval confidence, and what was not tested."""

    rows: list[TheoryRow]
    level: float                      # per interval (family-wise: 1 - THEORY_FAMILY_ALPHA)
    unstable: list[str] = field(default_factory=list)  # no steady state: no closed form
    on_atom: list[str] = field(default_factory=list)   # "<config_key>/<metric>" left out

    @property
    def failures(self) -> list[str]:
        return [f"{r.config_key}/{r.metric}" for r in self.rows if not r.within]

    @property
    def agrees(self) -> bool:
        return bool(self.rows) and not self.failures


def compare_with_theory(summary: Iterable[tuple[str, str, int, float, float | None]],
                        configurations: Mapping[str, Mapping[str, Any]],
                        horizon: float) -> TheoryComparison:
    """``summary``: (config_key, metric, n, mean, stddev) rows; ``configurations``: config_key ->
    its full parameters. A metric that was the same in every replication has no t interval (its
    standard deviation is 0): it must equal the theory, except a blocking probability of 0
    where blocking is so rare that no blocked arrival was to be expected (e.g. 1e-6 at light
    load)."""
    expected, unstable, on_atom = {}, [], []
    for key, params in configurations.items():
        try:
            expected[key], skipped = expected_values(params)
        except ValueError:  # infinite room and rho >= 1: no steady state to compare with
            unstable.append(key)
            continue
        on_atom += [f"{key}/{metric}" for metric in skipped]
    tested = [(k, m, n, mean, sd) for k, m, n, mean, sd in summary
              if m in expected.get(k, {}) and mean is not None]
    if not tested:
        return TheoryComparison([], 1.0, unstable, on_atom)
    level = 1 - THEORY_FAMILY_ALPHA / len(tested)
    from scipy import stats  # here: scipy.stats takes ~0.3 s to load

    rows = []
    for key, metric, n, mean, sd in tested:
        truth = expected[key][metric]
        half = (stats.t.ppf(0.5 + level / 2, n - 1) * (sd or 0.0) / n**0.5 if n > 1
                else float("inf"))
        ok = abs(mean - truth) <= half + 1e-9 * (1 + abs(truth))
        if not ok and not sd and metric == "blocking_probability" and mean == 0.0:
            ok = _no_block_is_plausible(configurations[key], horizon, n, truth, 1 - level)
        rows.append(TheoryRow(key, metric, n, mean, truth, half, ok))
    return TheoryComparison(rows, level, unstable, on_atom)


def _value_line(row: TheoryRow, words: Words) -> str:
    """``mean wait before service 0.54 ± 0.05 time units simulated, 0.55 in theory``: the
    closed form to the precision of the simulated value beside it (more digits say nothing)."""
    unit = words.unit(row.metric)
    half = row.half_width if math.isfinite(row.half_width) else 0.0
    simulated = format_quantity(row.mean, half, unit)
    # no spread (the same in every replication): the closed form to 3 significant digits
    closed = format_value(row.theory, half, unit) if half > 0 else format_setting(row.theory, unit)
    return (f"{words.name(row.metric)} {simulated} simulated, {closed} in theory"
            + ("" if row.within else " (OUTSIDE its interval)"))


def theory_text(comparison: TheoryComparison, words: Words,
                shown: Sequence[str] = SHOWN) -> str | None:
    """The answer to "does the simulator agree with theory?": yes or no first, then one line per
    configuration (simulated against the closed form, within the interval or not: the
    ``shown`` metrics and every one outside), then the statistics for analysts."""
    rows = comparison.rows
    if not rows:
        return None
    family = f"{(1 - THEORY_FAMILY_ALPHA) * 100:g} %"
    total, failed = len(rows), len(comparison.failures)
    if failed == 0:
        head = (f"Yes: the simulator agrees with queueing theory. Each of the {total} simulated "
                "values with a closed form (means, percentiles of the wait and of the time in "
                f"the system, the share of long waits) is within its {family} interval of the "
                "closed-form value.")
    else:
        head = (f"No: {failed} of the {total} simulated values with a closed form fall outside "
                f"their {family} interval of the closed-form value, which a correct simulator "
                f"does with probability at most {THEORY_FAMILY_ALPHA * 100:g} %.")
    lines = [head]
    by_key: dict[str, list[TheoryRow]] = {}
    for row in rows:
        by_key.setdefault(row.config_key, []).append(row)
    for key, group in by_key.items():
        outside = [r for r in group if not r.within]
        count = (f"all {len(group)} within their intervals" if not outside
                 else f"{len(outside)} of {len(group)} OUTSIDE their intervals")
        picked = [r for r in group if r.metric in shown or not r.within]
        picked.sort(key=lambda r: (r.within, shown.index(r.metric) if r.metric in shown
                                   else len(shown)))
        details = "; ".join(_value_line(r, words) for r in picked)
        lines.append(f"- {words.setting(key)}: {count}" + (f"; {details}" if details else ""))
    for key in comparison.unstable:
        lines.append(f"- {words.setting(key)}: not compared (no steady state: the load is at "
                     "or above capacity with unlimited room)")
    n = sorted({r.n for r in rows})
    counts = f"{n[0]}" if len(n) == 1 else f"{n[0]} to {n[-1]}"
    stats = (f"Statistics: t intervals over {counts} replications a configuration, each at "
             f"{comparison.level * 100:.4g} % (Bonferroni over the {total} values, so that all hold "
             f"together with {family})")
    if comparison.on_atom:
        stats += (f"; {len(comparison.on_atom)} wait percentile(s) on the jump of the waiting "
                  "time's distribution at 0 are not tested (no t interval describes them)")
    return "\n".join(lines) + "\n\n" + capital(stats) + "."
