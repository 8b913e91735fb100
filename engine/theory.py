"""Closed-form steady-state results for the M/M/c and M/M/c/K queues.

These are what a correct ``mmck`` simulation must converge to, and what the orchestrator's
"simulated means agree with theory" check compares against.

Notation: arrival rate lambda, service rate mu per server, c servers, room for K customers in the
system (K = c is the pure loss system, K = None is M/M/c), offered load a = lambda / mu and
per-server load rho = a / c. The stationary distribution is

    p_n = p_0 a^n / n!                    for 0 <= n <= c,
    p_n = p_c rho^(n - c)                 for c <  n <= K.

Everything is computed in log space (log-sum-exp over the states below c, and closed forms for the
geometric tail above c), so c = 10,000 or K = 10^7 neither overflow nor loop over every state. The
truncated geometric tail is evaluated with expm1/log1p and a series at rho ~ 1, where the textbook
formulas divide zero by zero. M/M/c with rho >= 1 has no steady state: ``mmc`` raises ValueError.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Below this |x (m + 1)| (x = log rho, m + 1 tail states) the tail mean uses its Taylor series: the
# closed form cancels catastrophically there, the series' truncation error is ~ (x m)^3.
_SERIES_BELOW = 1e-4


@dataclass(frozen=True)
class QueueMetrics:
    """Steady-state measures of a queue (times in the units of 1 / rate).

    ``p_wait`` is the probability that an arriving customer is admitted and has to wait (all
    servers busy, room in the queue); for M/M/c it is Erlang's C formula. ``utilisation`` is the
    mean fraction of servers busy; ``throughput`` equals ``effective_arrival_rate`` in steady state.
    """

    p_wait: float
    blocking_probability: float
    effective_arrival_rate: float
    L: float
    Lq: float
    W: float
    Wq: float
    utilisation: float
    throughput: float


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} = {value!r} must be >= {minimum}")
    return int(value)


def _check_rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} = {value!r} must be finite and > 0")
    return value


def _log_abs_expm1(y: float) -> float:
    """log |e^y - 1| without overflow for large y or loss of precision for small |y|."""
    if y > 0.0:
        return y + math.log(-math.expm1(-y))
    return math.log(-math.expm1(y))


def _log_geometric_sum(x: float, m: float) -> float:
    """log sum_{j=0}^{m} e^{x j} (m may be inf when x < 0)."""
    if math.isinf(m):
        return -math.log(-math.expm1(x))  # 1 / (1 - rho)
    if x == 0.0:
        return math.log(m + 1.0)
    return _log_abs_expm1((m + 1.0) * x) - _log_abs_expm1(x)


def _geometric_mean(x: float, m: float) -> float:
    """The mean of j under weights e^{x j}, j = 0..m (m may be inf when x < 0)."""
    if math.isinf(m):
        return 1.0 / math.expm1(-x)  # rho / (1 - rho)
    if abs(x) * (m + 1.0) < _SERIES_BELOW:
        # d/dx of the mean is the variance; at x = 0 the weights are uniform on 0..m (mean m/2,
        # variance m(m + 2)/12, third central moment 0).
        return m / 2.0 + x * m * (m + 2.0) / 12.0
    if x > 0.0:
        # Mirror j -> m - j, which turns the weights into e^{-x j}: keeps the exponentials bounded.
        return m - _geometric_mean(-x, m)
    # x < 0: mean = 1 / (e^{-x} - 1) - (m + 1) / (e^{-(m + 1) x} - 1)
    big = -(m + 1.0) * x
    tail = (m + 1.0) / math.expm1(big) if big < 700.0 else (m + 1.0) * math.exp(-big)
    return 1.0 / math.expm1(-x) - tail


def _log_head_weights(servers: int, log_a: float) -> np.ndarray:
    """log(a^n / n!) for n = 0..c."""
    n = np.arange(servers + 1, dtype=float)
    log_factorial = np.array([math.lgamma(k + 1.0) for k in range(servers + 1)])
    return n * log_a - log_factorial


def _logsumexp(values: np.ndarray) -> float:
    top = float(np.max(values))
    return top + math.log(float(np.sum(np.exp(values - top))))


def _solve(servers: int, capacity: int | None, arrival_rate: float,
           service_rate: float) -> QueueMetrics:
    log_a = math.log(arrival_rate) - math.log(service_rate)
    x = log_a - math.log(servers)  # log rho
    m = math.inf if capacity is None else float(capacity - servers)  # queue places

    head = _log_head_weights(servers, log_a)  # states 0..c
    log_tail = head[-1] + _log_geometric_sum(x, m)  # states c..K, relative to p_0
    below = head[:-1]  # states 0..c-1 (nonempty: c >= 1)
    log_z = float(np.logaddexp(_logsumexp(below), log_tail))

    p_below = np.exp(below - log_z)
    p_tail = math.exp(log_tail - log_z)  # P(N >= c): all servers busy
    blocking = 0.0 if capacity is None else math.exp(head[-1] + m * x - log_z)
    lq = p_tail * _geometric_mean(x, m)
    busy = float(np.dot(np.arange(servers), p_below)) + servers * p_tail
    big_l = busy + lq
    effective = arrival_rate * (1.0 - blocking)
    return QueueMetrics(
        p_wait=p_tail - blocking,
        blocking_probability=blocking,
        effective_arrival_rate=effective,
        L=big_l,
        Lq=lq,
        W=big_l / effective,
        Wq=lq / effective,
        utilisation=busy / servers,
        throughput=effective,
    )


def mmc(servers: int, arrival_rate: float, service_rate: float) -> QueueMetrics:
    """M/M/c (Erlang C). Raises ValueError when rho = lambda / (c mu) >= 1: no steady state."""
    servers = _check_int("servers", servers, 1)
    arrival_rate = _check_rate("arrival_rate", arrival_rate)
    service_rate = _check_rate("service_rate", service_rate)
    rho = arrival_rate / (servers * service_rate)
    if rho >= 1.0:
        raise ValueError(
            f"M/M/c has no steady state for rho = arrival_rate / (servers * service_rate) = "
            f"{rho:.6g} >= 1 (servers={servers}, arrival_rate={arrival_rate}, "
            f"service_rate={service_rate}); give a finite capacity or more servers"
        )
    return _solve(servers, None, arrival_rate, service_rate)


def mmck(servers: int, capacity: int | None, arrival_rate: float,
         service_rate: float) -> QueueMetrics:
    """M/M/c/K with room for ``capacity`` customers in the system (None: M/M/c, see ``mmc``)."""
    if capacity is None:
        return mmc(servers, arrival_rate, service_rate)
    servers = _check_int("servers", servers, 1)
    capacity = _check_int("capacity", capacity, servers)
    arrival_rate = _check_rate("arrival_rate", arrival_rate)
    service_rate = _check_rate("service_rate", service_rate)
    return _solve(servers, capacity, arrival_rate, service_rate)


def stationary_distribution(servers: int, capacity: int | None, arrival_rate: float,
                            service_rate: float, up_to: int | None = None) -> np.ndarray:
    """p_n for n = 0..up_to (default: n = 0..K; required when the capacity is infinite)."""
    servers = _check_int("servers", servers, 1)
    arrival_rate = _check_rate("arrival_rate", arrival_rate)
    service_rate = _check_rate("service_rate", service_rate)
    if capacity is None:
        mmc(servers, arrival_rate, service_rate)  # raises when there is no steady state
        if up_to is None:
            raise ValueError("up_to is required when capacity is None (infinite)")
    else:
        capacity = _check_int("capacity", capacity, servers)
    last = capacity if up_to is None else _check_int("up_to", up_to, 0)
    log_a = math.log(arrival_rate) - math.log(service_rate)
    x = log_a - math.log(servers)
    m = math.inf if capacity is None else float(capacity - servers)
    head = _log_head_weights(servers, log_a)
    log_z = float(np.logaddexp(_logsumexp(head[:-1]), head[-1] + _log_geometric_sum(x, m)))
    n = np.arange(last + 1)
    log_w = np.where(n <= servers, head[np.minimum(n, servers)], head[-1] + (n - servers) * x)
    p = np.exp(log_w - log_z)
    if capacity is not None:
        p[n > capacity] = 0.0
    return p


def expected_metrics(params: Mapping[str, Any]) -> dict[str, float]:
    """Steady-state values of the ``mmck`` model's metrics for its params (capacity None: infinite).

    Keys are the engine's metric names (all but ``customers_served``, which depends on the horizon).
    Raises ValueError when there is no steady state (infinite capacity and rho >= 1).
    """
    q = mmck(params["servers"], params.get("capacity"), params["arrival_rate"],
             params["service_rate"])
    return {
        "mean_number_in_system": q.L,
        "mean_queue_length": q.Lq,
        "mean_time_in_system": q.W,
        "mean_wait": q.Wq,
        "server_utilisation": q.utilisation,
        "blocking_probability": q.blocking_probability,
        "throughput": q.throughput,
    }


__all__ = ["QueueMetrics", "expected_metrics", "mmc", "mmck", "stationary_distribution"]
