"""The three assets of an experiment, built from its validated file (group = experiment name):

- ``<name>/spec``: the validated definition; its hash is the data version (the lineage root);
- ``<name>/replications``: one partition per configuration x replication, one Parquet file each;
- ``<name>/summary``: the DuckDB tables, rebuilt when replications land.
"""

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.definitions.data_version import CODE_VERSION_TAG

try:  # where context.add_asset_metadata keeps its metadata (see add_partition_metadata)
    from dagster._core.execution.context.metadata_logging import (
        AssetMetadataHandle,
        OutputMetadataAccumulator,
    )
except ImportError:  # moved in a later Dagster: the public call is used
    AssetMetadataHandle = OutputMetadataAccumulator = None

import engine
from simlab_pipelines import (
    analysis,
    batch,
    claims,
    manifest,
    partitions,
    plan,
    settings,
    telemetry,
)
from simlab_pipelines import metadata as ui
from simlab_pipelines.analysis.headline import headline_metric
from simlab_pipelines.experiments import ExperimentSpec
from simlab_pipelines.experiments.responses import descriptions, headline_responses
from simlab_pipelines.failures import group_failures
from simlab_pipelines.partitions import split_block
from simlab_pipelines.resources import SimlabStorage
from simlab_pipelines.storage import stem
from simlab_pipelines.summary import (
    Analysis,
    Summary,
    corrupt_files,
    current_configurations,
    read_replications,
    summarise,
    write_database,
)

# Bump when the summary's tables change meaning; the engine's version covers the simulations.
SUMMARY_VERSION = "1"
# The replications' code version of built-in models; a plug-in's is its own (spec.code_version).
REPLICATIONS_CODE_VERSION = f"engine-{engine.ENGINE_VERSION}"
DUCKDB_POOL = "simlab_duckdb"
# The run's W3C traceparent. Dagster's UI hides tags under ".dagster/" (HIDDEN_TAG_PREFIX), and a
# 55-character id in every row of the runs list helps nobody: the trace id is in the metadata.
TRACEPARENT_TAG = ".dagster/simlab/traceparent"


def spec_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([name, "spec"])


def replications_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([name, "replications"])


def summary_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([name, "summary"])


def trace_link(trace_id: str) -> dg.MetadataValue | None:
    """A clickable trace link when SIMLAB_TRACE_URL_TEMPLATE (with ``{trace_id}``) is set."""
    template = os.environ.get("SIMLAB_TRACE_URL_TEMPLATE")
    if not template or not trace_id:
        return None
    return dg.MetadataValue.url(template.replace("{trace_id}", trace_id))


def _partition_metadata(outcome: batch.Outcome, store) -> dict[str, Any]:
    row, task = outcome.row, outcome.task
    if task.last != task.replication:
        return _block_metadata(outcome, store)
    metadata: dict[str, Any] = {
        "seed_entropy": row["seed_entropy"],
        "spawn_key": json.dumps(row["spawn_key"]),
        "params": dg.MetadataValue.json(json.loads(row["params"])),
        "wall_seconds": ui.rounded(row["wall_seconds"], 3),
        "events": row["events"],
        "path": dg.MetadataValue.path(store.url(task.experiment, task.config_key,
                                                task.replication)),
        "content_hash": outcome.content_hash or batch.data_version(row),
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
    }
    # Six significant digits in the UI; the exact values are in the Parquet file and DuckDB.
    metadata.update({name: ui.rounded(value, 6) for name, value in row["metrics"].items()})
    link = trace_link(row["trace_id"])
    if link is not None:
        metadata["trace"] = link
    return metadata


def _block_metadata(outcome: batch.Outcome, store) -> dict[str, Any]:
    """A block partition's metadata: its counts, time, file, first and last trace ids and each
    metric's mean over the block (every replication's own values are in its row, in DuckDB).
    Kept short (no parameters: the spec's configurations table has them): it is stored twice
    per partition in a SQLite instance, and a block's partitions are the ones that run by the
    hundred thousand."""
    rows, task = outcome.all_rows, outcome.task
    metadata: dict[str, Any] = {
        "replications": len(rows),
        "simulated": outcome.simulated,  # a re-run simulates only what a previous one lacked
        "seed_entropy": rows[0]["seed_entropy"],
        "wall_seconds": ui.rounded(sum(r["wall_seconds"] for r in rows), 3),
        "events": sum(r["events"] for r in rows),
        "path": dg.MetadataValue.path(store.url(task.experiment, task.config_key,
                                                stem(task.replication, task.last))),
        "content_hash": outcome.content_hash or batch.data_version(rows),
        "first_trace_id": rows[0]["trace_id"],
        "last_trace_id": rows[-1]["trace_id"],
    }
    metadata.update({f"{name}: mean": ui.rounded(sum(r["metrics"][name] for r in rows)
                                                  / len(rows), 6)
                     for name in rows[0]["metrics"]})
    link = trace_link(rows[0]["trace_id"])
    if link is not None:
        metadata["trace"] = link
    return metadata


