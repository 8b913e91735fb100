"""Which factors matter, and how: sensitivity indices and metamodels of a designed experiment.

By the experiment's design (``experiments/designs.py``):

- ``saltelli``: Sobol' indices S1, ST (and S2) with SALib's estimators (Saltelli et al. 2010 for
  S1 and ST, Saltelli 2002 for S2), on the response averaged over the replications;
- ``morris``: elementary effects along SALib's trajectories: ``mu_star`` (mean absolute effect),
  ``mu`` (mean effect) and ``sigma`` (their spread: interactions or curvature), in the metric's
  units per move across the factor's whole range;
- every other design: a metamodel with main effects and two-way interactions on the factors coded
  to [-1, 1] (interactions aliased in the design, or beyond half its points, are left out and
  named): its coefficients
  (``coefficient``), each term's share of the variance of the mean response (``variance_share``:
  the metamodel's own Sobol' indices for independent factors uniform over their coded ranges,
  times its R²), standardised regression coefficients of a first-order fit (``SRC``), its R², and
  a lack-of-fit F test against the replications' pure error (the ``metamodel`` table).

Replications are used, not averaged away: every interval is a bootstrap that resamples both the
design (base samples, trajectories or points, with replacement) and the simulation noise (the
replications of every point, the same replication numbers for every point, so that common random
numbers stay common), ``resamples`` times; intervals are value ± z·(bootstrap standard deviation),
as SALib reports them. With common random numbers the replications of different points are
correlated, which the F test's reference distribution does not model: its p-value is a guide.

Pure functions over numpy, scipy, polars and SALib; nothing here imports Dagster.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import stats

from simlab_pipelines.analysis.frames import check_observations
from simlab_pipelines.experiments.designs import DesignPoints

SENSITIVITY_SCHEMA = {"experiment": pl.String, "metric": pl.String, "factor": pl.String,
                      "statistic": pl.String, "value": pl.Float64, "ci_low": pl.Float64,
                      "ci_high": pl.Float64, "confidence": pl.Float64, "method": pl.String}
METAMODEL_SCHEMA = {"experiment": pl.String, "metric": pl.String, "terms": pl.String,
                    "aliased": pl.String, "points": pl.Int64, "observations": pl.Int64,
                    "parameters": pl.Int64, "r_squared": pl.Float64,
                    "r_squared_ci_low": pl.Float64, "r_squared_ci_high": pl.Float64,
                    "adjusted_r_squared": pl.Float64, "lack_of_fit_f": pl.Float64,
                    "lack_of_fit_df": pl.Int64, "pure_error_df": pl.Int64,
                    "lack_of_fit_p_value": pl.Float64, "confidence": pl.Float64}
FITTED_SCHEMA = {"experiment": pl.String, "config_key": pl.String, "metric": pl.String,
                 "mean": pl.Float64, "fitted": pl.Float64}
RESAMPLES = 200
INTERACTION_THRESHOLD = 0.03  # "no interaction above 3 %"


@dataclass(frozen=True)
class Sensitivity:
    """The ``sensitivity`` and ``metamodel`` tables of one experiment, and what was skipped."""

    table: pl.DataFrame
    metamodel: pl.DataFrame
    notes: list[str] = field(default_factory=list)
    answer: str | None = None  # the sentences naming the factors that matter
    fitted: pl.DataFrame | None = None  # regression designs: each point's mean and prediction


# ---------------------------------------------------------------------------------------------
# Responses and the two-level bootstrap


def responses(observations: pl.DataFrame, metric: str, keys: Sequence[str]) -> np.ndarray:
    """(configurations, replications) of ``metric``, rows in ``keys`` order, columns the
    replication numbers any configuration has (NaN where a value is missing or undefined)."""
    frame = observations.filter(pl.col("metric") == metric)
    replications = sorted(frame["replication"].unique().to_list())
    column = {r: i for i, r in enumerate(replications)}
    row = {k: i for i, k in enumerate(keys)}
    out = np.full((len(keys), len(replications)), np.nan)
    for key, replication, value in frame.select("config_key", "replication", "value").iter_rows():
        if key in row:
            out[row[key], column[replication]] = value
    return out


def replication_weights(replications: int, resamples: int, rng: np.random.Generator
                        ) -> np.ndarray:
    """(replications, resamples + 1) multinomial counts; column 0 is the data itself (all 1)."""
    draws = rng.integers(0, replications, size=(resamples, replications))
    counts = np.zeros((replications, resamples + 1))
    counts[:, 0] = 1.0
    for b in range(resamples):
        counts[:, b + 1] = np.bincount(draws[b], minlength=replications)
    return counts


def resampled_means(y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(configurations, resamples + 1): each point's mean over the reweighted replications
    (missing values skipped); column 0 is the plain mean."""
    present = ~np.isnan(y)
    total = np.where(present, y, 0.0) @ weights
    count = present.astype(float) @ weights
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


