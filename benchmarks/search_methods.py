"""Search methods side by side (BENCHMARKS.md, "Search"): how many simulations each needs to reach
the true constrained optimum of an M/M/c/K cost problem, and how often its recommendation is
within the indifference zone of it, against random search and the full grid, on the same budget
and the same seeds.

The problem is the suite's (tests/test_search_optimum.py): 520 configurations (servers 1..16 x
capacity 1..40, capacity >= servers), cost = 10 per server + 0.5 per place + 300 x blocking +
2 x number in system, mean wait <= 0.3, indifference zone 3; the truth from engine.theory's
closed forms. Each replication's metrics are the closed-form values plus normal noise, 80 %
common to all configurations (common random numbers): thousands of searches cost minutes, not
days. ``--engine`` runs the same searches on the real M/M/c/K simulator instead (slow).

Every search runs through ``search_local.run_locally``: the replayed rounds, then the clean-up,
exactly as ``simlab sweep`` decides them. Per method: the simulations until the first proposal
within the zone of the optimum that is feasible in truth (median, and how many searches never
proposed one), the share of recommendations within the zone, and the simulations in all (search
rounds + clean-up).

    .venv/bin/python benchmarks/search_methods.py [--seeds 20] [--budget 48] [--methods tpe,...]

gp needs PyTorch, which is not a dependency: run it from an environment that has torch.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import test_search_optimum as problem

import engine
from simlab_pipelines import search_local
from simlab_pipelines.experiments import parse_experiment


def spec_for(method: str, seed: int, budget: int | None, replications: int):
    data = problem._spec(seed).model_dump(mode="json", exclude_none=True)
    data["search"].update(method=method, replications=replications)
    if method == "grid":
        data["search"].pop("budget", None)  # every configuration
        data["search"]["batch"] = 64
    else:
        data["search"]["budget"] = {"configurations": budget}
    data.pop("replications", None)  # search.replications says it
    return parse_experiment(data)


def engine_simulation(spec):
    def simulate(config, replication: int) -> dict[str, float]:
        return engine.simulate("mmck", config.params, replication=replication, seed=spec.seed,
                               horizon=500, warmup=50).metrics
    return simulate


def run(method: str, seeds: int, budget: int, replications: int, real: bool) -> dict:
    grid = problem._grid()
    best = min(c for c, wait in grid.values() if wait <= problem.WAIT_LIMIT)
    good = {k for k, (c, wait) in grid.items()
            if wait <= problem.WAIT_LIMIT and c <= best + problem.ZONE}
    reached, within, totals, seconds = [], 0, [], []
    for seed in range(seeds):
        spec = spec_for(method, seed, budget, replications)
        started = time.perf_counter()
        done = search_local.run_locally(
            spec, engine_simulation(spec) if real else problem._noisy(spec))
        seconds.append(time.perf_counter() - started)
        totals.append(done.simulations)
        order = [(c.params["servers"], c.params["capacity"]) for c in done.replay.configurations]
        first = next((i for i, k in enumerate(order) if k in good), None)
        reached.append(None if first is None else (first + 1) * replications)
        recommended = done.progress.cleanup.recommended
        if recommended is not None:
            params = {c.key: c.params for c in done.replay.configurations}[recommended]
            within += (params["servers"], params["capacity"]) in good
    hits = [r for r in reached if r is not None]
    return {"method": method, "searches": seeds,
            "reached": len(hits), "median_to_reach": statistics.median(hits) if hits else None,
            "within_zone": within, "median_simulations": statistics.median(totals),
            "max_simulations": max(totals), "grid_simulations": len(grid) * replications,
            "seconds_per_search": statistics.median(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=48)
    parser.add_argument("--replications", type=int, default=problem.REPLICATIONS)
    parser.add_argument("--methods", default="tpe,cmaes,random,grid")
    parser.add_argument("--engine", action="store_true", help="simulate with the real engine")
    args = parser.parse_args()
    print("| method | searches | reached the optimum's zone | simulations to reach it (median) "
          "| recommendation within the zone | simulations in all (median / max) | grid | "
          "s a search |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for method in args.methods.split(","):
        seeds = min(args.seeds, 5) if method == "grid" else args.seeds
        r = run(method, seeds, args.budget, args.replications, args.engine)
        print(f"| {r['method']} | {r['searches']} | {r['reached']} | {r['median_to_reach']} | "
              f"{r['within_zone']} | {r['median_simulations']:.0f} / {r['max_simulations']} | "
              f"{r['grid_simulations']} | {r['seconds_per_search']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
