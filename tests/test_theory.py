"""engine.theory against independent facts: textbook M/M/1 and M/M/1/K formulas, Erlang B and C by
their classic recursions, exact rational brute force over the states, limits and Little's law."""

import math
from fractions import Fraction

import pytest

import engine
from engine import theory

FIELDS = ("p_wait", "blocking_probability", "effective_arrival_rate", "L", "Lq", "W", "Wq",
          "utilisation", "throughput")


def close(a: float, b: float, rel: float = 1e-10, abs_: float = 1e-13) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def assert_metrics(got: theory.QueueMetrics, want: dict[str, float], rel: float = 1e-10) -> None:
    for name, value in want.items():
        assert close(getattr(got, name), value, rel), (name, getattr(got, name), value)


def brute_force(c: int, k: int, lam: Fraction, mu: Fraction) -> dict[str, float]:
    """Every measure summed state by state, in exact rational arithmetic, from the definitions."""
    a, weights = lam / mu, [Fraction(1)]
    for n in range(1, k + 1):
        weights.append(weights[-1] * a / min(n, c))  # birth-death: p_n = p_{n-1} lam / (min(n,c) mu)
    z = sum(weights)
    p = [w / z for w in weights]
    lq = sum((n - c) * p[n] for n in range(c, k + 1))
    big_l = sum(n * p[n] for n in range(k + 1))
    busy = sum(min(n, c) * p[n] for n in range(k + 1))
    eff = lam * (1 - p[k])
    return {"p_wait": float(sum(p[c:k])), "blocking_probability": float(p[k]),
            "effective_arrival_rate": float(eff), "L": float(big_l), "Lq": float(lq),
            "W": float(big_l / eff), "Wq": float(lq / eff), "utilisation": float(busy / c),
            "throughput": float(eff)}


def erlang_b(c: int, a: float) -> float:
    """Erlang B by the stable recursion B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1))."""
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


@pytest.mark.parametrize("rho", [0.05, 0.5, 0.9, 0.999, 0.999999])
def test_mm1_textbook(rho):
    mu = 2.0
    lam = rho * mu
    q = theory.mmc(1, lam, mu)
    assert_metrics(q, {"p_wait": rho, "L": rho / (1 - rho), "Lq": rho**2 / (1 - rho),
                       "W": 1 / (mu - lam), "Wq": rho / (mu - lam), "utilisation": rho,
                       "blocking_probability": 0.0, "throughput": lam}, rel=1e-8)


@pytest.mark.parametrize("rho", [0.3, 0.9, 1.25, 3.0])
@pytest.mark.parametrize("k", [1, 2, 7, 40])
def test_mm1k_textbook(rho, k):
    q = theory.mmck(1, k, rho, 1.0)
    p_k = (1 - rho) * rho**k / (1 - rho ** (k + 1))
    big_l = rho / (1 - rho) - (k + 1) * rho ** (k + 1) / (1 - rho ** (k + 1))
    assert_metrics(q, {"blocking_probability": p_k, "L": big_l, "effective_arrival_rate": rho * (1 - p_k),
                       "utilisation": 1 - (1 - rho) / (1 - rho ** (k + 1))}, rel=1e-9)


def test_mm1k_at_rho_one_is_uniform():
    k = 9
    q = theory.mmck(1, k, 1.0, 1.0)
    assert_metrics(q, {"blocking_probability": 1 / (k + 1), "L": k / 2, "utilisation": k / (k + 1)})
    p = theory.stationary_distribution(1, k, 1.0, 1.0)
    assert p.tolist() == pytest.approx([1 / (k + 1)] * (k + 1), rel=1e-12)