def add_partition_metadata(context: dg.AssetExecutionContext,
                           metadata: dict[str, dict[str, Any]],
                           targeted: Sequence[str] | None = None) -> None:
    """Give each partition of the step's asset its own metadata, as
    ``context.add_asset_metadata(values, partition_key=key)`` for every key would.

    That public call checks its key against the run's partition range by building every key of
    the range again on each call: O(partitions²) a run, ~1.5 ms a partition at 100 partitions and
    ten times that at 1,000. Here the keys are checked once, against ``context.partition_keys``,
    and handed to the step's metadata accumulator in one step (the same accumulator the public
    call fills, read by Dagster when it builds the per-partition materializations). Should a
    Dagster release move that accumulator, the public call is used instead. ``targeted``: the
    run's partition keys if the caller has them (``context.partition_keys`` resolves the range
    again on every call: 0.7 s for 400 keys of a grid of 100 x 1,000).
    """
    targeted = {str(key) for key in (context.partition_keys if targeted is None else targeted)}
    unknown = [key for key in metadata if key not in targeted]
    if unknown:
        raise dg.DagsterInvariantViolationError(
            f"metadata for partition(s) {unknown[:5]} that this run does not target")
    step = getattr(context, "_step_execution_context", None)
    accumulator = getattr(step, "_metadata_accumulator", None)
    if OutputMetadataAccumulator is None or not isinstance(accumulator,
                                                           OutputMetadataAccumulator):
        for key, values in metadata.items():
            context.add_asset_metadata(values, partition_key=key)
        return
    merged = dict(accumulator.per_output_metadata)
    asset_key = context.asset_key  # a property that resolves the step's asset on every call
    for key, values in metadata.items():
        handle = AssetMetadataHandle(asset_key=asset_key, partition_key=key)
        merged[handle] = {**merged.get(handle, {}), **values}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=merged)


def _tasks(context: dg.AssetExecutionContext, spec: ExperimentSpec, storage: SimlabStorage,
           traceparent: str | None, keys: Sequence[str] | None = None) -> list[batch.Task]:
    configs = {c.key: c for c in spec.configurations_list()}
    if plan.is_search(spec):  # a search's proposals: read from their keys, else replayed
        configs = _search_configurations(spec, storage, context.partition_keys)
    partitions = []
    for key in context.partition_keys if keys is None else keys:
        config_key, first, last = split_block(key)
        if config_key not in configs:
            raise dg.Failure(
                description=f"{spec.name}: partition {key} names configuration {config_key!r}, "
                            "which is not among the search's proposals replayed from the "
                            "current results (were result files removed, or the file changed?)",
                allow_retries=False)
        partitions.append((str(key), config_key, first, last))
    return batch.spec_tasks(spec, partitions, configs, run_id=context.run_id,
                            results_uri=storage.results_uri, traceparent=traceparent)


def _search_configurations(spec: ExperimentSpec, storage: SimlabStorage, keys
                           ) -> dict[str, Any]:
    """The run's configurations of a search: from their readable keys when every key names
    one (no replay: a run process need not rebuild the optimiser), else the search replayed
    from the results."""
    from simlab_pipelines.search import configuration_of_key

    found = {}
    for key in keys:
        config_key = str(key).rpartition("|")[0]
        if config_key not in found:
            found[config_key] = configuration_of_key(spec, config_key)
    if all(c is not None for c in found.values()):
        return found
    return {c.key: c for c in current_configurations(spec, storage.store())}


