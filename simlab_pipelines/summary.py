"""The summary step: read an experiment's replication files, analyse them, and build the DuckDB file.

Tables (each has an ``experiment`` column; DESIGN.md "Storage" and the analysis issue):

- ``experiments``, ``configurations``: the validated definition; ``metrics``: every metric and
  response with its unit, direction and definition;
- ``replications``: every replication with its inputs, seed, code version, run id and trace id;
- ``observations``: one row per (replication, metric); ``series``: the recorded time series;
- ``summary``: t confidence intervals per configuration and metric (with relative half-width);
- ``comparisons``: paired (CRN) and unpaired differences to the baseline;
- ``precision``: the sequential procedure's state per configuration (with ``precision``);
- ``warmup``: MSER-5 warm-up suggestions (with ``series_interval``);
- ``answers``: the plain answer, the best configuration and what cannot be ruled out;
- ``constraints`` (with ``constraints``): each configuration's status on each constraint
  (feasible / infeasible / undecided, one-sided bounds, ``analysis.constraints``);
- ``sensitivity``, ``metamodel`` (with a ``design``): which factors matter, with intervals
  (``analysis.sensitivity``).

The file is rebuilt into a new file and swapped in with an atomic rename, so a reader never sees a
half-built database and never blocks the writer (it keeps reading the file it opened). Other
experiments' rows are carried over from the previous file. An exclusive lock file serialises
builders, whatever launched them.

When the results live in an object store (``SIMLAB_RESULTS_URI=s3://...``), the finished file is
also published there as ``<results>/_summary/simlab.duckdb`` (``_summary`` cannot be an experiment
name), for readers outside the cluster. DuckDB cannot write to S3 without its httpfs extension, so
the file is always built locally and uploaded whole, while the lock is held: uploads happen in the
order of the swaps, so the object is the newest database, with every experiment in it.
"""

import contextlib
import dataclasses
import fcntl
import glob
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import polars as pl

from simlab_pipelines import plan
from simlab_pipelines.experiments import Configuration, ExperimentSpec
from simlab_pipelines.experiments.keys import config_key as key_of
from simlab_pipelines.experiments.responses import (
    COST_RESPONSE,
    add_responses,
    descriptions,
    headline_responses,
)
from simlab_pipelines.manifest import landed, read_with_manifest
from simlab_pipelines.query import query  # summary.query: callers import it here too
from simlab_pipelines.storage import CorruptResultFile, ResultStore

# The analysis is imported where it runs (analyse): it loads scipy (~0.3 s), and this module is
# loaded by every process that builds the definitions, most of which never analyse.
if TYPE_CHECKING:
    from simlab_pipelines.analysis import ExperimentAnalysis
    from simlab_pipelines.analysis.sensitivity import Sensitivity
    from simlab_pipelines.analysis.stationarity import Trend
    from simlab_pipelines.analysis.warmup import WarmupSuggestion
    from simlab_pipelines.search_tables import SearchSummary

log = logging.getLogger("simlab.summary")

KEYS = ["experiment", "config_key", "replication"]
READ_CHUNK = 2_000  # replication files per read_parquet call
# Where the database is published in an object store, relative to the results root.
PUBLISHED_DATABASE = "_summary/simlab.duckdb"
SERIES_SCHEMA = {"experiment": pl.String, "config_key": pl.String, "replication": pl.Int64,
                 "series": pl.String, "index": pl.Int64, "value": pl.Float64}
# The steady-state check's runs at twice the horizon (``double_horizon`` of a result row): a
# metric's value per replication, or (metric null) why the run failed.
DOUBLED_SCHEMA = {"config_key": pl.String, "replication": pl.Int64, "metric": pl.String,
                  "value": pl.Float64, "error": pl.String}
OBSERVATION_SCHEMA = {"experiment": pl.String, "config_key": pl.String, "replication": pl.Int64,
                      "metric": pl.String, "value": pl.Float64}


@dataclass(frozen=True)
class Warmup:
    """MSER-5 on one configuration's series ``series``."""

    config_key: str
    series: str
    suggestion: "WarmupSuggestion"


@dataclass(frozen=True)
class Analysis:
    """Everything the summary step derives from an experiment's observations."""

    targets: dict[str, plan.Target]
    observations: pl.DataFrame       # the ones analysed: replications the targets want
    series: pl.DataFrame             # likewise
    statistics: "ExperimentAnalysis"  # intervals, comparisons, selection, answer
    warmup: list[Warmup]
    notes: list[str]                 # what a user should know (short warm-up, precision)
    sensitivity: "Sensitivity | None" = None  # with a design: which factors matter
    configurations: tuple[Configuration, ...] = ()  # the file's, or a search's proposals
    # config_key -> (replications missing, wanted): failed or not run, said in the answer
    missing: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    trends: list["Trend"] = dataclasses.field(default_factory=list)  # steady-state trend tests
    # with a search: its tables, answer, recommendation and charts (search_tables.py)
    search: "SearchSummary | None" = None
    theory: str | None = None  # with check_theory: simulated against closed forms, in words

    @property
    def answer(self) -> str | None:
        if self.search is not None and self.search.answer:
            # The clean-up's answer: analyse_experiment's compares unequal replications.
            return self.search.answer
        parts = [self.statistics.answer, self.sensitivity.answer if self.sensitivity else None]
        rest = " ".join(p for p in parts if p) or None
        # check_theory asks "does the simulator agree with theory?": that answer comes first
        return "\n\n".join(p for p in (self.theory, rest) if p) or None


