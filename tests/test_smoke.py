"""The engine answers one simulation through its Python API."""

import engine


def test_simulate_returns_all_metrics():
    result = engine.simulate("mmck", {"servers": 2}, replication=0, seed=1, horizon=100, warmup=10)
    assert set(result.metrics) == set(engine.get_model("mmck").metrics)
    assert result.to_dict()["seed"] == {"entropy": 1, "spawn_key": [0]}


def test_numpy_scalars_are_accepted_and_still_checked():
    import numpy as np
    import pytest

    result = engine.simulate("mmck", {"servers": np.int64(2), "arrival_rate": np.float64(0.5)},
                             replication=0, seed=1, horizon=50)
    assert result.params["servers"] == 2 and type(result.params["servers"]) is int
    for bad in (np.float64(2.5), np.True_, np.int64(0)):
        with pytest.raises(engine.ParameterError, match="servers"):
            engine.simulate("mmck", {"servers": bad}, replication=0, seed=1, horizon=50)