def materialize_batch(context: dg.AssetExecutionContext, spec: ExperimentSpec,
                      storage: SimlabStorage) -> Iterator[dg.AssetMaterialization | dg.MaterializeResult]:
    """Run this run's partitions over the pool; one materialization per successful partition.

    When every simulation succeeds the step returns one MaterializeResult, and Dagster writes the
    per-partition materializations (with their own metadata) as one batch. When some fail, the
    successful ones are reported one by one and the step fails, naming the failed partitions.
    """
    telemetry.configure_tracing()
    run_tags = context.run.tags
    workers = storage.pool_size(run_tags)
    store = storage.store()
    keys = targeted = context.partition_keys  # resolved once: each call resolves the range
    # Partitions another unfinished run of the experiment holds (it started first), or did
    # since this run was created, are left to it: never run twice at once (claims.py).
    left = claims.held_elsewhere(context.instance, context.run_id, context.asset_key, keys,
                                 context.assets_def.partitions_def)
    if left:
        for line in claims.describe(left, len(keys)):
            context.log.warning(line)
        keys = [key for key in keys if str(key) not in left]
        if not keys:
            return
    succeeded: list[batch.Outcome] = []
    failures: list[batch.Outcome] = []
    attributes = {"simlab.experiment": spec.name, "dagster.run_id": context.run_id,
                  "simlab.partitions": len(keys), "simlab.workers": workers}
    with telemetry.attach_traceparent(run_tags.get(TRACEPARENT_TAG)), \
            telemetry.batch_span("simlab.batch", attributes):
        tasks = _tasks(context, spec, storage, telemetry.current_traceparent(), keys)
        context.log.info(f"{spec.name}: {len(tasks)} simulations on {min(workers, len(tasks))} "
                         f"worker(s), from {keys[0]} to {keys[-1]}")
        step = max(1, len(tasks) // 10)
        for done, outcome in enumerate(batch.execute(tasks, workers), start=1):
            if outcome.error is None:
                succeeded.append(outcome)
            else:
                failures.append(outcome)
                context.log.error(f"{outcome.task.partition_key} failed: {outcome.error}")
            if done % step == 0 or done == len(tasks):
                context.log.info(f"{spec.name}: {done}/{len(tasks)} simulations done")
    # The summary need not re-read these files; a failed block's file holds its other rows.
    manifest.record_run(store, spec.name, context.run_id, succeeded + failures)
    batch.simulated(not failures)  # a sweep may plan its next round from the files now
    if not failures and not left:  # all of the run's partitions: one result, batched
        add_partition_metadata(context, {o.task.partition_key: _partition_metadata(o, store)
                                         for o in succeeded}, targeted)
        yield dg.MaterializeResult()
        return
    for outcome in succeeded:
        task = outcome.task
        yield dg.AssetMaterialization(
            asset_key=context.asset_key, partition=task.partition_key,
            metadata=_partition_metadata(outcome, store),
            tags={CODE_VERSION_TAG: spec.code_version,
                  "dagster/partition/config": task.config_key,
                  "dagster/partition/replication": stem(task.replication, task.last)},
        )
    if not failures:
        return
    lines = [f"{o.task.partition_key}: {o.error}" for o in failures]
    groups = group_failures((o.task.partition_key, o.error or "") for o in failures)
    raise dg.Failure(
        description=f"{len(failures)} of {len(tasks)} simulations failed "
                    f"(the other partitions are kept):\n" + "\n".join(lines[:20]),
        metadata={"failed_partitions": dg.MetadataValue.json([o.task.partition_key
                                                               for o in failures]),
                  # Each failed partition's reason (a command's exit code and stderr tail).
                  "errors": dg.MetadataValue.json({o.task.partition_key: o.error
                                                   for o in failures[:20]}),
                  "first_traceback": dg.MetadataValue.md(f"```\n{failures[0].traceback}\n```"),
                  # Every failed partition, by the first line of its reason (simlab sweep's table).
                  "failure_reasons": dg.MetadataValue.json([g.to_dict() for g in groups])},
        allow_retries=False,  # a simulation that raised will raise again
    )


def _image(image: bytes, alt: str) -> dg.MetadataValue:
    # The UI renders markdown images, data URIs included (SVG and PNG), in a dialog ("[Show
    # Markdown]"): it inlines markdown under 1,000 characters only, and 1.13 has no image metadata
    # type. The plot travels with the event; the HTML report (the "report" entry) shows them all.
    return dg.MetadataValue.md(f"![{alt}]({analysis.plots.data_uri(image)})")


def configurations_table(spec: ExperimentSpec) -> dg.TableMetadataValue:
    """The spec's configurations: key, whether it is the baseline, the varying parameters (a
    search's factors instead: its configurations are proposed as it runs)."""
    space = spec.search_space
    if space is not None and space.threshold is not None:
        t = space.threshold
        return ui.records_table([{
            "factor": t.factor, "kind": "int" if t.integer else "float",
            "range": f"{t.min} .. {t.max}",
            "breaking point": f"{t.metric} {'<=' if t.increasing else '>='} {t.limit:g} "
                              f"to within {t.tolerance:g}"}],
            {"factor": "the breaking point's factor (method threshold)"})
    if space is not None:
        return ui.records_table([{
            "factor": f.name, "kind": f.kind,
            "range": (", ".join(str(v) for v in f.values) if f.kind == "values"
                      else f"{f.min} .. {f.max}" + (" (log)" if f.log else ""))}
            for f in space.factors], {"factor": f"searched by {space.method}"})
    rows = [{"config_key": c.key, "baseline": c.key == spec.baseline_key, **c.varying}
            for c in spec.configurations_list()]
    note = ("partition keys read <config_key>|<replication>" if spec.block_size == 1 else
            f"partition keys read <config_key>|<first>-<last>: blocks of {spec.block_size} "
            "replications")
    return ui.records_table(rows, {"config_key": note})


def beyond_plan_note(beyond: list[str]) -> str:
    """What the summary says of results the plan does not want (e.g. launched from the UI)."""
    shown = ", ".join(beyond[:10]) + (" ..." if len(beyond) > 10 else "")
    return (f"{len(beyond)} replication(s) beyond the plan are not in the analysis ({shown}): "
            "the sample is the file's replications plus the sequential rounds, so that no "
            "configuration gets replications the others do not (common random numbers pair "
            "them) and a stopping rule is not bent by results chosen after the fact")


_DESCRIPTIONS = {
    "n": "replications", "ci_low": "lower end of the t confidence interval",
    "relative_half_width": "half-width / |mean|",
    "paired": "paired over common random numbers (else Welch's unpaired interval)",
    "half_width_ratio": "paired / unpaired half-width: below 1, CRN narrowed the interval",
}


_CONSTRAINT_DESCRIPTIONS = {
    "ci_low": "one-sided lower bound at `level`", "ci_high": "one-sided upper bound at `level`",
    "level": "1 - (1 - confidence) / configurations (Bonferroni over the configurations)",
    "status": "feasible: the bound is within the limit; infeasible: the opposite bound is "
              "beyond it; undecided: neither (only feasible ones are recommended)",
}


def summary_metadata(spec: ExperimentSpec, result: Summary, duckdb_path: str,
                     beyond: list[str] | None = None, report: str | None = None) -> dict[str, Any]:
    """The summary's metadata in the UI: the answer, tables and plots of the headline metric;
    ``beyond``: keys of results outside the plan (reported, not used); ``report``: the HTML
    report's path."""
    # Here, not at the top: the analysis loads scipy, which a run of simulations never needs.
    from simlab_pipelines.analysis.answer import one_line_lists
    from simlab_pipelines.analysis.report import (
        highlight_roles,
        tradeoff_records,
        tradeoff_schema,
    )

    metric = headline_metric(spec)
    outcome = result.analysis
    summary, comparisons = result.summary, result.comparisons
    beyond = beyond or []
    metadata: dict[str, Any] = {}  # in the UI's order: the answer first
    if outcome.answer:
        footnote = (f"\n\n(Not used: {len(beyond)} replication(s) beyond the plan, see notes.)"
                    if beyond else "")
        # Text, not markdown: the UI shows text inline whatever its length, but puts markdown of
        # 1,000 characters or more (most answers) behind a "[Show Markdown]" link. It shows no
        # line breaks either, so the answer's lists are put on their lines as "•" items.
        metadata["answer"] = dg.MetadataValue.text(one_line_lists(outcome.answer) + footnote)
    stats = outcome.statistics
    roles = highlight_roles(spec.baseline_key, stats.recommendation,
                            stats.subset.best if stats.subset else None)
    units = spec.units()
    headline = ([spec.objective.metric] if spec.objective else []) + headline_responses(spec)
    if headline and summary.height:  # the decision's trade-offs, one row per configuration
        # Headed by names (the UI's tables do not wrap headers), described in the schema.
        metadata["tradeoffs"] = ui.records_table(tradeoff_records(
            summary, headline, configurations={c.key: c.varying
                                               for c in outcome.configurations},
            units=units, roles=roles, missing=outcome.missing),
            tradeoff_schema(headline, units, descriptions(spec)))
    if "constraints" in result.tables:  # each configuration on each constraint
        metadata["constraints"] = ui.table(
            result.tables["constraints"], ["config_key", "metric", "mean", "ci_low", "ci_high",
                                           "level", "status"], _CONSTRAINT_DESCRIPTIONS)
    if report:
        metadata["report"] = dg.MetadataValue.path(report)
    metadata.update({"replications": result.replications.height, "missing": result.missing,
                     "beyond_plan": len(beyond), "duckdb": dg.MetadataValue.path(duckdb_path)})
    if outcome.missing:  # per configuration: the answer is about the others
        metadata["missing_by_configuration"] = ui.records_table([
            {"configuration": key, "missing": lost, "wanted": wanted,
             "in the answer": "no" if lost >= wanted else "from the others"}
            for key, (lost, wanted) in sorted(outcome.missing.items())])
    if any(t.growing for t in outcome.trends):  # no steady state: its numbers mean nothing
        metadata["steady_state"] = ui.records_table([
            {"configuration": t.config_key, "series or metric": t.series, "test": t.test,
             "growth": ui.rounded(t.relative_growth, 3),
             "p_value": None if t.p_value is None else ui.rounded(t.p_value, 4),
             "steady state": "no: keeps growing" if t.growing else "yes"}
            for t in outcome.trends])
    rows = summary.filter(pl.col("metric") == metric)
    metadata["metric"] = metric  # of the tables and plots below
    metadata["unit"] = units.get(metric) or ""
    metadata["summary"] = ui.table(
        rows, ["config_key", "n", "mean", "ci_low", "ci_high", "relative_half_width"],
        _DESCRIPTIONS)
    if rows.height:
        metadata["intervals_plot"] = _image(
            analysis.ci_plot(summary, metric, highlights=roles, unit=units.get(metric)),
            f"{metric} per configuration")
    diffs = comparisons.filter(pl.col("metric") == metric)
    if diffs.height:
        metadata["comparisons"] = ui.table(
            diffs, ["config_key", "baseline_key", "paired", "n", "mean_difference", "ci_low",
                    "ci_high"], _DESCRIPTIONS)
        metadata["crn_effect"] = ui.table(analysis.crn_effect(diffs),
                                          ["config_key", "baseline_key", "half_width_ratio"],
                                          _DESCRIPTIONS)
        metadata["differences_plot"] = _image(
            analysis.differences_plot(diffs, metric, unit=units.get(metric)),
            f"{metric}: differences")
    if spec.precision is not None:
        metadata["precision"] = ui.table(
            result.tables["precision"], ["config_key", "replications", "rounds", "status",
                                         "relative_half_width", "target_relative_half_width"],
            _DESCRIPTIONS)
    if outcome.warmup:
        metadata["warmup"] = ui.table(
            result.tables["warmup"], ["config_key", "series", "suggested_warmup",
                                      "experiment_warmup", "bias_p_value", "biased"])
    notes = list(outcome.notes) + ([beyond_plan_note(beyond)] if beyond else [])
    if notes:
        metadata["notes"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in notes))
    if beyond:
        metadata["beyond_plan_keys"] = dg.MetadataValue.json(beyond[:100])
    metadata.update(sensitivity_metadata(spec, result))
    metadata.update(search_metadata(spec, result))
    return metadata