def _row(experiment: str, metric: str, factor: str, statistic: str, draws: np.ndarray,
         z: float, confidence: float, method: str) -> dict:
    """Column 0 of ``draws`` is the estimate, the others its bootstrap replicates."""
    value = float(draws[0])
    spread = float(np.nanstd(draws[1:], ddof=1)) if np.isfinite(draws[1:]).sum() > 1 else math.nan
    return {"experiment": experiment, "metric": metric, "factor": factor, "statistic": statistic,
            "value": value, "ci_low": value - z * spread, "ci_high": value + z * spread,
            "confidence": confidence, "method": method}


# ---------------------------------------------------------------------------------------------
# Sobol' indices from a Saltelli design


def sobol_indices(y_rows: np.ndarray, design: DesignPoints, rng: np.random.Generator
                  ) -> dict[tuple[str, str], np.ndarray]:
    """{(statistic, factor): draws} from ``y_rows`` (rows, B+1): column 0 the estimate on the
    data, the others with the N base samples resampled too."""
    from SALib.analyze.sobol import first_order, second_order, total_order

    k, n = len(design.factors), design.base_points
    step = 2 * k + 2 if design.second_order else k + 2
    cols = y_rows.shape[1]
    index = np.concatenate([np.arange(n)[:, None], rng.integers(0, n, size=(n, cols - 1))],
                           axis=1)

    def block(offset: int) -> np.ndarray:
        return np.take_along_axis(y_rows[offset::step][:n], index, axis=0)

    a, b = block(0), block(step - 1)
    ab = [block(j + 1) for j in range(k)]
    ba = [block(j + 1 + k) for j in range(k)] if design.second_order else []
    names = design.names
    out: dict[tuple[str, str], np.ndarray] = {}
    for j, name in enumerate(names):
        out[("S1", name)] = first_order(a, ab[j], b)
        out[("ST", name)] = total_order(a, ab[j], b)
    if design.second_order:
        for j in range(k):
            for m in range(j + 1, k):
                out[("S2", f"{names[j]}:{names[m]}")] = second_order(a, ab[j], ab[m], ba[j], b)
    return out


# ---------------------------------------------------------------------------------------------
# Morris elementary effects


def elementary_effects(y_rows: np.ndarray, design: DesignPoints) -> np.ndarray:
    """(trajectories, factors, B+1): each trajectory's effect of each factor, per unit of the
    factor's range (as SALib's ``morris.analyze``: the output change over the grid step)."""
    k, n = len(design.factors), design.base_points
    x = design.unit.reshape(n, k + 1, k)
    y = y_rows.reshape(n, k + 1, -1)
    dx = np.diff(x, axis=1)  # (n, k, k): one non-zero per step
    moved = np.abs(dx).argmax(axis=2)  # (n, k): which factor each step moves
    step = np.take_along_axis(dx, moved[:, :, None], axis=2)[:, :, 0]
    effects = np.diff(y, axis=1) / step[:, :, None]  # (n, k steps, B+1)
    out = np.empty_like(effects)
    np.put_along_axis(out, moved[:, :, None].repeat(effects.shape[2], axis=2), effects, axis=1)
    return out