@dataclass(frozen=True)
class Summary:
    """What a build produced for one experiment."""

    experiment: str
    expected: int  # partitions wanted now (configurations x their target replications)
    replications: pl.DataFrame  # one row per replication found (metrics struct included)
    observations: pl.DataFrame
    series: pl.DataFrame
    analysis: Analysis
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)  # what write_database stores

    @property
    def missing(self) -> int:
        return self.expected - self.replications.height

    @property
    def summary(self) -> pl.DataFrame:
        return self.analysis.statistics.summary

    @property
    def comparisons(self) -> pl.DataFrame:
        return self.analysis.statistics.comparisons


def read_replications(spec: ExperimentSpec, store: ResultStore) -> pl.DataFrame:
    """The replication rows of every partition of ``spec`` (any replication up to its maximum)
    whose file was made from the spec's current inputs (``ExperimentSpec.inputs_hash``); files
    from other inputs (a changed seed, horizon, fixed parameter or engine) are left out: stale."""
    return _current(spec, read_all_replications(spec, store))


def _current(spec: ExperimentSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``frame`` made from the spec's current inputs, one per replication (one
    found in two files, e.g. blocks of another size, counts once)."""
    if frame.is_empty():
        return frame
    hashes = _search_hashes(spec, frame) if plan.is_search(spec) else _expected_hashes(spec)
    return frame.join(hashes, on=["config_key", "inputs_hash"], how="semi").unique(
        subset=["config_key", "replication"], keep="last", maintain_order=True)


def _search_hashes(spec: ExperimentSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """The current (config_key, inputs_hash) of a search's files: a search's configurations
    are its proposals, which the replay derives from these very rows, so each row is judged by
    its own parameters: current when its key is the key of its factors' values and its hash is
    the one the spec gives those parameters now (a file made with another seed, horizon, fixed
    parameter, engine or set of factors is stale)."""
    names = spec.search_space.names
    keys, hashes = [], []
    for key, params, found in frame.select("config_key", "params", "inputs_hash").unique(
            ).iter_rows():
        values = json.loads(params)
        varying = {name: values.get(name) for name in names}
        if key == key_of(varying) and found == spec.inputs_hash(
                Configuration(key, values, varying)):
            keys.append(key)
            hashes.append(found)
    return pl.DataFrame({"config_key": keys, "inputs_hash": hashes},
                        schema={"config_key": pl.String, "inputs_hash": pl.String})


def _expected_hashes(spec: ExperimentSpec) -> pl.DataFrame:
    configs = spec.configurations_list()
    return pl.DataFrame({"config_key": [c.key for c in configs],
                         "inputs_hash": [spec.inputs_hash(c) for c in configs]})


def read_all_replications(spec: ExperimentSpec, store: ResultStore) -> pl.DataFrame:
    """Every replication file of ``spec``'s partitions, stale or not (a search's: every
    configuration's, its proposals being derived from them)."""
    def present() -> list[tuple[str, str]]:
        files = _files(spec, store)
        return list(zip(files["config_key"], files["file"], strict=True))

    if store.is_local:  # only the files that are new or changed since the last read
        frame = read_with_manifest(
            store.root, spec.name, present,
            lambda key: store.path(spec.name, *key),
            lambda keys: _read_files(spec.name, keys, store))
    else:
        keys = present()
        frame = _read_files(spec.name, keys, store) if keys else pl.DataFrame()
    if frame.height and "_file" in frame.columns:
        frame = frame.drop("_file")
    if frame.height:  # a block file may hold replications beyond the most a file wants now
        frame = frame.filter(pl.col("replication") < spec.max_replications)
    return frame.sort(["config_key", "replication"]) if frame.height else frame


def _files(spec: ExperimentSpec, store: ResultStore) -> pl.DataFrame:
    """The result files of ``spec``'s partitions (``ResultStore.listing``): its configurations'
    (a search's: any), starting below its most replications."""
    files = store.listing(spec.name).filter(pl.col("first") < spec.max_replications)
    if not plan.is_search(spec):
        files = files.filter(pl.col("config_key").is_in(spec.config_keys()))
    return files


def _read_files(experiment: str, keys: list[tuple[str, int | str]], store: ResultStore
                ) -> pl.DataFrame:
    """The rows of the replication files ``keys`` ((config_key, stem)), each with its file's
    stem as ``_file`` (corrupt files moved aside and left out)."""
    options = _polars_storage_options(store)
    frames = []
    # One-row files: reading them one after another beats splitting each across threads; and in
    # chunks, because one call over tens of thousands of files grows faster than linearly.
    for i in range(0, len(keys), READ_CHUNK):
        chunk = keys[i:i + READ_CHUNK]
        try:
            frames.append(pl.read_parquet(store.files(experiment, chunk), parallel="none",
                                          storage_options=options or None,
                                          include_file_paths="_file").with_columns(
                pl.col("_file").str.extract(r"([^/]*)\.parquet$")))
        except (Exception, pl.exceptions.PanicException):
            # polars names no file: find the bad one(s) file by file (rare, so not fast).
            frames += _read_one_by_one(experiment, chunk, store)
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames, how="diagonal_relaxed")


_CORRUPT: ContextVar[list[str] | None] = ContextVar("simlab_corrupt_files", default=None)


@contextlib.contextmanager
def corrupt_files() -> Iterator[list[str]]:
    """Collect the warnings about corrupt result files met inside (for a Dagster run's own log,
    which Python's logging does not reach)."""
    found: list[str] = []
    token = _CORRUPT.set(found)
    try:
        yield found
    finally:
        _CORRUPT.reset(token)