_SEARCH_CHARTS = {"convergence_plot": "best feasible objective by round",
                  "configurations_plot": "evaluated configurations",
                  "threshold_plot": "the metric against the factor, with the limit"}


def search_metadata(spec: ExperimentSpec, result: Summary) -> dict[str, Any]:
    """With a search: how far it got (configurations, rounds, why it stopped), the
    recommendation, and its charts (convergence and the evaluated configurations, or the
    breaking point's)."""
    searched = result.analysis.search
    if searched is None:
        return {}
    space = spec.search_space
    table = searched.tables["search"]
    first = table.filter(pl.col("stage") == "first")
    metadata: dict[str, Any] = {"search": dg.MetadataValue.json({
        "method": space.method, "optimiser": space.optimiser,
        "configurations": first.height, "space": space.size,
        "rounds": int(first["round"].max() + 1) if first.height else 0,
        "recommended": searched.recommended})}
    metadata.update({name: _image(svg, _SEARCH_CHARTS.get(name, name))
                     for name, svg in searched.charts.items()})
    return metadata


def design_metadata(spec: ExperimentSpec) -> dict[str, Any]:
    """With a design: its method, sampler rows, generator and version, and a fractional
    factorial's generators (the aliasing a reader needs)."""
    design = spec.design_points
    if design is None:
        return {}
    return {"design": dg.MetadataValue.json({
        "method": design.method, "rows": design.rows,
        "configurations": len(design.configurations), "generator": design.generator,
        "factors": {f.name: {"min": f.min, "max": f.max, "type": f.type, "scale": f.scale}
                    for f in design.factors},
        **({"generators": list(design.generators)} if design.generators else {})})}


