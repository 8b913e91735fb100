"""A short demo of the engine: a few replications of two M/M/c/K configurations and their means."""

import statistics

from engine.simulate import simulate

CONFIGURATIONS = [
    {"servers": 2, "capacity": 10, "arrival_rate": 0.9, "service_rate": 0.5},
    {"servers": 3, "capacity": 10, "arrival_rate": 0.9, "service_rate": 0.5},
]
METRICS = ("mean_wait", "mean_number_in_system", "server_utilisation", "blocking_probability")


def main(replications: int = 10, seed: int = 20251123) -> None:
    print(f"M/M/c/K, {replications} replications each, seed {seed}, common random numbers")
    print(f"{'configuration':34}" + "".join(f"{m:>23}" for m in METRICS))
    for params in CONFIGURATIONS:
        results = [simulate("mmck", params, replication=r, seed=seed) for r in range(replications)]
        means = [statistics.fmean(r.metrics[m] for r in results) for m in METRICS]
        label = f"c={params['servers']} K={params['capacity']} λ={params['arrival_rate']} μ={params['service_rate']}"
        print(f"{label:34}" + "".join(f"{v:23.4f}" for v in means))


if __name__ == "__main__":
    main()