def morris_statistics(y_rows: np.ndarray, design: DesignPoints, rng: np.random.Generator
                      ) -> dict[tuple[str, str], np.ndarray]:
    """{(statistic, factor): draws} of mu_star, mu and sigma, trajectories resampled too."""
    effects = elementary_effects(y_rows, design)
    n, cols = effects.shape[0], effects.shape[2]
    index = np.concatenate([np.arange(n)[:, None], rng.integers(0, n, size=(n, cols - 1))],
                           axis=1)
    chosen = np.take_along_axis(effects, index[:, None, :].repeat(effects.shape[1], axis=1),
                                axis=0)
    out: dict[tuple[str, str], np.ndarray] = {}
    for j, name in enumerate(design.names):
        e = chosen[:, j, :]
        out[("mu_star", name)] = np.abs(e).mean(axis=0)
        out[("mu", name)] = e.mean(axis=0)
        out[("sigma", name)] = e.std(axis=0, ddof=1)
    return out


# ---------------------------------------------------------------------------------------------
# Regression metamodel


@dataclass(frozen=True)
class Terms:
    """The metamodel's columns: names and the design matrix over the configurations."""

    names: list[str]  # "a" for main effects, "a:b" for interactions (no intercept)
    matrix: np.ndarray  # (configurations, 1 + terms), intercept first
    aliased: list[str]  # interactions left out: aliased with kept terms, or too few points


def metamodel_terms(design: DesignPoints) -> Terms:
    """Main effects and the two-way interactions the design can estimate: kept in order while
    they add rank (a resolution IV fraction keeps one interaction per alias chain) and leave at
    least two points per parameter, so that the bootstrap over points stays stable (a 17-point
    NOLH with four factors fits main effects only; 33 points fit every interaction)."""
    coded = design.configuration_matrix(coded=True)
    names = design.names
    columns, kept = [np.ones(len(coded))], []
    for j, name in enumerate(names):
        columns.append(coded[:, j])
        kept.append(name)
    aliased = []
    for j in range(len(names)):
        for m in range(j + 1, len(names)):
            candidate = coded[:, j] * coded[:, m]
            trial = np.column_stack([*columns, candidate])
            if 2 * trial.shape[1] <= len(coded) \
                    and np.linalg.matrix_rank(trial) == trial.shape[1]:
                columns.append(candidate)
                kept.append(f"{names[j]}:{names[m]}")
            else:
                aliased.append(f"{names[j]}:{names[m]}")
    return Terms(kept, np.column_stack(columns), aliased)


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    root = np.sqrt(w)
    beta, *_ = np.linalg.lstsq(x * root[:, None], y * root, rcond=None)
    return beta