def sensitivity_metadata(spec: ExperimentSpec, result: Summary) -> dict[str, Any]:
    """With a design: which factors matter for its headline metric (the sensitivity table and
    tornado plot), its main effects, and the metamodel's fit for regression designs."""
    found = result.analysis.sensitivity
    if found is None or found.table.is_empty():
        return {}
    plots, table = analysis.plots, found.table
    analysed = set(table["metric"].to_list())
    metric = next((m for m in [*(spec.design.metrics or []), headline_metric(spec)]
                   if m in analysed), sorted(analysed)[0])
    rows = table.filter(pl.col("metric") == metric)
    design = spec.design_points
    configurations = {c.key: c.varying for c in result.analysis.configurations}
    metadata: dict[str, Any] = {
        "sensitivity": dg.MetadataValue.md(
            f"Which factors matter for **{metric}** ({rows['method'][0]}, "
            f"{spec.confidence:.0%} intervals)\n\n" + analysis.markdown_table(
                rows, ["factor", "statistic", "value", "ci_low", "ci_high"])),
        "tornado_plot": _image(plots.tornado_plot(table, metric), f"{metric}: sensitivity"),
        "main_effects_plot": _image(plots.main_effects_plot(
            result.summary, configurations, design.names, metric,
            log_scale=[f.name for f in design.factors if f.scale == "log"]),
            f"{metric}: main effects"),
    }
    fit = found.metamodel.filter(pl.col("metric") == metric)
    if fit.height and found.fitted is not None:
        row = fit.row(0, named=True)
        metadata["metamodel"] = dg.MetadataValue.md(analysis.markdown_table(
            fit, ["terms", "aliased", "points", "r_squared", "adjusted_r_squared",
                  "lack_of_fit_f", "lack_of_fit_p_value"]))
        metadata["metamodel_fit_plot"] = _image(plots.metamodel_fit_plot(
            found.fitted, metric, r_squared=row["r_squared"],
            lack_of_fit_p=row["lack_of_fit_p_value"]), f"{metric}: metamodel fit")
    return metadata


