"""Why results are stale: what changed between the inputs a result file was made from and the
experiment file now, counted per change, so that a sweep that runs partitions again says why
("model version 1 → 2: 40 results are stale").

A result is stale when its inputs hash (``ExperimentSpec.inputs_hash``) is not the one its
configuration has now; each stale file is compared field by field with what the spec would give
it: the code version (a plug-in's model version, the engine's for a built-in), the model, seed,
horizon, warm-up and parameters. What the file does not record (common random numbers, the
series interval, a command's declaration) is named together when nothing recorded differs, but
for the steady-state check's sample at twice the horizon (``horizon_doubling``), which a sampled
replication's file shows by holding that run or not.
"""

import json
import os
from collections import Counter
from typing import Any

import polars as pl

from simlab_pipelines.experiments import ExperimentSpec
from simlab_pipelines.storage import ResultStore


def _version_change(found: str, now: str) -> str:
    """``model version 1 → 2`` / ``engine version a → b`` / ``code version x → y``."""
    for prefix, what in (("engine-", "engine version"),):
        if found.startswith(prefix) and now.startswith(prefix):
            return f"{what} {found[len(prefix):]} → {now[len(prefix):]}"
    old, new = found.rsplit("-", 1), now.rsplit("-", 1)
    if found.startswith("model-") and now.startswith("model-") and old[0] == new[0]:
        return f"model version {old[1]} → {new[1]}"
    return f"code version {found} → {now}"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _changes(row: dict[str, Any], spec: ExperimentSpec, params: dict[str, Any],
             doubling: str | None = None) -> str:
    """What differs between a stale file's recorded inputs and its configuration's now
    (``doubling``: how its configuration's sample at twice the horizon changed, if it did)."""
    changes = [doubling] if doubling else []
    if row.get("code_version") and row["code_version"] != spec.code_version:
        changes.append(_version_change(row["code_version"], spec.code_version))
    if row.get("model") and row["model"] != spec.model_name:
        changes.append(f"model {row['model']} → {spec.model_name}")
    for field, now in (("seed_entropy", spec.seed), ("horizon", spec.resolved_horizon),
                       ("warmup", spec.resolved_warmup)):
        found = row.get(field)
        if found is not None and float(found) != float(now):
            name = "seed" if field == "seed_entropy" else field.replace("warmup", "warm-up")
            changes.append(f"{name} {_number(found)} → {_number(now)}")
    recorded = json.loads(row["params"]) if row.get("params") else {}
    for name in sorted(set(recorded) | set(params)):
        if recorded.get(name) != params.get(name):
            changes.append(f"{name} {_number(recorded.get(name))} → {_number(params.get(name))}")
    return ", ".join(changes) or ("other inputs (common random numbers, series interval or the "
                                  "model's declaration)")


def stale_reasons(spec: ExperimentSpec, store: ResultStore) -> list[str]:
    """One line per change that made results of ``spec``'s configurations stale, most results
    first: ``"model version 1 → 2: 40 results are stale"``; empty when none are."""
    if store.is_local and not os.path.isdir(os.path.join(store.root, spec.name)):
        return []  # a first sweep: nothing to read (not even the manifest)
    from simlab_pipelines import plan
    from simlab_pipelines.resources import default_storage
    from simlab_pipelines.summary import landed_rows, summarised_counts

    if plan.is_search(spec):  # a search's configurations come from the results themselves
        return []
    # A summary of this definition holding every replication, no result file changed since:
    # no file can hold another definition's result (it would be missing from the counts).
    counts = summarised_counts(spec, store, default_storage().duckdb_path)
    if counts is not None and all(counts.get(key) == (spec.replications, 0,
                                                      spec.replications - 1)
                                  for key in spec.config_keys()):
        return []
    # As planning reads them (the runs' fragments and the manifest, no stat of every file):
    # a sweep with nothing to do reads no more than that.
    frame = landed_rows(spec, store, ["code_version", "model", "seed_entropy", "horizon",
                                      "warmup", "params", "inputs_hash", "double_horizon"])
    if frame.is_empty() or "inputs_hash" not in frame.columns:
        return []
    configurations = {c.key: c for c in spec.configurations_list()}
    expected = pl.DataFrame({"config_key": list(configurations),
                             "_expected": [spec.inputs_hash(c) for c in configurations.values()]},
                            schema={"config_key": pl.String, "_expected": pl.String})
    columns = [c for c in ("config_key", "replication", "code_version", "model", "seed_entropy",
                           "horizon", "warmup", "params", "inputs_hash", "double_horizon")
               if c in frame.columns]
    stale = frame.select(columns).join(expected, on="config_key", how="inner").filter(
        pl.col("inputs_hash") != pl.col("_expected"))
    doubling = _doubling_changes(spec, stale)
    counts: Counter[str] = Counter()
    for row in stale.drop("_expected").iter_rows(named=True):
        counts[_changes(row, spec, configurations[row["config_key"]].params,
                        doubling.get(row["config_key"]))] += 1
    return [f"{change}: {n} result{'s are' if n != 1 else ' is'} stale"
            for change, n in counts.most_common()]


def _doubling_changes(spec: ExperimentSpec, stale: pl.DataFrame) -> dict[str, str]:
    """config_key -> ``steady-state sample at twice the horizon added`` (or ``removed``) where a
    stale file of one of the first ``horizon_doubling`` replications shows the other setting."""
    if "double_horizon" not in stale.columns or "replication" not in stale.columns:
        return {}
    sample = spec.doubling_sample
    sampled = stale.filter(pl.col("replication") < max(sample, 1))
    if sample:  # now on: a sampled file without that run was made without it
        changed = sampled.filter(pl.col("double_horizon").is_null())
        what = "steady-state check's runs at twice the horizon added (horizon_doubling)"
    else:
        changed = sampled.filter(pl.col("double_horizon").is_not_null())
        what = "steady-state check's runs at twice the horizon dropped (horizon_doubling: 0)"
    return dict.fromkeys(changed["config_key"].unique().to_list(), what)