def regression_statistics(means: np.ndarray, counts: np.ndarray, terms: Terms,
                          rng: np.random.Generator
                          ) -> tuple[dict[tuple[str, str], np.ndarray], np.ndarray]:
    """{(statistic, term): draws} of coefficient, variance_share and SRC, and R²'s draws;
    ``means`` (configurations, B+1) with column 0 the data; points resampled in columns 1..B.

    The fit is weighted by each point's replications (``counts``), which is least squares over
    every replication."""
    m, cols = means.shape
    k_main = sum(":" not in t for t in terms.names)
    out: dict[tuple[str, str], np.ndarray] = {}
    for statistic in ("coefficient", "variance_share"):
        for name in terms.names:
            out[(statistic, name)] = np.full(cols, np.nan)
    for name in terms.names[:k_main]:
        out[("SRC", name)] = np.full(cols, np.nan)
    r2 = np.full(cols, np.nan)
    for b in range(cols):
        rows = np.arange(m) if b == 0 else rng.integers(0, m, size=m)
        y, x, w = means[rows, b], terms.matrix[rows], counts[rows]
        ok = np.isfinite(y) & (w > 0)
        y, x, w = y[ok], x[ok], w[ok]
        variance = np.var(y)
        if len(y) < 3 or variance <= 0:
            continue
        beta = _fit(x, y, w)
        fitted = x @ beta
        r2[b] = 1 - np.average((y - fitted) ** 2, weights=w) / np.average(
            (y - np.average(y, weights=w)) ** 2, weights=w)
        # Each term's variance for independent factors uniform on [-1, 1]: z has variance 1/3,
        # z_j z_k 1/9, and the terms are uncorrelated, so the shares are the metamodel's Sobol'
        # indices; times R², so that what the metamodel misses stays unexplained.
        parts = beta[1:] ** 2 / np.array([3.0 if ":" not in t else 9.0 for t in terms.names])
        total = parts.sum()
        for t, name in enumerate(terms.names):
            out[("coefficient", name)][b] = beta[t + 1]
            out[("variance_share", name)][b] = parts[t] / total * r2[b] if total > 0 else 0.0
        first = _fit(x[:, : k_main + 1], y, w)
        for t, name in enumerate(terms.names[:k_main]):
            out[("SRC", name)][b] = first[t + 1] * np.std(x[:, t + 1]) / math.sqrt(variance)
    return out, r2


def lack_of_fit(y: np.ndarray, terms: Terms) -> dict[str, float]:
    """The F test of the metamodel's lack of fit against the replications' pure error."""
    present = ~np.isnan(y)
    counts = present.sum(axis=1).astype(float)
    ok = counts > 0
    means = np.where(ok, np.nansum(y, axis=1) / np.maximum(counts, 1), np.nan)
    x, ybar, n = terms.matrix[ok], means[ok], counts[ok]
    beta = _fit(x, ybar, n)
    lof_ss = float(np.sum(n * (ybar - x @ beta) ** 2))
    pure_ss = float(np.nansum((y[ok] - ybar[:, None]) ** 2))
    lof_df = int(ok.sum() - x.shape[1])
    pure_df = int(n.sum() - ok.sum())
    if lof_df <= 0 or pure_df <= 0:
        return {"lack_of_fit_f": math.nan, "lack_of_fit_df": lof_df, "pure_error_df": pure_df,
                "lack_of_fit_p_value": math.nan}
    spread = float(np.sum(n * (ybar - np.average(ybar, weights=n)) ** 2))
    if lof_ss <= 1e-12 * spread:  # an exact fit, up to rounding
        f, p = 0.0, 1.0
    elif pure_ss == 0:  # a deterministic response: any misfit is lack of fit
        f, p = math.inf, 0.0
    else:
        f = (lof_ss / lof_df) / (pure_ss / pure_df)
        p = float(stats.f.sf(f, lof_df, pure_df))
    return {"lack_of_fit_f": f, "lack_of_fit_df": lof_df, "pure_error_df": pure_df,
            "lack_of_fit_p_value": p}


# ---------------------------------------------------------------------------------------------
# One experiment


