"""Asset checks on an experiment's summary: nothing missing, and (for mmck) agreement with theory."""

import dagster as dg
import duckdb
from scipy import stats

from engine import theory
from simlab_pipelines.assets import replications_key, summary_key
from simlab_pipelines.experiments import ExperimentSpec
from simlab_pipelines.resources import SimlabStorage

# The theory check tests every (configuration, metric) at once; Bonferroni keeps the chance of a
# false alarm on a correct engine at most 1% per check evaluation.
THEORY_FAMILY_ALPHA = 0.01


def expected_partitions(spec: ExperimentSpec) -> set[str]:
    return {f"{c.key}|{r}" for c in spec.configurations_list() for r in range(spec.replications)}


def experiment_checks(spec: ExperimentSpec) -> list[dg.AssetChecksDefinition]:
    name = spec.name

    @dg.asset_check(asset=summary_key(name), name="no_missing_replications",
                    description="Every configuration x replication is materialised and summarised.")
    def no_missing(context: dg.AssetCheckExecutionContext, simlab: SimlabStorage) -> dg.AssetCheckResult:
        expected = expected_partitions(spec)
        materialized = context.instance.get_materialized_partitions(replications_key(name))
        missing = sorted(expected - set(materialized))
        with duckdb.connect(simlab.duckdb_path, read_only=True) as con:
            rows = con.execute("SELECT count(*), count(DISTINCT (config_key, replication)) "
                               "FROM replications WHERE experiment = ?", [name]).fetchone()
        return dg.AssetCheckResult(
            passed=not missing and rows[0] == len(expected) and rows[1] == rows[0],
            metadata={"expected": len(expected), "missing": len(missing),
                      "rows_in_duckdb": rows[0], "distinct_in_duckdb": rows[1],
                      "first_missing": dg.MetadataValue.json(missing[:20])},
        )

    checks = [no_missing]
    if spec.model == "mmck":

        @dg.asset_check(asset=summary_key(name), name="agrees_with_theory",
                        description="Simulated means agree with the M/M/c/K closed forms "
                                    f"(family-wise confidence {1 - THEORY_FAMILY_ALPHA:.0%}).")
        def agrees(simlab: SimlabStorage) -> dg.AssetCheckResult:
            return theory_check(spec, simlab.duckdb_path)

        checks.append(agrees)
    return checks


def theory_check(spec: ExperimentSpec, duckdb_path: str) -> dg.AssetCheckResult:
    """Every simulated mean's Bonferroni-adjusted t interval must contain the closed-form value."""
    configs = {c.key: c for c in spec.configurations_list()}
    with duckdb.connect(duckdb_path, read_only=True) as con:
        rows = con.execute("SELECT config_key, metric, n, mean, stddev FROM summary "
                           "WHERE experiment = ?", [spec.name]).fetchall()
    expected = {key: theory.expected_metrics(c.params) for key, c in configs.items()}
    tested = [(k, m, n, mean, sd) for k, m, n, mean, sd in rows if m in expected.get(k, {})]
    if not tested:
        return dg.AssetCheckResult(passed=False, metadata={"reason": "no summary rows to test"})
    level = 1 - THEORY_FAMILY_ALPHA / len(tested)
    failures, table = [], ["| configuration | metric | simulated | theory | half-width |",
                           "|---|---|---|---|---|"]
    for key, metric, n, mean, sd in tested:
        truth = expected[key][metric]
        half = stats.t.ppf(0.5 + level / 2, n - 1) * (sd or 0.0) / n**0.5 if n > 1 else float("inf")
        ok = abs(mean - truth) <= half + 1e-9 * (1 + abs(truth))
        table.append(f"| {key} | {metric} | {mean:.5g} | {truth:.5g} | {half:.3g} |"
                     + ("" if ok else " **outside**"))
        if not ok:
            failures.append(f"{key}/{metric}")
    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"intervals": len(tested), "outside": len(failures),
                  "per_interval_confidence": level, "failures": dg.MetadataValue.json(failures),
                  "comparison": dg.MetadataValue.md("\n".join(table))},
    )
