"""A SimOpt testbed problem with a published optimum, solved by simlab's search (BENCHMARKS.md,
"Search"): ``simoptlib``'s EXAMPLE-2, its integer-ordered problem with a known optimum.

EXAMPLE-2 ("Min Quadratic Function + Noise (Discrete)"): x in {-4, ..., 4}^4 (6,561 points),
each replication returns sum((x - (1, 2, 3, 4))^2) plus standard normal noise; SimOpt publishes
the optimal solution (1, 2, 3, 4) with value 0. The problem's own SimOpt model runs inside a
simlab plug-in (``engine.Model`` wrapping ``Example2Model``: its MRG32k3a generator seeded from
the replication's simlab stream, so common random numbers hold), and simlab's search, then the
clean-up, looks for the optimum with 10 replications per proposal.

simoptlib is not a simlab dependency: this script makes a throwaway virtual environment with it
(``--venv``, default a temporary directory), where simlab's own environment is importable
through a .pth file, and runs the searches there. Nothing of simoptlib is copied into simlab.

    .venv/bin/python benchmarks/simopt_example2.py [--seeds 10] [--budget 150] [--venv DIR]
"""

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIMOPTLIB = "simoptlib==1.2.4"

PLUGIN = textwrap.dedent('''
    """SimOpt's EXAMPLE-2 model as a simlab plug-in (written by benchmarks/simopt_example2.py)."""

    from engine import Model, ModelRun, Parameter
    from mrg32k3a.mrg32k3a import MRG32k3a
    from simopt.models.example import Example2Model

    M2 = 4294944443  # MRG32k3a's second modulus: seeds below it are valid in all six places


    def run(params, streams, warmup, horizon, series_interval=None):
        model = Example2Model({"x": tuple(params[f"x{i}"] for i in range(1, 5))})
        seed = tuple(int(v) for v in streams["noise"].rng.integers(1, M2, size=6))
        model.before_replicate([MRG32k3a(ref_seed=seed)])
        responses, _ = model.replicate()
        return ModelRun({"f": float(responses["est_f(x)"])}, 1)


    MODEL = Model(
        name="simopt_example2",
        description="SimOpt EXAMPLE-2: sum((x - (1, 2, 3, 4))^2) + N(0, 1)",
        parameters=tuple(Parameter(f"x{i}", int, f"coordinate {i}", default=0, minimum=-4,
                                   maximum=4) for i in range(1, 5)),
        metrics={"f": "the noisy quadratic"}, run=run, default_horizon=1.0,
        default_warmup=0.0, version="1")
''')


def experiment(method: str, seed: int, budget: int) -> dict:
    return {"name": "simopt_example2", "model": "simopt_plugin:MODEL", "seed": 100 + seed,
            "objective": {"metric": "f", "direction": "minimize", "indifference_zone": 0.5},
            "search": {"method": method, "seed": seed, "batch": 10, "replications": 10,
                       "max_replications": 60, "budget": {"configurations": budget},
                       "factors": {f"x{i}": {"min": -4, "max": 4} for i in range(1, 5)}}}


def inner(seeds: int, budget: int, methods: list[str], directory: str) -> None:
    """Inside the throwaway environment: the searches, one table row per method."""
    sys.path.insert(0, directory)
    from simlab_pipelines import search_local
    from simlab_pipelines.experiments import parse_experiment

    optimum = (1, 2, 3, 4)
    print("| method | searches | recommended (1, 2, 3, 4) | proposed it | its true f at the "
          "recommendation (median) | simulations (median / max) | of the grid's 65,610 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for method in methods:
        found, proposed, values, totals = 0, 0, [], []
        for seed in range(seeds):
            spec = parse_experiment(experiment(method, seed, budget), source=Path(directory) / "x.yaml")
            done = search_local.run_locally(spec)
            configs = {c.key: tuple(c.params[f"x{i}"] for i in range(1, 5))
                       for c in done.replay.configurations}
            proposed += optimum in configs.values()
            best = done.progress.cleanup.recommended
            x = configs[best] if best else None
            found += x == optimum
            values.append(sum((a - b) ** 2 for a, b in zip(x, optimum, strict=True))
                          if x else float("nan"))
            totals.append(done.simulations)
        values.sort()
        totals.sort()
        print(f"| {method} | {seeds} | {found} | {proposed} | {values[len(values) // 2]:g} | "
              f"{totals[len(totals) // 2]} / {totals[-1]} | "
              f"{100 * totals[len(totals) // 2] / 65610:.1f} % |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=150)
    parser.add_argument("--methods", default="tpe,cmaes,random")
    parser.add_argument("--venv", help="the throwaway environment (made if missing)")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    methods = args.methods.split(",")
    if args.inner:
        inner(args.seeds, args.budget, methods, args.inner)
        return
    venv = Path(args.venv or tempfile.mkdtemp(prefix="simlab-simopt-"))
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", SIMOPTLIB], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    # simlab's environment (and the project, for simlab_pipelines) importable from the venv
    (Path(site.stdout.strip()) / "simlab.pth").write_text(
        f"{sysconfig.get_paths()['purelib']}\n{ROOT}\n")
    directory = tempfile.mkdtemp(prefix="simlab-simopt-plugin-")
    (Path(directory) / "simopt_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": f"{directory}{os.pathsep}{ROOT}"}
    subprocess.run([str(python), __file__, "--inner", directory, "--seeds", str(args.seeds),
                    "--budget", str(args.budget), "--methods", ",".join(methods)],
                   check=True, env=env)
    print(json.dumps({"simoptlib": SIMOPTLIB, "venv": str(venv)}))


if __name__ == "__main__":
    main()
