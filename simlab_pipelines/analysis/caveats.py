"""What the answer cannot speak for, said in it: configurations without results (failed or not
run), without a steady state (their numbers measure the run's length), and metrics undefined (NaN)
in some replications.
"""

from collections.abc import Mapping, Sequence

import polars as pl

from simlab_pipelines.analysis.words import Words, capital, joined

NO_STEADY_STATE = "no steady state, so its numbers depend only on how long you simulate"


def missing_text(missing: Mapping[str, tuple[int, int]], words: Words) -> str | None:
    """Which configurations lack results: ``{config_key: (missing, wanted)}``; a configuration
    with none at all is left out of the answer, one with some is answered from those."""
    gone = {k: v for k, v in missing.items() if v[0] > 0 and v[0] >= v[1]}
    partial = {k: v for k, v in missing.items() if 0 < v[0] < v[1]}
    if not gone and not partial:
        return None
    sentences = []
    if gone:
        names = "; ".join(f"{words.label(k)}, all {w} replications" for k, (_, w) in gone.items())
        sentences.append(f"No results for {names} (failed or not run): this answer is about the "
                         "other configurations.")
    if partial:
        names = "; ".join(f"{words.label(k)}, {m} of {w}" for k, (m, w) in partial.items())
        sentences.append(f"Replications missing (failed or not run) for {names}: their numbers "
                         "are from the others.")
    return " ".join(sentences)


def unstable_text(unstable: Mapping[str, str], words: Words, metric: str | None) -> str | None:
    """``1 doctor: demand exceeds capacity: the number in system keeps growing ...`` for
    configurations whose state keeps growing over the run (``unstable``: config_key -> what
    shows it, in words: ``stationarity.growing``); configurations alike share one sentence."""
    if not unstable:
        return None
    groups: dict[str, list[str]] = {}
    for key, grows in unstable.items():
        groups.setdefault(grows, []).append(words.setting(key))
    sentences = []
    for grows, names in groups.items():
        whose = "its" if len(names) == 1 else "their"
        what = f"{whose} {words.name(metric)}" if metric else f"{whose} results"
        verb = "depends" if metric else "depend"
        sentences.append(capital(f"{'; '.join(names)}: demand exceeds capacity: {grows}, so "
                                  f"{what} {verb} only on how long you simulate."))
    return " ".join(sentences)


def undefined_text(summary: pl.DataFrame, metrics: Sequence[str], words: Words) -> str | None:
    """Where the answer's metrics were undefined (NaN) in some replications (``summary``: the
    summary table with its ``undefined`` and ``n`` columns): from which replications its numbers
    are, and which configurations are not compared on it at all."""
    if "undefined" not in summary.columns:
        return None
    sentences = []
    for metric in dict.fromkeys(metrics):
        rows = summary.filter((pl.col("metric") == metric) & (pl.col("undefined") > 0))
        if rows.height == 0:
            continue
        partial = [(k, u, n) for k, n, u in rows.select("config_key", "n", "undefined")
                   .iter_rows() if n > 0]
        never = [k for k, n in rows.select("config_key", "n").iter_rows() if n == 0]
        where = ([f"{u} of {u + n} replications of {words.setting(k)}" for k, u, n in partial]
                 + [f"every replication of {words.setting(k)}" for k in never])
        name = words.name(metric)
        said = []
        if partial:
            said.append("its numbers are from the replications with a value")
        if never:
            names = joined([words.setting(k) for k in never])
            said.append(f"{names} {'is' if len(never) == 1 else 'are'} not compared on it")
        sentences.append(capital(f"{name} is undefined (no value) in {joined(where)}: "
                                  f"{'; '.join(said)}."))
    return " ".join(sentences) or None
