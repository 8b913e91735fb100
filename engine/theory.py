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

Waiting times (first come, first served, of admitted customers). An arrival that finds n >= c in
the system (probability p_n / (1 - p_K), arrivals see time averages) waits for n - c + 1
departures at rate c mu: an Erlang(n - c + 1, c mu) time. With infinite room this sums to the
closed form P(Wq > t) = C(c, a) exp(-(c mu - lambda) t), C the Erlang C probability of waiting;
with a finite room it is the finite mixture, summed exactly. The time in system adds the
customer's own exponential service, independent of its wait. Quantiles solve the survival
function by root finding; the wait has an atom at 0 (the customers served at once), so its
p-quantile is 0 whenever p <= P(Wq = 0).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, special

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


# The percentiles the engine reports (engine.statistics.PERCENTILES).
PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class WaitDistribution:
    """The distribution of an admitted customer's wait (and time in system) in M/M/c/K, FCFS.

    ``stages[j]`` is the probability that the customer waits for j + 1 departures at rate
    ``rate`` = c mu (an Erlang(j + 1, c mu) wait); with probability ``no_wait`` it does not wait.
    With infinite room ``stages`` is empty and the wait is ``p_wait`` times an exponential of rate
    c mu - lambda (Erlang C).
    """

    no_wait: float
    stages: np.ndarray
    rate: float
    service_rate: float
    infinite: bool
    p_wait: float
    decay: float  # c mu - lambda (infinite room only)

    def wait_survival(self, t: float) -> float:
        """P(Wq > t)."""
        if t < 0:
            return 1.0
        if self.infinite:
            return self.p_wait * math.exp(-self.decay * t)
        if self.stages.size == 0:
            return 0.0
        k = np.arange(1, self.stages.size + 1, dtype=float)
        return float(np.dot(self.stages, special.gammaincc(k, self.rate * t)))

    def sojourn_survival(self, t: float) -> float:
        """P(Wq + S > t), S the customer's exponential(mu) service."""
        if t < 0:
            return 1.0
        mu = self.service_rate
        served_at_once = self.no_wait * math.exp(-mu * t)
        if self.infinite:
            return served_at_once + self.p_wait * _exp_plus_exp_survival(self.decay, mu, t)
        if self.stages.size == 0:
            return served_at_once
        k = np.arange(1, self.stages.size + 1, dtype=float)
        theta = self.rate
        # P(Erlang(k, θ) + Exp(μ) > t) = P(Erlang(k, θ) > t) + ∫_0^t f_k(s) e^{-μ(t-s)} ds, and the
        # integral is e^{-μt} (θ/(θ-μ))^k P(Erlang(k, θ-μ) <= t) for θ > μ, e^{-μt} (μt)^k / k!
        # for θ = μ (one server); both in log space, as k may be large.
        if theta > mu * (1 + 1e-12):
            with np.errstate(divide="ignore"):
                log_tail = (k * math.log(theta / (theta - mu)) - mu * t
                            + np.log(special.gammainc(k, (theta - mu) * t)))
        else:
            with np.errstate(divide="ignore"):
                log_tail = k * math.log(mu * t) - special.gammaln(k + 1) - mu * t if t > 0 \
                    else np.full(k.size, -np.inf)
        tails = special.gammaincc(k, theta * t) + np.exp(log_tail)
        return served_at_once + float(np.dot(self.stages, np.minimum(tails, 1.0)))

    def wait_quantile(self, p: float) -> float:
        """The p-quantile of the wait: 0 when p <= P(Wq = 0)."""
        if self.wait_survival(0.0) <= 1.0 - p:
            return 0.0
        return _solve_survival(self.wait_survival, 1.0 - p)

    def sojourn_quantile(self, p: float) -> float:
        """The p-quantile of the time in system."""
        return _solve_survival(self.sojourn_survival, 1.0 - p)


def _exp_plus_exp_survival(a: float, b: float, t: float) -> float:
    """P(X + Y > t) for independent exponentials of rates a and b."""
    if abs(a - b) <= 1e-12 * max(a, b):
        return (1.0 + b * t) * math.exp(-b * t)
    return (a * math.exp(-b * t) - b * math.exp(-a * t)) / (a - b)


def _solve_survival(survival: Any, level: float) -> float:
    """The t with survival(t) = level (survival decreasing, survival(0) > level > 0)."""
    high = 1.0
    while survival(high) > level:
        high *= 2.0
        if high > 1e300:
            raise ArithmeticError(f"no quantile found for survival level {level}")
    return float(optimize.brentq(lambda t: survival(t) - level, 0.0, high, xtol=1e-12,
                                 rtol=1e-12))


def wait_distribution(servers: int, capacity: int | None, arrival_rate: float,
                      service_rate: float) -> WaitDistribution:
    """The waiting-time distribution of admitted customers (see ``WaitDistribution``)."""
    q = mmck(servers, capacity, arrival_rate, service_rate)  # validates, raises without steady state
    if capacity is None:
        return WaitDistribution(1.0 - q.p_wait, np.empty(0), servers * service_rate,
                                service_rate, True, q.p_wait,
                                servers * service_rate - arrival_rate)
    p = stationary_distribution(servers, capacity, arrival_rate, service_rate)
    admitted = 1.0 - p[capacity]
    stages = p[servers:capacity] / admitted  # arrival finds n = c..K-1: waits n - c + 1 stages
    return WaitDistribution(float(p[:servers].sum() / admitted), stages, servers * service_rate,
                            service_rate, False, float(stages.sum()), 0.0)


def expected_quantiles(params: Mapping[str, Any]) -> dict[str, float]:
    """Steady-state values of the ``mmck`` model's percentile metrics and ``fraction_wait_over``.

    Keys are the engine's names (``wait_p50`` ... ``time_in_system_p99``, ``fraction_wait_over``
    for ``params["wait_threshold"]``, default 1). Raises ValueError without a steady state.
    """
    d = wait_distribution(params["servers"], params.get("capacity"), params["arrival_rate"],
                          params["service_rate"])
    out = {f"wait_p{p}": d.wait_quantile(p / 100) for p in PERCENTILES}
    out |= {f"time_in_system_p{p}": d.sojourn_quantile(p / 100) for p in PERCENTILES}
    out["fraction_wait_over"] = d.wait_survival(float(params.get("wait_threshold", 1.0)))
    return out


__all__ = ["PERCENTILES", "QueueMetrics", "WaitDistribution", "expected_metrics",
           "expected_quantiles", "mmc", "mmck", "stationary_distribution", "wait_distribution"]