def build_experiment_summary(spec: ExperimentSpec, storage: SimlabStorage, log=None) -> Summary:
    """Compute and write the experiment's DuckDB tables inside a ``simlab.summary`` span linked
    to the simulations it aggregates (at most telemetry.MAX_LINKS of them); returns the Summary."""
    store = storage.store()
    with corrupt_files() as corrupt:  # named in the run's log (the UI), not only on stderr
        reps = read_replications(spec, store)
    links = (list(zip(reps["trace_id"].to_list(), reps["span_id"].to_list(), strict=True))
             if reps.height else [])
    with telemetry.summary_span(links, attributes={"simlab.experiment": spec.name}):
        result = summarise(spec, store, reps)
        write_database(spec, result, storage.duckdb_path, publish_to=store)
    if log is not None:
        for message in corrupt:
            log.warning(message)
        log.info(f"{spec.name}: summary of {result.replications.height} replications "
                 f"({result.missing} missing) written to {storage.duckdb_path}")
        for note in result.analysis.notes:
            log.warning(f"{spec.name}: {note}")
    return result


def html_report(spec: ExperimentSpec, duckdb_path: str, log=None,
                analysis: Analysis | None = None) -> str | None:
    """Write the experiment's HTML report (``simlab report``) next to the DuckDB file; its path,
    or None when it could not be written (the summary stands without it). ``analysis``: the
    summary's own, written to that file just now (else it is read back from the file)."""
    # Loads scipy: only to report.
    from simlab_pipelines.report import report_path, write_analysis_report, write_experiment_report

    try:
        if analysis is not None:
            return str(write_analysis_report(spec, analysis,
                                             report_path(spec.name, Path(duckdb_path))))
        return str(write_experiment_report(spec.name, Path(duckdb_path)))
    except Exception as exc:  # a report is a convenience, never a failed summary
        if log is not None:
            log.warning(f"{spec.name}: HTML report not written: {exc}")
        return None