@pytest.mark.parametrize(("c", "k", "lam", "mu"), [
    (1, 5, Fraction(1, 2), Fraction(1)),
    (3, 12, Fraction(27, 10), Fraction(1)),   # rho = 0.9
    (3, 12, Fraction(3), Fraction(1)),        # rho = 1 exactly
    (4, 30, Fraction(41, 10), Fraction(1)),   # rho = 1.025, above 1
    (2, 2, Fraction(7, 3), Fraction(5, 4)),   # pure loss
    (5, 9, Fraction(40), Fraction(3)),        # rho = 2.67, mostly blocked
    (20, 60, Fraction(19), Fraction(1)),
])
def test_mmck_matches_exact_state_sums(c, k, lam, mu):
    assert_metrics(theory.mmck(c, k, float(lam), float(mu)), brute_force(c, k, lam, mu), rel=1e-11)
    p = theory.stationary_distribution(c, k, float(lam), float(mu))
    assert len(p) == k + 1
    assert math.fsum(p) == pytest.approx(1.0, rel=1e-13)


@pytest.mark.parametrize(("c", "a"), [(1, 0.5), (2, 1.0), (10, 7.5), (50, 60.0), (500, 480.0),
                                      (500, 2000.0)])
def test_pure_loss_is_erlang_b(c, a):
    q = theory.mmck(c, c, a * 0.8, 0.8)
    b = erlang_b(c, a)
    assert close(q.blocking_probability, b, 1e-10)
    assert q.Lq == 0.0 and q.Wq == 0.0 and q.p_wait == 0.0
    assert close(q.L, a * (1 - b), 1e-10)  # carried traffic
    assert close(q.W, 1 / 0.8, 1e-10)


@pytest.mark.parametrize(("c", "a"), [(1, 0.7), (2, 1.5), (10, 9.0), (500, 495.0), (500, 499.99)])
def test_mmc_is_erlang_c(c, a):
    # Erlang C from Erlang B: C = B / (1 - rho (1 - B)); Lq = C rho / (1 - rho).
    rho = a / c
    b = erlang_b(c, a)
    erl_c = b / (1 - rho * (1 - b))
    q = theory.mmc(c, a, 1.0)
    assert close(q.p_wait, erl_c, 1e-9)
    assert close(q.Lq, erl_c * rho / (1 - rho), 1e-8)
    assert close(q.Wq, erl_c / (c - a), 1e-8)
    assert close(q.utilisation, rho, 1e-9)


@pytest.mark.parametrize(("c", "lam"), [(1, 0.8), (3, 2.7), (20, 18.0)])
def test_mmck_converges_to_mmc_as_k_grows(c, lam):
    limit = theory.mmc(c, lam, 1.0)
    errors = []
    for k in (c + 5, c + 50, c + 500, c + 5000):
        q = theory.mmck(c, k, lam, 1.0)
        errors.append(max(abs(getattr(q, f) - getattr(limit, f)) for f in FIELDS))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-10
    assert theory.mmck(c, None, lam, 1.0) == limit


CASES = [(1, 3, 0.4, 1.0), (2, 10, 1.9, 1.0), (3, 12, 2.7, 1.0), (4, 4, 3.0, 2.0),
         (5, 50, 5.0, 1.0), (5, 50, 7.0, 1.0), (500, 600, 499.9, 1.0), (500, 10**6, 500.0, 1.0),
         (10_000, 10**7, 10_500.0, 1.0), (7, None, 6.3, 1.0), (500, None, 499.0, 1.0)]


@pytest.mark.parametrize(("c", "k", "lam", "mu"), CASES)
def test_littles_law_and_flow_balance(c, k, lam, mu):
    q = theory.mmck(c, k, lam, mu)
    for f in FIELDS:
        assert math.isfinite(getattr(q, f)), f
    eff = lam * (1 - q.blocking_probability)
    assert close(q.effective_arrival_rate, eff) and close(q.throughput, eff)
    assert close(q.L, eff * q.W) and close(q.Lq, eff * q.Wq)  # Little's law
    # L and Lq are summed over the states independently: busy servers = eff / mu, W = Wq + 1 / mu.
    assert close(q.L - q.Lq, eff / mu, 1e-9)
    assert close(q.W - q.Wq, 1 / mu, 1e-9)
    assert close(q.utilisation, eff / (c * mu), 1e-9)
    assert 0 <= q.p_wait <= 1 and 0 <= q.blocking_probability <= 1 and 0 <= q.utilisation <= 1