def analyse_design(observations: pl.DataFrame, design: DesignPoints, keys: Sequence[str], *,
                   experiment: str, metrics: Sequence[str] | None = None,
                   confidence: float = 0.95, resamples: int = RESAMPLES,
                   seed: int = 0, answer_metrics: Sequence[str] = ()) -> Sensitivity:
    """The sensitivity (and, for regression designs, metamodel) rows of every metric.

    ``keys``: the config_key of each of ``design.configurations``, in that order. ``metrics``:
    which to analyse (default every metric observed). ``seed`` makes the bootstrap reproducible.
    ``answer_metrics``: the metrics the answer sentences are about.
    """
    if len(keys) != len(design.configurations):
        raise ValueError(f"keys: {len(keys)} keys for {len(design.configurations)} "
                         "configurations of the design")
    frame = check_observations(observations).filter(pl.col("experiment") == experiment)
    names = metrics if metrics is not None else sorted(frame["metric"].unique().to_list())
    z = _z(confidence)
    rows: list[dict] = []
    models: list[dict] = []
    fitted: list[dict] = []
    notes: list[str] = []
    terms = metamodel_terms(design) if design.method not in ("saltelli", "morris") else None
    for metric in names:
        y = responses(frame, metric, keys)
        if y.shape[1] == 0 or np.isnan(y).all(axis=1).any():
            notes.append(f"{metric}: not analysed for sensitivity (no value at some design "
                         "points yet)")
            continue
        rng = np.random.default_rng([seed, *metric.encode()])
        weights = replication_weights(y.shape[1], resamples, rng)
        means = resampled_means(y, weights)
        if np.nanvar(means[:, 0]) <= 0:
            notes.append(f"{metric}: constant over the design, no sensitivity to analyse")
            continue
        if terms is None:
            y_rows = means[design.row_config]
            if np.isnan(y_rows).any():  # a resample that drew only undefined replications
                y_rows = np.where(np.isnan(y_rows), y_rows[:, :1], y_rows)
            draws = (sobol_indices(y_rows, design, rng) if design.method == "saltelli"
                     else morris_statistics(y_rows, design, rng))
            rows += [_row(experiment, metric, factor, statistic, values, z, confidence,
                          design.method) for (statistic, factor), values in draws.items()]
            continue
        counts = (~np.isnan(y)).sum(axis=1).astype(float)
        draws, r2 = regression_statistics(means, counts, terms, rng)
        ok = np.isfinite(means[:, 0])
        predicted = terms.matrix @ _fit(terms.matrix[ok], means[ok, 0], counts[ok])
        fitted += [{"experiment": experiment, "config_key": key, "metric": metric,
                    "mean": float(means[i, 0]), "fitted": float(predicted[i])}
                   for i, key in enumerate(keys) if ok[i]]
        rows += [_row(experiment, metric, factor, statistic, values, z, confidence,
                      "regression") for (statistic, factor), values in draws.items()]
        r2_row = _row(experiment, metric, "", "r2", r2, z, confidence, "regression")
        parameters = terms.matrix.shape[1]
        points = int((~np.isnan(means[:, 0])).sum())
        adjusted = 1 - (1 - r2[0]) * (points - 1) / (points - parameters) \
            if points > parameters else math.nan
        models.append({
            "experiment": experiment, "metric": metric,
            "terms": ", ".join(terms.names), "aliased": ", ".join(terms.aliased),
            "points": points, "observations": int((~np.isnan(y)).sum()),
            "parameters": parameters, "r_squared": r2_row["value"],
            "r_squared_ci_low": r2_row["ci_low"], "r_squared_ci_high": r2_row["ci_high"],
            "adjusted_r_squared": adjusted, **lack_of_fit(y, terms), "confidence": confidence})
    table = pl.DataFrame(rows, schema=SENSITIVITY_SCHEMA)
    metamodel = pl.DataFrame(models, schema=METAMODEL_SCHEMA)
    answer = answer_sentences(table, answer_metrics, metamodel=metamodel)
    return Sensitivity(table, metamodel, notes, answer, pl.DataFrame(fitted, schema=FITTED_SCHEMA))


# ---------------------------------------------------------------------------------------------
# The answer


def _percent(value: float) -> str:
    return f"{max(value, 0.0) * 100:.0f} %"


def _share(row: dict) -> str:
    low, high = max(row["ci_low"], 0.0) * 100, min(row["ci_high"], 1.0) * 100
    if not (math.isfinite(low) and math.isfinite(high)):
        return _percent(row["value"])
    return f"{_percent(row['value'])} ({low:.0f}–{high:.0f} %)"