def _read_one_by_one(experiment: str, keys: list[tuple[str, int | str]],
                     store: ResultStore) -> list[pl.DataFrame]:
    """The readable files of ``keys``. A corrupt one is moved aside with a warning naming it, so
    its partition counts as missing and the next sweep (or the file sensor) runs it again; one
    that vanished meanwhile is simply missing."""
    frames = []
    for config_key, replication in keys:
        try:
            frame = store.read(experiment, config_key, replication)
        except CorruptResultFile as exc:
            try:
                moved = store.quarantine(experiment, config_key, replication)
            except OSError as err:  # e.g. a read-only results directory: skip it all the same
                moved, why = None, f"could not move it aside ({err})"
            else:
                why = f"moved aside to {moved}" if moved else "it was removed meanwhile"
            message = (f"corrupt result file {exc.path}: {exc.reason}; {why}. Partition "
                       f"{config_key}|{replication} counts as missing: a sweep runs it again.")
            log.warning(message)
            if (sink := _CORRUPT.get()) is not None:
                sink.append(message)
            continue
        if frame is not None:
            frames.append(frame.with_columns(pl.lit(str(replication)).alias("_file")))
    return frames


def _polars_storage_options(store: ResultStore) -> dict[str, str] | None:
    if store.is_local:
        return None
    options = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["aws_endpoint_url"] = endpoint
        if endpoint.startswith("http://"):
            options["aws_allow_http"] = "true"
    for var, key in (("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
                     ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
                     ("AWS_REGION", "aws_region"), ("AWS_DEFAULT_REGION", "aws_region")):
        if os.environ.get(var) and key not in options:
            options[key] = os.environ[var]
    return options


def observations(replications: pl.DataFrame, spec: ExperimentSpec | None = None) -> pl.DataFrame:
    """Long format: one row per (experiment, config_key, replication, metric); with ``spec``,
    its responses too, evaluated per replication (``experiments.responses``), as metrics."""
    if replications.is_empty():
        return pl.DataFrame(schema=OBSERVATION_SCHEMA)
    wide = replications.select(*KEYS, pl.col("metrics").struct.unnest())
    if spec is not None and spec.parsed_responses:
        if plan.is_search(spec):  # a search's proposals: their parameters are in their rows
            params = {key: json.loads(text) for key, text in replications.select(
                "config_key", "params").unique("config_key").iter_rows()}
        else:
            params = {c.key: c.params for c in spec.configurations_list()}
        wide = add_responses(wide, spec.parsed_responses, params)
    return wide.unpivot(index=KEYS, variable_name="metric", value_name="value").sort(
        ["config_key", "metric", "replication"])


def series_frame(replications: pl.DataFrame) -> pl.DataFrame:
    """Long format of the recorded series: (experiment, config_key, replication, series, index,
    value); observation ``index`` covers ``[index·w, (index+1)·w)`` from time 0."""
    rows: dict[str, list] = {name: [] for name in SERIES_SCHEMA}
    if "series" in replications.columns:
        for experiment, key, replication, text in replications.select(
                *KEYS, "series").drop_nulls("series").iter_rows():
            for name, values in json.loads(text).items():
                count = len(values)
                rows["experiment"] += [experiment] * count
                rows["config_key"] += [key] * count
                rows["replication"] += [replication] * count
                rows["series"] += [name] * count
                rows["index"] += range(count)
                rows["value"] += values
    return pl.DataFrame(rows, schema=SERIES_SCHEMA)


def doubled_frame(replications: pl.DataFrame) -> pl.DataFrame:
    """Long format of the runs at twice the horizon (``DOUBLED_SCHEMA``): one row per
    (config_key, replication, metric), or one with the error of a run that failed."""
    rows: dict[str, list] = {name: [] for name in DOUBLED_SCHEMA}
    if "double_horizon" in replications.columns:
        for key, replication, text in replications.select(
                "config_key", "replication", "double_horizon").drop_nulls().iter_rows():
            record = json.loads(text)
            values = record.get("metrics") or {None: None}
            for metric, value in values.items():
                rows["config_key"].append(key)
                rows["replication"].append(replication)
                rows["metric"].append(metric)
                rows["value"].append(value)
                rows["error"].append(record.get("error"))
    return pl.DataFrame(rows, schema=DOUBLED_SCHEMA)


def current_configurations(spec: ExperimentSpec, store: ResultStore) -> list[Configuration]:
    """The experiment's configurations now: the file's, or a search's proposals replayed from
    its current results (what a run needs to find its keys' parameters)."""
    if not plan.is_search(spec):
        return spec.configurations_list()
    return plan.configurations(spec, observations(landed_replications(spec, store), spec))


def landed_replications(spec: ExperimentSpec, store: ResultStore, values: bool = True
                        ) -> pl.DataFrame:
    """The current rows of ``spec``'s result files, for planning (keys and inputs hash; with
    ``values``, the metrics and parameters the rounds replay): on a local disk from the runs'
    fragments and the manifest without reading or stat-ing every file (``manifest.landed``);
    one row per replication."""
    columns = ["experiment", "inputs_hash", "params", "metrics"] if values else ["inputs_hash"]
    frame = landed_rows(spec, store, columns)
    return _current(spec, frame) if frame.height else frame


def summarised_counts(spec: ExperimentSpec, store: ResultStore, db_path: Path,
                      since: float | None = None) -> dict[str, tuple[int, int, int]] | None:
    """Each configuration's (count, first, last) replication in the DuckDB file, when that file
    holds the whole story of a fixed experiment's results: built from this very definition and
    no result file written, renamed or removed since ``since`` (default: the file's own time;
    the configurations' directories' mtimes tell, ``ResultStore.unchanged_since``). None when
    it may not: then the rows are read (a million of them: seconds and hundreds of MB; these
    counts: milliseconds)."""
    if plan.uses_results(spec) or not store.is_local:
        return None
    try:
        since = os.path.getmtime(db_path) if since is None else since
        if not store.unchanged_since(spec.name, since, spec.config_keys()):
            return None
        _, hashes = query("SELECT spec_hash FROM experiments WHERE experiment = ?", db_path,
                          [spec.name])
        if hashes != [(spec.spec_hash(),)]:
            return None
        # The file's hash leaves out what the model's code says (a plug-in's version, the
        # engine's): the rows must also have been made from the inputs the spec has now.
        _, rows = query("SELECT config_key, inputs_hash, count(*), min(replication), "
                        "max(replication) FROM replications WHERE experiment = ? "
                        "GROUP BY config_key, inputs_hash", db_path, [spec.name])
    except (OSError, duckdb.Error):
        return None
    expected = {c.key: spec.inputs_hash(c) for c in spec.configurations_list()}
    if any(expected.get(key) != inputs for key, inputs, *_ in rows):
        return None
    return {key: (n, low, high) for key, _, n, low, high in rows}


def landed_rows(spec: ExperimentSpec, store: ResultStore, columns: list[str]) -> pl.DataFrame:
    """``columns`` (with config_key and replication) of every row of ``spec``'s result files,
    stale or not, as planning reads them: from the runs' fragments and the manifest where they
    account for a file (``manifest.landed``: no stat of every file), else from the files."""
    files = _files(spec, store)
    if store.is_local:
        frame = landed(store.root, spec.name, files, columns,
                       lambda key: store.path(spec.name, *key),
                       lambda keys: _read_files(spec.name, keys, store))
    else:
        keys = list(zip(files["config_key"], files["file"], strict=True))
        frame = _read_files(spec.name, keys, store) if keys else pl.DataFrame()
    if frame.is_empty():
        return frame
    return frame.filter(pl.col("replication") < spec.max_replications)


def current_results(spec: ExperimentSpec, store: ResultStore
                    ) -> tuple[dict[str, plan.Target], pl.DataFrame]:
    """The replication targets now, and the (config_key, replication) of every current result
    as a frame (``landed_replications``: no file read or stat-ed that the runs' fragments and
    the manifest already account for)."""
    uses = plan.uses_results(spec)
    frame = landed_replications(spec, store, values=uses)
    present = (frame.select("config_key", "replication") if frame.height
               else pl.DataFrame(schema={"config_key": pl.String, "replication": pl.Int64}))
    obs = observations(frame, spec) if uses else pl.DataFrame(schema=OBSERVATION_SCHEMA)
    return plan.replication_targets(spec, obs), present


def _replication_limit(frame: pl.DataFrame, targets: Mapping[str, plan.Target]) -> pl.DataFrame:
    """Only the replications the targets want (later ones are ignored, not deleted)."""
    if frame.is_empty():
        return frame
    limits = pl.DataFrame({"config_key": list(targets),
                           "_limit": [t.replications for t in targets.values()]},
                          schema={"config_key": pl.String, "_limit": pl.Int64})
    return frame.join(limits, on="config_key", how="inner").filter(
        pl.col("replication") < pl.col("_limit")).drop("_limit")


def analyse(spec: ExperimentSpec, obs: pl.DataFrame, series: pl.DataFrame,
            doubled: pl.DataFrame | None = None) -> Analysis:
    """Targets, intervals, comparisons, selection, answer, warm-up and steady state of one
    experiment (``doubled``: ``doubled_frame``, the runs at twice the horizon)."""
    from simlab_pipelines.analysis import analyse_experiment

    targets = plan.replication_targets(spec, obs)
    progress = _search_progress(spec, obs)
    obs = _replication_limit(obs, targets)
    series = _replication_limit(series, targets)
    objective = spec.objective
    configurations = tuple(plan.configurations(spec, obs))
    configs = {c.key: c.varying for c in configurations}
    if obs.is_empty():
        raise ValueError(f"experiment {spec.name!r}: no replication results yet")
    missing = _missing(targets, obs)
    trends = _trends(spec, series)
    doubling, doubling_notes = _doubling(spec, obs, doubled)
    trends += doubling
    names = descriptions(spec)
    result = analyse_experiment(
        obs, experiment=spec.name, baseline=spec.baseline_key, confidence=spec.confidence,
        objective_metric=objective.metric if objective else None,
        minimize=objective is None or objective.direction == "minimize",
        indifference_zone=objective.indifference_zone if objective else None,
        common_random_numbers=spec.common_random_numbers, question=spec.question or None,
        configurations=configs, n0=spec.replications, all_pairs=spec.compare_all_pairs,
        units=spec.units(), tradeoffs=headline_responses(spec),
        cost_metric=COST_RESPONSE if COST_RESPONSE in spec.responses else None,
        compare_pairs=spec.design is None, constraints=_limits(spec),
        descriptions=names, missing=missing, unstable=_growing(trends, names),
        precision=_precision_words(spec), parameter_units=spec.parameter_units())
    warmups = _warmups(spec, series)
    notes = [w.suggestion.warning for w in warmups if w.suggestion.warning]
    notes += [f"{t.config_key}: no steady state: the {t.words(names.get(t.series))} keeps "
              f"growing" + (f" (p = {t.p_value:.2g}); its results depend on the run's length"
                            if t.p_value is not None else "")
              for t in trends if t.growing]
    notes += doubling_notes
    notes += _precision_notes(spec, targets)
    notes += undefined_notes(result.summary)
    sensitivity = _sensitivity(spec, obs)
    notes += sensitivity.notes if sensitivity is not None else []
    searched = None
    if progress is not None:
        from simlab_pipelines.search_tables import summarise_search

        searched = summarise_search(spec, progress, obs, result.summary)
    theory = _theory(spec, configurations, result.summary) if spec.check_theory else None
    return Analysis(targets, obs, series, result, warmups, notes, sensitivity, configurations,
                    missing, trends, searched, theory)


def _theory(spec: ExperimentSpec, configurations: Sequence[Configuration],
            summary: pl.DataFrame) -> str | None:
    """With ``check_theory``: each configuration's simulated values against their closed forms,
    in words (the comparison the ``agrees_with_theory`` check judges)."""
    from simlab_pipelines.analysis.theory import compare_with_theory, theory_text
    from simlab_pipelines.analysis.words import Words

    comparison = compare_with_theory(
        summary.select("config_key", "metric", "n", "mean", "stddev").iter_rows(),
        {c.key: c.params for c in configurations}, spec.resolved_horizon)
    words = Words({c.key: c.varying for c in configurations}, None, spec.units(),
                  descriptions(spec), spec.parameter_units())
    return theory_text(comparison, words)


def _search_progress(spec: ExperimentSpec, obs: pl.DataFrame):
    """Where a search stands (None without one), from the same observations as its targets."""
    if not plan.is_search(spec):
        return None
    from simlab_pipelines import search

    return search.progress(spec, obs.filter(pl.col("experiment") == spec.name)
                           if "experiment" in obs.columns else obs)


def _precision_words(spec: ExperimentSpec) -> str | None:
    """How the replications were counted, for the answer's analysts' paragraph."""
    precision = spec.precision
    if precision is None:
        return None
    name = descriptions(spec).get(precision.metric) or precision.metric.replace("_", " ")
    return (f"added in rounds until every {precision.confidence * 100:g} % interval of {name} "
            f"was within {precision.relative_half_width * 100:g} % of its mean, at most "
            f"{precision.max_replications}")


def _missing(targets: Mapping[str, plan.Target], obs: pl.DataFrame) -> dict[str, tuple[int, int]]:
    """config_key -> (replications missing, wanted), for configurations short of their target
    (failed, or not run yet)."""
    present = dict(obs.group_by("config_key").agg(pl.col("replication").n_unique())
                   .iter_rows()) if obs.height else {}
    return {key: (t.replications - present.get(key, 0), t.replications)
            for key, t in targets.items() if present.get(key, 0) < t.replications}


def _trends(spec: ExperimentSpec, series: pl.DataFrame) -> list["Trend"]:
    """The steady-state trend test of every recorded series per configuration."""
    if spec.series_interval is None or series.is_empty():
        return []
    from simlab_pipelines.analysis.stationarity import trends_by_configuration

    rows = {key: [g.sort("index")["value"].to_numpy()
                  for _, g in group.group_by("replication", maintain_order=True)]
            for key, group in series.group_by("config_key", "series")}
    return trends_by_configuration(rows, spec.series_interval, spec.resolved_warmup)


def _doubling(spec: ExperimentSpec, obs: pl.DataFrame, doubled: pl.DataFrame | None
              ) -> tuple[list["Trend"], list[str]]:
    """The horizon-doubling test of every level metric per configuration (the replications run
    at twice the horizon against the same ones at the horizon), and a note for every
    configuration where such a run failed."""
    if doubled is None or doubled.is_empty() or obs.is_empty():
        return [], []
    from simlab_pipelines.analysis.stationarity import ALPHA, doubling_test

    notes = [f"{key}: the steady-state check's run at twice the horizon failed for {n} "
             f"replication(s), left out of it: {error}"
             for key, n, error in doubled.filter(pl.col("metric").is_null())
             .group_by("config_key").agg(pl.len(), pl.col("error").first())
             .sort("config_key").iter_rows()]
    pairs = obs.filter(pl.col("metric").is_in(spec.level_metrics)).join(
        doubled.drop_nulls("metric").select("config_key", "replication", "metric",
                                            pl.col("value").alias("doubled")),
        on=["config_key", "replication", "metric"], how="inner")
    tested = dict(pairs.group_by("config_key").agg(pl.col("metric").n_unique()).iter_rows())
    trends = []
    for (key, metric), group in sorted(pairs.group_by("config_key", "metric"),
                                       key=lambda item: item[0]):
        group = group.sort("replication")
        trend = doubling_test(group["value"].to_numpy(), group["doubled"].to_numpy(),
                              config_key=key, metric=metric, alpha=ALPHA / tested[key])
        if trend is not None:
            trends.append(trend)
    return trends, notes


def _growing(trends: list["Trend"], names: Mapping[str, str]) -> dict[str, str]:
    if not any(t.growing for t in trends):
        return {}
    from simlab_pipelines.analysis.stationarity import growing

    return growing(trends, names)


def _sensitivity(spec: ExperimentSpec, obs: pl.DataFrame) -> "Sensitivity | None":
    """With a design: the sensitivity of its metrics (all, unless ``design.metrics`` names
    some); the answer is about those named, else the objective's or precision's metric."""
    design = spec.design_points
    if design is None:
        return None
    from simlab_pipelines.analysis.sensitivity import analyse_design

    named = spec.design.metrics
    headline = named or [target.metric for target in (spec.objective, spec.precision)
                         if target is not None][:1]
    result = analyse_design(obs, design, spec.config_keys(), experiment=spec.name,
                            metrics=named, confidence=spec.confidence, seed=spec.design.seed,
                            answer_metrics=headline or sorted(set(obs["metric"]))[:1])
    if not named:  # every metric was tried: notes on those that could not be are noise
        return dataclasses.replace(result, notes=[])
    return result


def _warmups(spec: ExperimentSpec, series: pl.DataFrame) -> list[Warmup]:
    if spec.series_interval is None or series.is_empty():
        return []
    from simlab_pipelines.analysis.warmup import suggest_warmup

    out = []
    for (key, name), group in sorted(series.group_by("config_key", "series"),
                                     key=lambda g: g[0]):
        rows = [g.sort("index")["value"].to_numpy()
                for _, g in group.group_by("replication", maintain_order=True)]
        try:
            suggestion = suggest_warmup(rows, spec.series_interval,
                                        experiment_warmup=spec.resolved_warmup,
                                        name=f"{key}/{name}")
        except ValueError:  # too short a series for MSER-5: nothing to suggest
            continue
        out.append(Warmup(key, name, suggestion))
    return out


def _limits(spec: ExperimentSpec) -> list:
    """The file's constraints for the analysis (each at its confidence, or the file's). None for
    a search: its statuses and recommendation are the clean-up's (the ``search`` table), and
    statuses judged over every proposal at once would contradict them."""
    if not spec.constraints or plan.is_search(spec):
        return []
    from simlab_pipelines.analysis.constraints import limits

    return limits(spec.constraints, spec.confidence)


def undefined_notes(summary: pl.DataFrame, shown: int = 8) -> list[str]:
    """One note per metric that was undefined (NaN) in some replications: where, how often, and
    which configurations never had a value of it (they keep their summary rows, n = 0, and are
    left out of the comparisons and the selection on it)."""
    notes = []
    rows = summary.filter(pl.col("undefined") > 0).sort("metric", "config_key")
    for (metric,), group in rows.group_by("metric", maintain_order=True):
        counts = [f"{key} {undefined} of {n + undefined}" for key, n, undefined
                  in group.select("config_key", "n", "undefined").iter_rows()]
        more = f" and {len(counts) - shown} more configurations" if len(counts) > shown else ""
        note = (f"{metric} was undefined (NaN) in some replications ({', '.join(counts[:shown])}"
                f"{more}); its intervals are over the replications with a value")
        never = group.filter(pl.col("n") == 0)["config_key"].to_list()
        if never:
            note += (f"; {', '.join(never[:shown])}{' ...' if len(never) > shown else ''} never "
                     "had one, so no comparison or selection includes "
                     f"{'it' if len(never) == 1 else 'them'} on {metric}")
        notes.append(note)
    return notes


def _precision_notes(spec: ExperimentSpec, targets: Mapping[str, plan.Target]) -> list[str]:
    if spec.precision is None:
        return []
    wanted = spec.precision.relative_half_width
    notes = []
    for target in targets.values():
        p = target.plan
        if target.status == "max_reached" and p is not None:
            notes.append(f"{target.config_key}: relative half-width {p.relative_half_width:.3g} "
                         f"on {spec.precision.metric} is above the target {wanted:g} after the "
                         f"maximum of {spec.precision.max_replications} replications")
        elif target.status == "undefined":
            notes.append(f"{target.config_key}: the interval on {spec.precision.metric} contains "
                         "0, so a relative precision is undefined; use a metric away from 0")
    return notes


def _precision_table(spec: ExperimentSpec, targets: Mapping[str, plan.Target]) -> pl.DataFrame:
    precision = spec.precision
    rows = [{
        "experiment": spec.name, "config_key": t.config_key, "replications": t.replications,
        "rounds": t.rounds, "status": t.status,
        "observed": t.plan.observed if t.plan else None,
        "mean": t.plan.mean if t.plan else None,
        "half_width": t.plan.half_width if t.plan else None,
        "relative_half_width": t.plan.relative_half_width if t.plan else None,
        "target_relative_half_width": precision.relative_half_width if precision else None,
        "confidence": precision.confidence if precision else None,
        "max_replications": spec.max_replications,
        "selection_required": t.selection_required,
    } for t in targets.values()]
    return pl.DataFrame(rows, schema_overrides={
        "observed": pl.Int64, "mean": pl.Float64, "half_width": pl.Float64,
        "relative_half_width": pl.Float64, "target_relative_half_width": pl.Float64,
        "confidence": pl.Float64, "selection_required": pl.Int64})


def _warmup_table(spec: ExperimentSpec, warmups: list[Warmup]) -> pl.DataFrame:
    schema = {"experiment": pl.String, "config_key": pl.String, "series": pl.String,
              "series_interval": pl.Float64, "replications": pl.Int64, "truncation": pl.Int64,
              "suggested_warmup": pl.Float64, "mean_replication_warmup": pl.Float64,
              "experiment_warmup": pl.Float64, "at_boundary": pl.Boolean, "shorter": pl.Boolean,
              "bias_p_value": pl.Float64, "biased": pl.Boolean, "warning": pl.String}
    rows = [{
        "experiment": spec.name, "config_key": w.config_key, "series": w.series,
        "series_interval": w.suggestion.series_interval,
        "replications": w.suggestion.replications, "truncation": w.suggestion.truncation,
        "suggested_warmup": w.suggestion.suggested_warmup,
        "mean_replication_warmup": w.suggestion.mean_replication_warmup,
        "experiment_warmup": w.suggestion.experiment_warmup,
        "at_boundary": w.suggestion.at_boundary, "shorter": w.suggestion.shorter,
        "bias_p_value": w.suggestion.bias_p_value, "biased": w.suggestion.biased,
        "warning": w.suggestion.warning,
    } for w in warmups]
    return pl.DataFrame(rows, schema=schema)


def _steady_state_table(spec: ExperimentSpec, trends: list["Trend"]) -> pl.DataFrame:
    """One row per configuration and recorded series (the trend test: ``test = 'trend'``, the
    third and last quarters' means) or level metric (``'horizon_doubling'``: its means at the
    horizon and at twice it); analysis.stationarity."""
    from simlab_pipelines.analysis.stationarity import DOUBLING

    schema = {"experiment": pl.String, "config_key": pl.String, "test": pl.String,
              "series": pl.String, "metric": pl.String, "replications": pl.Int64,
              "third_quarter_mean": pl.Float64, "last_quarter_mean": pl.Float64,
              "horizon_mean": pl.Float64, "double_horizon_mean": pl.Float64,
              "relative_growth": pl.Float64, "p_value": pl.Float64, "growing": pl.Boolean}
    rows = []
    for t in trends:
        doubling = t.test == DOUBLING
        rows.append({"experiment": spec.name, "config_key": t.config_key, "test": t.test,
                     "series": None if doubling else t.series,
                     "metric": t.series if doubling else None,
                     "replications": t.replications,
                     "third_quarter_mean": None if doubling else t.before,
                     "last_quarter_mean": None if doubling else t.after,
                     "horizon_mean": t.before if doubling else None,
                     "double_horizon_mean": t.after if doubling else None,
                     "relative_growth": t.relative_growth, "p_value": t.p_value,
                     "growing": t.growing})
    return pl.DataFrame(rows, schema=schema)


_ANSWERS_SCHEMA = {"experiment": pl.String, "metric": pl.String, "direction": pl.String,
                   "answer": pl.String, "best": pl.String, "not_ruled_out": pl.String,
                   "selection_procedure": pl.String, "selected": pl.String,
                   "confidence": pl.Float64, "recommended": pl.String}


def _answers_table(spec: ExperimentSpec, result: "ExperimentAnalysis") -> pl.DataFrame:
    if spec.objective is None:  # no question of "best": the comparisons' answer, if any
        if not result.answer:
            return pl.DataFrame(schema=_ANSWERS_SCHEMA)
        return pl.DataFrame([{"experiment": spec.name, "answer": result.answer,
                              "confidence": spec.confidence}], schema=_ANSWERS_SCHEMA)
    subset, selection = result.subset, result.selection
    return pl.DataFrame([{
        "experiment": spec.name, "metric": spec.objective.metric,
        "direction": spec.objective.direction, "answer": result.answer,
        "best": subset.best if subset else None,
        "not_ruled_out": json.dumps(list(subset.keep)) if subset else None,
        "selection_procedure": selection.procedure if selection else None,
        "selected": selection.best if selection else None,
        "confidence": spec.confidence,
        "recommended": result.recommendation.choice if result.recommendation else None,
    }], schema=_ANSWERS_SCHEMA)


def _with_sensitivity(spec: ExperimentSpec, answers: pl.DataFrame,
                      result: Analysis) -> pl.DataFrame:
    """The answers row with the sentences on which factors matter (a row of its own without
    an objective)."""
    if not result.sensitivity.answer:
        return answers
    if answers.height:
        return answers.with_columns(pl.lit(result.answer).alias("answer"))
    return pl.DataFrame([{"experiment": spec.name, "answer": result.sensitivity.answer,
                          "metric": ", ".join(spec.design.metrics or []) or None,
                          "confidence": spec.confidence}], schema=_ANSWERS_SCHEMA)


def _search_answers(spec: ExperimentSpec, answers: pl.DataFrame, result: Analysis
                    ) -> pl.DataFrame:
    """A search's answers row: the clean-up's answer and recommendation (the threshold search's
    breaking point), not the comparison of all evaluated configurations."""
    searched = result.search
    space = spec.search_space
    row = answers.row(0, named=True) if answers.height else {
        "experiment": spec.name,
        "metric": space.threshold.metric if space.threshold is not None else None,
        "confidence": spec.confidence}
    row.update(answer=searched.answer or row.get("answer"), recommended=searched.recommended,
               selected=searched.recommended,
               selection_procedure=("clean-up" if space.threshold is None else "threshold"))
    return pl.DataFrame([row], schema=_ANSWERS_SCHEMA)


def summarise(spec: ExperimentSpec, store: ResultStore,
              replications: pl.DataFrame | None = None) -> Summary:
    """Read (unless given) an experiment's replication files and compute its tables."""
    reps = read_replications(spec, store) if replications is None else replications
    result = analyse(spec, observations(reps, spec), series_frame(reps), doubled_frame(reps))
    reps, obs, series = _replication_limit(reps, result.targets), result.observations, result.series
    tables = _spec_tables(spec, result.configurations)
    tables["replications"] = reps.drop("metrics", "series", "double_horizon", strict=False)
    tables["observations"] = obs
    tables["series"] = series
    tables["summary"] = result.statistics.summary
    tables["comparisons"] = result.statistics.comparisons
    tables["precision"] = _precision_table(spec, result.targets)
    tables["warmup"] = _warmup_table(spec, result.warmup)
    tables["steady_state"] = _steady_state_table(spec, result.trends)
    tables["answers"] = _answers_table(spec, result.statistics)
    if result.search is not None:
        tables.update(result.search.tables)
        tables["answers"] = _search_answers(spec, tables["answers"], result)
    if result.statistics.feasibility is not None:
        tables["constraints"] = result.statistics.feasibility.table(spec.name)
    if result.sensitivity is not None:
        tables["sensitivity"] = result.sensitivity.table
        tables["metamodel"] = result.sensitivity.metamodel
        tables["answers"] = _with_sensitivity(spec, tables["answers"], result)
    expected = sum(t.replications for t in result.targets.values())
    return Summary(spec.name, expected, reps, obs, series, result, tables)


def _spec_tables(spec: ExperimentSpec, configs: tuple[Configuration, ...]
                 ) -> dict[str, pl.DataFrame]:
    experiments = pl.DataFrame([{
        "experiment": spec.name, "model": spec.model_name, "description": spec.description,
        "question": spec.question, "spec_hash": spec.spec_hash(),
        "spec": spec.model_dump_json(), "seed": spec.seed, "replications": spec.replications,
        "configurations": len(configs), "baseline_key": spec.baseline_key,
        "horizon": spec.resolved_horizon, "warmup": spec.resolved_warmup,
        "common_random_numbers": spec.common_random_numbers, "confidence": spec.confidence,
    }])
    configurations = pl.DataFrame([{
        "experiment": spec.name, "config_key": c.key, "params": json.dumps(c.params, sort_keys=True),
        "varying": json.dumps(c.varying, sort_keys=True),
        "is_baseline": c.key == spec.baseline_key,
    } for c in configs])
    return {"experiments": experiments, "configurations": configurations,
            "metrics": metrics_table(spec)}


def metrics_table(spec: ExperimentSpec) -> pl.DataFrame:
    """Every metric and response of the experiment with its unit, which way is better and what
    it is (the model's help, or the response's expression)."""
    units, better = spec.units(), spec.better()
    model = spec.resolved_model
    rows = [{"experiment": spec.name, "metric": name, "kind": "metric", "unit": units.get(name),
             "better": better.get(name), "definition": text}
            for name, text in model.metrics.items()]
    rows += [{"experiment": spec.name, "metric": name, "kind": "response",
              "unit": units.get(name), "better": better.get(name),
              "definition": response.expression}
             for name, response in spec.parsed_responses.items()]
    return pl.DataFrame(rows, schema={"experiment": pl.String, "metric": pl.String,
                                      "kind": pl.String, "unit": pl.String,
                                      "better": pl.String, "definition": pl.String})


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_database(spec: ExperimentSpec, result: Summary, db_path: Path,
                   publish_to: ResultStore | None = None) -> str | None:
    """Rebuild ``db_path`` with ``result`` replacing the experiment's rows, then swap it in.

    With ``publish_to`` an object store, the new file is uploaded to its ``PUBLISHED_DATABASE``;
    returns that URI (None when nothing was published).
    """
    db_path = Path(db_path)
    tables = result.tables
    with _exclusive(db_path):
        _remove_stale_builds(db_path)
        fd, tmp = tempfile.mkstemp(dir=db_path.parent, prefix=f".{db_path.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)  # DuckDB must create the file itself
        try:
            con = duckdb.connect(tmp)
            try:
                for name, frame in tables.items():
                    if frame.width == 0:
                        continue
                    con.register("frame", frame)
                    con.execute(f"CREATE TABLE {_identifier(name)} AS SELECT * FROM frame")
                    con.unregister("frame")
                if db_path.exists():
                    _carry_over(con, db_path, spec.name,
                                {name for name, frame in tables.items() if frame.width})
                con.execute("CHECKPOINT")
            finally:
                con.close()
            os.replace(tmp, db_path)
        except BaseException:
            for leftover in (tmp, tmp + ".wal"):
                if os.path.exists(leftover):
                    os.unlink(leftover)
            raise
        if publish_to is not None and not publish_to.is_local:
            # Still under the lock: a later build cannot be overwritten by this older file.
            return publish_to.publish(db_path, PUBLISHED_DATABASE)
    return None


def _remove_stale_builds(db_path: Path) -> None:
    """Remove what a killed build left (``.<name>.*.tmp`` and its ``.wal``). Called with the
    build lock held: every builder holds it while its temporary exists, so any found now belongs
    to a builder that is gone."""
    for leftover in db_path.parent.glob(f".{glob.escape(db_path.name)}.*.tmp*"):
        if leftover.suffix in (".tmp", ".wal"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                log.info(f"removed {leftover}, left by a killed summary build")


def _identifier(name: str) -> str:
    """A table name quoted as an SQL identifier (names cannot be parameters)."""
    return '"' + name.replace('"', '""') + '"'


def _columns(con: duckdb.DuckDBPyConnection, database: str, table: str) -> dict[str, str]:
    return dict(con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = ? "
        "AND table_name = ? ORDER BY column_index", [database, table]).fetchall())


def _align_columns(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Make the new ``table`` able to hold the old file's rows of other experiments: a column
    that is all null in this experiment (typed NULL) takes the old type, and a column only other
    experiments have (another model's, an older version's) is added, so no row loses a value."""
    new = _columns(con, con.execute("SELECT current_database()").fetchone()[0], table)
    for column, kind in _columns(con, "old", table).items():
        quoted = _identifier(column)
        if column not in new:
            con.execute(f"ALTER TABLE {_identifier(table)} ADD COLUMN {quoted} {kind}")
        elif new[column] == '"NULL"' and kind != '"NULL"':
            con.execute(f"ALTER TABLE {_identifier(table)} ALTER {quoted} SET DATA TYPE {kind}")


def _carry_over(con: duckdb.DuckDBPyConnection, old: Path, experiment: str,
                built: set[str]) -> None:
    """Copy every other experiment's rows from the previous file into the new one."""
    con.execute("ATTACH ? AS old (READ_ONLY)", [str(old)])  # a parameter: paths may hold quotes
    try:
        old_tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() t WHERE database_name = 'old' AND EXISTS ("
            "SELECT 1 FROM duckdb_columns() c WHERE c.database_name = 'old' AND c.table_name = "
            "t.table_name AND c.column_name = 'experiment') ORDER BY table_name").fetchall()]
        if not old_tables:
            return
        # Which tables hold other experiments' rows, in one query: most builds have none to
        # carry into the tables just built (one experiment), and aligning costs ~3 ms a table.
        others = dict(con.execute(" UNION ALL ".join(
            f"SELECT ? AS name, count(*) FROM old.{_identifier(name)} WHERE experiment <> ?"
            for name in old_tables), [v for name in old_tables for v in (name, experiment)]
        ).fetchall())
        for name in old_tables:
            table = _identifier(name)
            if name in built:
                if not others[name]:
                    continue  # nothing to carry: the new table stands as built
                _align_columns(con, name)
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM old.{table} "
                            "WHERE experiment <> ?", [experiment])
            else:
                con.execute(f"CREATE TABLE {table} AS SELECT * FROM old.{table} "
                            "WHERE experiment <> ?", [experiment])
    finally:
        con.execute("DETACH old")