def test_accurate_through_rho_one():
    # On rho = 1, a hair either side, and across the switch from the series to the closed form of
    # the tail (|log rho| (K - c + 1) = 1e-4, here rho - 1 ~ 2.7e-6): exact answers for each
    # float arrival rate, so the only error allowed is rounding.
    c, k = 4, 40
    for eps in (0.0, 1e-15, -1e-15, 1e-9, -1e-9, 2.6e-6, 2.7e-6, 2.8e-6, -2.7e-6, 1e-3, -1e-3):
        lam = 4.0 * (1 + eps)
        q = theory.mmck(c, k, lam, 1.0)
        assert_metrics(q, brute_force(c, k, Fraction(lam), Fraction(1)), rel=1e-11)


def test_near_rho_one_large_queue():
    # rho = 1 - 1e-7 with K - c = 1e6: the tail neither over- nor underflows and M/M/c/K sits
    # between the uniform (rho = 1) and the infinite-capacity answers.
    c, k = 2, 2 + 10**6
    q = theory.mmck(c, k, 2 * (1 - 1e-7), 1.0)
    assert 0 < q.blocking_probability < 1 / (k - c)
    assert (k - c) / 2 * 0.9 < q.Lq < (k - c) / 2
    assert close(q.L - q.Lq, q.effective_arrival_rate, 1e-9)


def test_large_c_does_not_overflow():
    q = theory.mmck(500, 1000, 450.0, 1.0)
    for f in FIELDS:
        assert math.isfinite(getattr(q, f))
    assert 0 < q.p_wait < 1
    p = theory.stationary_distribution(500, None, 450.0, 1.0, up_to=3000)
    assert math.fsum(p) == pytest.approx(1.0, abs=1e-12)
    assert p[500:].sum() == pytest.approx(theory.mmc(500, 450.0, 1.0).p_wait, rel=1e-9)


@pytest.mark.parametrize(("c", "lam"), [(1, 1.0), (1, 1.5), (3, 3.0), (3, 30.0)])
def test_mmc_without_steady_state_raises(c, lam):
    with pytest.raises(ValueError, match="no steady state"):
        theory.mmc(c, lam, 1.0)
    with pytest.raises(ValueError, match="rho"):
        theory.expected_metrics({"servers": c, "capacity": None, "arrival_rate": lam,
                                 "service_rate": 1.0})


@pytest.mark.parametrize(("args", "field"), [
    ((0, 5, 1.0, 1.0), "servers"), ((2, 1, 1.0, 1.0), "capacity"), ((2, 5, 0.0, 1.0), "arrival_rate"),
    ((2, 5, 1.0, -1.0), "service_rate"), ((2, 5, math.nan, 1.0), "arrival_rate"),
    ((2, 5, 1.0, math.inf), "service_rate"), ((2.5, 5, 1.0, 1.0), "servers"),
    ((True, 5, 1.0, 1.0), "servers"),
])
def test_invalid_arguments_raise(args, field):
    with pytest.raises(ValueError, match=field):
        theory.mmck(*args)


def test_expected_metrics_uses_engine_names():
    params = engine.get_model("mmck").validate({"servers": 3, "capacity": 12, "arrival_rate": 2.7,
                                                "service_rate": 1.0})
    got = theory.expected_metrics(params)
    # The means here, the distribution's metrics in expected_quantiles: together every metric
    # but customers_served (which depends on the horizon).
    quantiles = theory.expected_quantiles(params)
    assert not set(got) & set(quantiles)
    assert set(got) | set(quantiles) == set(engine.get_model("mmck").metrics) - {"customers_served"}
    q = theory.mmck(3, 12, 2.7, 1.0)
    assert got == {"mean_number_in_system": q.L, "mean_queue_length": q.Lq,
                   "mean_time_in_system": q.W, "mean_wait": q.Wq, "server_utilisation": q.utilisation,
                   "blocking_probability": q.blocking_probability, "throughput": q.throughput}
    infinite = theory.expected_metrics({"servers": 2, "capacity": None, "arrival_rate": 1.5,
                                        "service_rate": 1.0})
    assert infinite["blocking_probability"] == 0.0
    assert infinite["mean_number_in_system"] == pytest.approx(24 / 7, rel=1e-12)  # M/M/2, rho=.75
