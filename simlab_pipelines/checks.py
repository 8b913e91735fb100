"""Asset checks on an experiment's summary: nothing missing, precision reached, warm-up long
enough, every configuration in a steady state, and (with ``check_theory``, mmck only) agreement
with queueing theory."""

import json

import dagster as dg
import duckdb

from simlab_pipelines import analysis, plan
from simlab_pipelines.analysis.theory import THEORY_FAMILY_ALPHA, compare_with_theory
from simlab_pipelines.analysis.theory import expected_values as expected_values  # public here
from simlab_pipelines.assets import replications_key, summary_key
from simlab_pipelines.experiments import Configuration, ExperimentSpec
from simlab_pipelines.resources import SimlabStorage


def expected_partitions(spec: ExperimentSpec, duckdb_path: str) -> set[str]:
    """The partitions wanted now: the file's replications, plus the sequential rounds so far."""
    return _expected(spec, duckdb_path)[0]


def _expected(spec: ExperimentSpec, duckdb_path: str,
              con: duckdb.DuckDBPyConnection | None = None) -> tuple[set[str], int]:
    """The partitions wanted now, and the replications they hold (more than the partitions
    when a partition is a block of replications). ``con``: a connection to ``duckdb_path``
    the caller holds (opening one takes ~10 ms)."""
    if con is None:
        with duckdb.connect(duckdb_path, read_only=True) as con:
            return _expected(spec, duckdb_path, con)
    # A fixed design wants its file's replications whatever the results: only a sequential
    # experiment's targets are replayed from them (reading them cost a short sweep ~20 ms).
    query = ("SELECT experiment, config_key, replication, metric, value FROM observations "
             f"WHERE experiment = ?{'' if plan.is_sequential(spec) else ' LIMIT 0'}")
    targets = plan.replication_targets(spec, con.sql(query, params=[spec.name]).pl())
    replications = sum(last - first + 1 for _, first, last in plan.wanted_blocks(spec, targets))
    return set(plan.wanted_partitions(spec, targets)), replications


def experiment_checks(spec: ExperimentSpec) -> list[dg.AssetChecksDefinition]:
    name = spec.name

    @dg.asset_check(asset=summary_key(name), name="no_missing_replications",
                    description="Every configuration x replication is materialised and summarised.")
    def no_missing(context: dg.AssetCheckExecutionContext, simlab: SimlabStorage) -> dg.AssetCheckResult:
        with duckdb.connect(simlab.duckdb_path, read_only=True) as con:
            expected, replications = _expected(spec, simlab.duckdb_path, con)
            rows = con.execute("SELECT count(*), count(DISTINCT (config_key, replication)) "
                               "FROM replications WHERE experiment = ?", [name]).fetchone()
        materialized = context.instance.get_materialized_partitions(replications_key(name))
        missing = sorted(expected - set(materialized))
        by_configuration: dict[str, int] = {}
        for key in missing:
            config = key.rsplit("|", 1)[0]
            by_configuration[config] = by_configuration.get(config, 0) + 1
        return dg.AssetCheckResult(
            # rows are replications: a block partition holds several
            passed=not missing and rows[0] == replications and rows[1] == rows[0],
            metadata={"expected": len(expected), "expected_replications": replications,
                      "missing": len(missing),
                      "rows_in_duckdb": rows[0], "distinct_in_duckdb": rows[1],
                      "missing_by_configuration": dg.MetadataValue.json(by_configuration),
                      "first_missing": dg.MetadataValue.json(missing[:20])},
        )

    checks = [no_missing]
    if spec.precision is not None:
        precision = spec.precision

        @dg.asset_check(asset=summary_key(name), name="precision_reached",
                        description=f"Every configuration's {precision.confidence:.0%} interval on "
                                    f"{precision.metric} has a relative half-width of at most "
                                    f"{precision.relative_half_width:g}.")
        def precision_reached(simlab: SimlabStorage) -> dg.AssetCheckResult:
            return _table_check(simlab.duckdb_path, name, "precision", "status = 'met'",
                                ["config_key", "replications", "rounds", "status",
                                 "relative_half_width", "target_relative_half_width"],
                                dg.AssetCheckSeverity.ERROR)

        checks.append(precision_reached)
    if spec.series_interval is not None:

        @dg.asset_check(asset=summary_key(name), name="warmup_long_enough",
                        description="No recorded series shows initial-condition bias after the "
                                    "experiment's warm-up (MSER-5, then a paired t test at 1%).")
        def warmup_long_enough(simlab: SimlabStorage) -> dg.AssetCheckResult:
            return _table_check(simlab.duckdb_path, name, "warmup", "NOT biased AND NOT at_boundary",
                                ["config_key", "series", "suggested_warmup", "experiment_warmup",
                                 "bias_p_value", "at_boundary"], dg.AssetCheckSeverity.WARN)

        checks.append(warmup_long_enough)
    if spec.series_interval is not None or spec.doubling_sample:
        how = ("recorded state keeps growing over the run (last quarter against the third" if
               spec.series_interval is not None else
               f"level metrics keep growing with the run's length (the first "
               f"{spec.doubling_sample} replications run again at twice the horizon")

        @dg.asset_check(asset=summary_key(name), name="steady_state",
                        description=f"No configuration's {how}, one-sided paired t at 1 % and "
                                    "at least 5 % growth): a growing one has no steady state, "
                                    "and its means measure only the run's length.")
        def steady_state(simlab: SimlabStorage) -> dg.AssetCheckResult:
            return _table_check(simlab.duckdb_path, name, "steady_state", "NOT growing",
                                ["config_key", "test", "series", "metric", "third_quarter_mean",
                                 "last_quarter_mean", "horizon_mean", "double_horizon_mean",
                                 "relative_growth", "p_value"],
                                dg.AssetCheckSeverity.WARN,
                                empty="not tested: no series long enough for the trend test "
                                      "(8 batch means after the warm-up at least) and no level "
                                      "metric run at twice the horizon")

        checks.append(steady_state)
    if spec.check_theory:

        @dg.asset_check(asset=summary_key(name), name="agrees_with_theory",
                        description="Simulated means, percentiles and fraction_wait_over agree "
                                    "with the M/M/c/K closed forms (family-wise confidence "
                                    f"{1 - THEORY_FAMILY_ALPHA:.0%}, Bonferroni).")
        def agrees(simlab: SimlabStorage) -> dg.AssetCheckResult:
            return theory_check(spec, simlab.duckdb_path)

        checks.append(agrees)
    return checks