def experiment_assets(spec: ExperimentSpec) -> list[dg.AssetsDefinition]:
    """The spec, replications and summary assets of one experiment."""
    name = spec.name
    configs = spec.configurations_list()

    @dg.asset(key=spec_key(name), group_name=name, code_version=SUMMARY_VERSION,
              description=f"The validated definition of '{name}' (data version: the hash of "
                          "what its simulations depend on).")
    def spec_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        wanted = plan.wanted_partitions(spec, {})  # the file's replications
        if plan.is_sequential(spec):  # the UI offers them before any round has run
            partitions.add_keys(context.instance, name, wanted)
        return dg.MaterializeResult(
            # Not the whole file's hash: adding configurations or replications, or changing the
            # analysis, must not make the existing replications stale.
            data_version=dg.DataVersion(spec.simulation_hash()),
            metadata={
                "file": dg.MetadataValue.path(str(spec.source)) if spec.source else "",
                "model": spec.model_name, "question": spec.question or spec.description,
                "seed": spec.seed, "replications": spec.replications,
                "partitions": len(wanted),
                "configurations": configurations_table(spec),
                "spec_hash": spec.spec_hash(),
                **design_metadata(spec),
                "simulation_hash": spec.simulation_hash(),
                "definition": dg.MetadataValue.json(json.loads(spec.model_dump_json())),
            },
        )

    batch_size = spec.max_partitions_per_run or settings.max_partitions_per_run()

    def replications_asset(context: dg.AssetExecutionContext, simlab: SimlabStorage):
        yield from materialize_batch(context, spec, simlab)

    # backfill_policy is a beta parameter: not worth a warning on every load of every experiment.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        replications_asset = dg.asset(
            key=replications_key(name), deps=[spec_key(name)], group_name=name,
            # Exactly the partitions the file wants; a sequential experiment's grow by rounds.
            partitions_def=partitions.partitions_def(name, [c.key for c in configs],
                                                     spec.replications, plan.is_sequential(spec),
                                                     spec.block_size),
            backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=batch_size),
            output_required=False, code_version=spec.code_version, kinds={"parquet"},
            retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL,
                                        jitter=dg.Jitter.PLUS_MINUS),
            description=f"One {spec.model_name} simulation per configuration x replication of "
                        f"'{name}'.",
        )(replications_asset)

    @dg.asset(
        key=summary_key(name), deps=[replications_key(name)], group_name=name,
        code_version=SUMMARY_VERSION, pool=DUCKDB_POOL, kinds={"duckdb"},
        automation_condition=summary_automation(),
        description=f"DuckDB tables of '{name}': replications, observations, t intervals, "
                    "paired comparisons, precision, warm-up and the answer.",
    )
    def summary_asset(context: dg.AssetExecutionContext, simlab: SimlabStorage) -> dg.MaterializeResult:
        telemetry.configure_tracing()
        with telemetry.attach_traceparent(context.run.tags.get(TRACEPARENT_TAG)):
            result = build_experiment_summary(spec, simlab, context.log)
        targets = {k: t.replications for k, t in result.analysis.targets.items()}
        beyond = partitions.beyond_plan(targets, simlab.store().existing(name))
        if beyond:
            context.log.warning(f"{name}: {beyond_plan_note(beyond)}")
        return dg.MaterializeResult(metadata=summary_metadata(
            spec, result, simlab.duckdb_path, beyond, html_report(
                spec, simlab.duckdb_path, context.log, result.analysis)))

    return [spec_asset, replications_asset, summary_asset]


def summary_automation() -> dg.AutomationCondition:
    """Rebuild the summary when replications land, also while some are still missing."""
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("replications landed")