def sensitivity_sentence(table: pl.DataFrame, metric: str, *,
                         metamodel: pl.DataFrame | None = None, max_factors: int = 3,
                         threshold: float = INTERACTION_THRESHOLD) -> str | None:
    """The factors that matter for ``metric``, in one or two sentences (None without rows).

    Variance-based designs and metamodels: each factor's share of the variance with its interval,
    the largest first, and the interactions above ``threshold``; Morris: the ranking by mu_star.
    """
    rows = table.filter(pl.col("metric") == metric)
    if rows.height == 0:
        return None
    confidence = f"{rows['confidence'][0] * 100:g}%"
    method = rows["method"][0]
    if method == "morris":
        return _morris_sentence(rows, metric, confidence, max_factors)
    main_stat = "S1" if method == "saltelli" else "variance_share"
    mains = rows.filter((pl.col("statistic") == main_stat) & ~pl.col("factor").str.contains(":"))
    mains = mains.sort("value", descending=True).to_dicts()
    if not mains:
        return None
    shown = [m for m in mains[:max_factors] if m["value"] >= 0.01] or mains[:1]
    parts = [f"{shown[0]['factor']} explains {_share(shown[0])} of the variance of {metric}"]
    parts += [f"{m['factor']} {_share(m)}" for m in shown[1:]]
    rest = [m["factor"] for m in mains[len(shown):]]  # shown is a prefix of mains
    sentence = ", ".join(parts)
    if rest:  # named while few ("the other 1 factor less" hid which)
        named = (rest[0] if len(rest) == 1 else ", ".join(rest[:-1]) + " and " + rest[-1]
                 if len(rest) <= 3 else f"the other {len(rest)} factors")
        sentence += f" ({named} less)"
    sentence += "; " + _interactions(rows, method, threshold)
    sentence += f" ({confidence} intervals, {_how(method)})."
    if metamodel is not None:
        fit = metamodel.filter(pl.col("metric") == metric)
        if fit.height:
            sentence += " " + _fit_sentence(fit.row(0, named=True))
    return sentence


def _how(method: str) -> str:
    if method == "saltelli":
        return "Sobol' indices, bootstrap over base samples and replications"
    return ("metamodel with two-way interactions, bootstrap over design points and "
            "replications")


def _interactions(rows: pl.DataFrame, method: str, threshold: float) -> str:
    if method == "saltelli":
        pairs = rows.filter(pl.col("statistic") == "S2").to_dicts()
        if not pairs:  # without second order: what ST adds to S1
            s1 = {r["factor"]: r["value"] for r in rows.filter(pl.col("statistic") == "S1")
                  .to_dicts()}
            totals = rows.filter(pl.col("statistic") == "ST").to_dicts()
            pairs = [{**r, "factor": f"{r['factor']} (all its interactions)",
                      "value": r["value"] - s1.get(r["factor"], 0.0),
                      "ci_low": math.nan, "ci_high": math.nan} for r in totals]
    else:
        pairs = rows.filter((pl.col("statistic") == "variance_share")
                            & pl.col("factor").str.contains(":")).to_dicts()
    big = sorted((p for p in pairs if p["value"] > threshold), key=lambda p: -p["value"])
    if not big:
        return f"no interaction above {threshold * 100:g} %"
    shown = ", ".join(f"{p['factor']} {_share(p)}" for p in big[:3])
    return f"interaction{'s' if len(big) > 1 else ''} {shown}"


def _fit_sentence(fit: dict) -> str:
    text = (f"The metamodel explains R² = {fit['r_squared']:.2f} of the variance across the "
            "design")
    p = fit["lack_of_fit_p_value"]
    if p is None or not math.isfinite(p):
        return text + "."
    verdict = ("it misses some of the response (curvature or higher interactions)" if p < 0.05
               else "no evidence of lack of fit")
    return text + f"; against the replications' pure error, p = {p:.2g}: {verdict}."