def _table_check(duckdb_path: str, experiment: str, table: str, condition: str,
                 columns: list[str], severity: dg.AssetCheckSeverity,
                 empty: str | None = None) -> dg.AssetCheckResult:
    """Passes when every row of ``table`` for ``experiment`` satisfies ``condition``; without
    rows it fails, unless ``empty`` says why that is fine."""
    with duckdb.connect(duckdb_path, read_only=True) as con:
        rows = con.sql(f"SELECT *, ({condition}) AS ok FROM {table} WHERE experiment = ? "
                       "ORDER BY config_key", params=[experiment]).pl()
    if rows.height == 0 and empty is not None:
        return dg.AssetCheckResult(passed=True, severity=severity, metadata={"reason": empty})
    if rows.height == 0:
        return dg.AssetCheckResult(passed=False, severity=severity,
                                   metadata={"reason": f"no rows in table {table}"})
    failing = rows.filter(~rows["ok"])
    return dg.AssetCheckResult(
        passed=failing.height == 0, severity=severity,
        metadata={"rows": rows.height, "failing": failing.height,
                  "failing_configurations": dg.MetadataValue.json(failing["config_key"].to_list()),
                  table: dg.MetadataValue.md(analysis.markdown_table(rows, columns))})


def theory_check(spec: ExperimentSpec, duckdb_path: str) -> dg.AssetCheckResult:
    """Every simulated mean's Bonferroni-adjusted t interval must contain the closed-form value.

    Tested: the means, the percentiles of the wait and of the time in system (their closed forms:
    the M/M/c/K waiting-time distribution, ``engine.theory.wait_distribution``) and
    fraction_wait_over; each is a per-replication value, so its t interval over the replications
    is ordinary. Wait percentiles on the atom at 0 (``QUANTILE_ATOM_MARGIN``) are left out.

    A metric that was the same in every replication has no t interval (its standard deviation is
    0): it must equal the theory, except a blocking probability of 0 where blocking is so rare
    that no blocked arrival was to be expected (e.g. 1e-6 at light load).
    """
    configs = {c.key: c for c in spec.configurations_list()}
    with duckdb.connect(duckdb_path, read_only=True) as con:
        rows = con.execute("SELECT config_key, metric, n, mean, stddev FROM summary "
                           "WHERE experiment = ?", [spec.name]).fetchall()
        if spec.search_space is not None:  # a search's proposals, as the summary recorded them
            configs = {key: Configuration(key, json.loads(params), json.loads(varying))
                       for key, params, varying in con.execute(
                           "SELECT config_key, params, varying FROM configurations "
                           "WHERE experiment = ?", [spec.name]).fetchall()}
    comparison = compare_with_theory(rows, {k: c.params for k, c in configs.items()},
                                     spec.resolved_horizon)
    if not comparison.rows:
        return dg.AssetCheckResult(passed=False, metadata={
            "reason": "no summary rows to test",
            "no_steady_state": dg.MetadataValue.json(comparison.unstable)})
    table = ["| configuration | metric | simulated | theory | half-width |", "|---|---|---|---|---|"]
    table += [f"| {r.config_key} | {r.metric} | {r.mean:.5g} | {r.theory:.5g} | "
              f"{r.half_width:.3g} |" + ("" if r.within else " **outside**")
              for r in comparison.rows]
    return dg.AssetCheckResult(
        passed=comparison.agrees,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"intervals": len(comparison.rows), "outside": len(comparison.failures),
                  "per_interval_confidence": comparison.level,
                  "failures": dg.MetadataValue.json(comparison.failures),
                  "no_steady_state": dg.MetadataValue.json(comparison.unstable),
                  "not_tested_on_atom": dg.MetadataValue.json(comparison.on_atom),
                  "comparison": dg.MetadataValue.md("\n".join(table))},
    )
