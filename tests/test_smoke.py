"""The engine answers one simulation through its Python API."""

import engine


def test_simulate_returns_all_metrics():
    result = engine.simulate("mmck", {"servers": 2}, replication=0, seed=1, horizon=100, warmup=10)
    assert set(result.metrics) == set(engine.get_model("mmck").metrics)
    assert result.to_dict()["seed"] == {"entropy": 1, "spawn_key": [0]}