def _morris_sentence(rows: pl.DataFrame, metric: str, confidence: str, max_factors: int) -> str:
    stars = rows.filter(pl.col("statistic") == "mu_star").sort("value", descending=True).to_dicts()
    sigma = {r["factor"]: r["value"] for r in rows.filter(pl.col("statistic") == "sigma")
             .to_dicts()}

    def item(r: dict) -> str:
        return f"{r['factor']} (μ* {r['value']:.3g}, {r['ci_low']:.3g}–{r['ci_high']:.3g})"

    shown = stars[:max_factors]
    text = (f"By Morris elementary effects ({confidence} intervals), {item(shown[0])} moves "
            f"{metric} most")
    if len(shown) > 1:
        text += ", then " + ", ".join(item(r) for r in shown[1:])
    text += "."
    curved = [r["factor"] for r in stars if r["value"] > 0 and sigma.get(r["factor"], 0)
              > r["value"]]
    if curved:
        text += (f" σ above μ* for {', '.join(curved)}: interactions or non-linear effects.")
    return text


def answer_sentences(table: pl.DataFrame, metrics: Sequence[str], *,
                     metamodel: pl.DataFrame | None = None) -> str | None:
    """``sensitivity_sentence`` for each of ``metrics`` that has rows, joined."""
    found = [sensitivity_sentence(table, m, metamodel=metamodel) for m in metrics]
    found = [s for s in found if s]
    return " ".join(found) if found else None




# ---------------------------------------------------------------------------------------------
# The report


def report_sections(result: Sensitivity, design: DesignPoints, summary: pl.DataFrame,
                    configurations: dict[str, dict[str, float]], metrics: Sequence[str]
                    ) -> list[tuple[str, str]]:
    """(heading, HTML) sections of the HTML report for each of ``metrics`` analysed: the
    sentence, the tornado plot, the main effects, the metamodel's fit and the table."""
    import html

    from simlab_pipelines.analysis import plots
    from simlab_pipelines.analysis.plots import img_tag as image
    from simlab_pipelines.analysis.report import html_table

    out = []
    analysed = set(result.table["metric"].to_list())
    for metric in (m for m in metrics if m in analysed):
        rows = result.table.filter(pl.col("metric") == metric)
        fit = result.metamodel.filter(pl.col("metric") == metric)
        sentence = sensitivity_sentence(result.table, metric, metamodel=result.metamodel)
        parts = [f"<p>{html.escape(sentence or '')}</p>",
                 image(plots.tornado_plot(result.table, metric), f"{metric}: sensitivity"),
                 image(plots.main_effects_plot(
                     summary, configurations, design.names, metric,
                     log_scale=[f.name for f in design.factors if f.scale == "log"]),
                     f"{metric}: main effects")]
        if fit.height and result.fitted is not None:
            row = fit.row(0, named=True)
            parts.append(image(plots.metamodel_fit_plot(
                result.fitted, metric, r_squared=row["r_squared"],
                lack_of_fit_p=row["lack_of_fit_p_value"]), f"{metric}: metamodel fit"))
            parts.append(html_table(fit, ["terms", "aliased", "points", "observations",
                                          "r_squared", "adjusted_r_squared", "lack_of_fit_f",
                                          "lack_of_fit_p_value"]))
        parts.append(html_table(rows, ["factor", "statistic", "value", "ci_low", "ci_high",
                                       "confidence"]))
        out.append((f"Which factors matter: {metric}", "\n".join(parts)))
    return out


__all__ = [
    "METAMODEL_SCHEMA",
    "SENSITIVITY_SCHEMA",
    "Sensitivity",
    "analyse_design",
    "answer_sentences",
    "elementary_effects",
    "lack_of_fit",
    "metamodel_terms",
    "morris_statistics",
    "report_sections",
    "sensitivity_sentence",
    "sobol_indices",
]
