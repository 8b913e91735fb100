"""The analytic models (ishigami, linear): values, closed-form indices, and noise from its own stream."""

import math

import numpy as np
import pytest

import engine
from engine.models.ishigami import ishigami, sobol_indices
from engine.randomness import stream_id


def test_ishigami_values_and_defaults():
    record = engine.simulate("ishigami", {"x1": math.pi / 2, "x2": math.pi / 2, "x3": 1.0},
                             replication=0, seed=1)
    assert record.params["a"] == 7.0 and record.params["b"] == 0.1
    assert record.metrics["y"] == pytest.approx(1 + 7 + 0.1)
    with pytest.raises(engine.ParameterError, match="x1"):
        engine.simulate("ishigami", {"x1": 3.2}, replication=0, seed=1)


def test_ishigami_closed_forms_match_a_monte_carlo_estimate():
    # The closed forms of the variance decomposition against brute force: V(E[y|x1]) / V(y).
    rng = np.random.default_rng(3)
    x = rng.uniform(-math.pi, math.pi, size=(400_000, 3))
    y = np.sin(x[:, 0]) + 7 * np.sin(x[:, 1]) ** 2 + 0.1 * x[:, 2] ** 4 * np.sin(x[:, 0])
    bins = np.minimum(((x + math.pi) / (2 * math.pi) * 200).astype(int), 199)
    truth = sobol_indices()
    for j, name in enumerate(("x1", "x2", "x3")):
        means = np.bincount(bins[:, j], weights=y, minlength=200) / np.bincount(bins[:, j])
        assert np.var(means) / np.var(y) == pytest.approx(truth["S1"][name], abs=0.01)
    assert truth["ST"]["x3"] == pytest.approx(truth["S2"]["x1:x3"])
    assert sum(truth["S1"].values()) + truth["S2"]["x1:x3"] == pytest.approx(1.0)
    assert ishigami(1.0, 2.0, 3.0) == pytest.approx(
        math.sin(1) + 7 * math.sin(2) ** 2 + 0.1 * 81 * math.sin(1))


def test_noise_comes_from_the_noise_stream():
    params = {"x1": 0.5, "x2": -1.0, "x3": 2.0, "noise_sd": 0.3}
    ys = [engine.simulate("ishigami", params, replication=r, seed=11).metrics["y"] for r in range(3)]
    clean = ishigami(0.5, -1.0, 2.0)
    for r, y in enumerate(ys):
        rng = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence(entropy=11, spawn_key=(r, stream_id("noise")))))
        assert y == clean + rng.normal(0.0, 0.3)
    assert len(set(ys)) == 3


def test_linear_model():
    params = {"x1": 2.0, "x2": -1.0, "x3": 0.5, "b0": 1, "b1": 3, "b2": -2, "b3": 4, "b12": 0.5}
    record = engine.simulate("linear", params, replication=0, seed=1)
    assert record.metrics["y"] == pytest.approx(1 + 6 + 2 + 2 - 1)
