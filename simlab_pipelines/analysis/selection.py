"""Ranking and selection: which configuration is best on a metric, with a guaranteed probability.

Indifference-zone selection (two stages). After ``n0`` first-stage replications of every
configuration, each configuration i gets ``N_i`` replications in total, and the one with the best
overall mean is selected. If the best true mean beats every other by at least the indifference
zone ``delta``, the selection is correct with probability at least ``P*`` (normal outputs).

- Independent streams: Rinott (1978), "On two-stage selection procedures and related
  probability-inequalities", Communications in Statistics A7(8):799–811:
  ``N_i = max(n0, ceil((h S_i / delta)^2))``, ``S_i^2`` the first-stage variance, and h solves
  ``∫_0^∞ [∫_0^∞ Φ(h / sqrt(ν (1/x + 1/y))) f_ν(x) dx]^{k-1} f_ν(y) dy = P*`` with ν = n0 - 1 and
  f_ν the chi-square density (Bechhofer, Santner & Goldsman 1995, *Design and Analysis of
  Experiments for Statistical Selection, Screening, and Multiple Comparisons*, Wiley, §2.6 and
  Table 2.13). ``rinott_h`` computes h by quadrature (trapezoid rule in log x, which is
  exponentially accurate for this smooth, fast-decaying integrand) and root finding.
- Common random numbers: Rinott's guarantee needs independent systems. With CRN the pairwise
  differences are used instead, with a Bonferroni split of ``1 - P*`` over the k - 1 comparisons
  with the best (Clark & Yang 1986, "A Bonferroni selection procedure when using common random
  numbers with unknown variances", Proc. 1986 Winter Simulation Conference; discussed with the
  alternatives in Nelson & Matejcik 1995, "Using common random numbers for indifference-zone
  selection and multiple comparisons in simulation", Management Science 41(12):1935–1945): one common ``N = max(n0, max_{i<j} ceil((t S_ij /
  delta)^2))`` with ``t = t_{1 - (1-P*)/(k-1), n0-1}`` and ``S_ij^2`` the first-stage variance of
  ``X_i - X_j`` (Stein's two-stage argument makes each pairwise statement exact).

Subset selection (no indifference zone): the configurations that cannot be ruled out as best.
Configuration i is kept if ``Xbar_i >= Xbar_j - W_ij`` for every j (maximising), and the subset
contains the best with probability at least ``confidence`` (normal outputs, any means):

- independent streams: Nelson, Swann, Goldsman & Song (2001), "Simple procedures for selecting the
  best simulated system when the number of alternatives is large", Operations Research
  49(6):950–963, with unequal sample sizes as in Boesel, Nelson & Kim (2003), Operations Research
  51(5):814–825: ``W_ij = sqrt(t_i^2 S_i^2 / n_i + t_j^2 S_j^2 / n_j)``, ``t_i = t_{c^{1/(k-1)},
  n_i - 1}`` (c = confidence);
- common random numbers (paired on the common replications): ``W_ij = t S_ij / sqrt(n)``, S_ij the
  standard deviation of ``X_i - X_j``, with the Bonferroni quantile ``t = t_{1 - (1-c)/(k-1), n-1}``
  (the pairwise screen of Nelson et al. 2001 made valid for correlated outputs by Bonferroni's
  inequality instead of independence).

Minimising is handled by negating the outputs.
"""

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations

import numpy as np
from scipy import special

from simlab_pipelines.analysis.frames import as_arrays
from simlab_pipelines.analysis.intervals import check_confidence

# Trapezoid nodes over log x for the chi-square integrals; 200 agree with adaptive quadrature to
# better than 1e-5 in h for n0 from 3 to 1000 and k up to 100.
_NODES = 200


def _chi_square_nodes(nu: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E[g(X)], X ~ chi-square(nu), by the trapezoid rule in s = log x."""
    lo = math.log(special.chdtri(nu, 1.0 - 1e-16))   # far lower tail
    hi = math.log(special.chdtri(nu, 1e-16))         # far upper tail
    s = np.linspace(lo, hi, _NODES)
    x = np.exp(s)
    log_pdf = (nu / 2 - 1) * s - x / 2 - (nu / 2) * math.log(2) - special.gammaln(nu / 2)
    return x, np.exp(log_pdf + s) * (s[1] - s[0])


def rinott_pcs(h: float, k: int, n0: int) -> float:
    """Rinott's lower bound on the probability of correct selection for constant ``h``."""
    nu = n0 - 1
    x, w = _chi_square_nodes(nu)
    arg = h / np.sqrt(nu * (1.0 / x[:, None] + 1.0 / x[None, :]))
    inner = w @ special.ndtr(arg)  # inner[j] = E_X[Φ(h / sqrt(ν(1/X + 1/y_j)))]
    return float(w @ inner ** (k - 1))


@lru_cache(maxsize=256)
def rinott_h(k: int, n0: int, pstar: float) -> float:
    """Rinott's constant h for k systems, first-stage size n0 and P(correct selection) >= pstar."""
    if k < 2:
        raise ValueError(f"k = {k}: Rinott's procedure needs at least 2 systems")
    if n0 < 2:
        raise ValueError(f"n0 = {n0}: the first stage needs at least 2 replications")
    if not 1.0 / k < pstar < 1.0:
        raise ValueError(f"pstar = {pstar}: must be in (1/k, 1) = ({1.0 / k:.4g}, 1)")
    high = 1.0
    while rinott_pcs(high, k, n0) < pstar:  # the bound rises from 1/k to 1 as h grows
        high *= 2.0
        if high > 1e6:
            raise ArithmeticError(f"Rinott's h did not converge for k={k}, n0={n0}, pstar={pstar}")
    # Here, not at the top: scipy.optimize (~0.13 s) only for a selection without CRN.
    from scipy import optimize

    return float(optimize.brentq(lambda h: rinott_pcs(h, k, n0) - pstar, 0.0, high, xtol=1e-10))


def select_best(means: Mapping[str, float], minimize: bool = False) -> str:
    """The key with the best mean (ties broken by key, so the answer is deterministic)."""
    finite = {k: v for k, v in means.items() if not math.isnan(v)}
    if not finite:
        raise ValueError("select_best: no configuration has a defined mean")
    sign = 1.0 if minimize else -1.0
    return min(sorted(finite), key=lambda key: sign * finite[key])


@dataclass(frozen=True)
class TwoStageSelection:
    """The second-stage sample sizes and, once they are all there, the selected configuration."""

    procedure: str                   # "rinott" or "bonferroni-crn"
    constant: float                  # Rinott's h, or the Bonferroni t quantile
    n0: int
    indifference_zone: float
    pstar: float
    minimize: bool
    required: dict[str, int]         # N_i: total replications each configuration needs
    complete: bool                   # every configuration has its N_i observations
    best: str | None                 # selected configuration (None until complete)
    means: dict[str, float] = field(default_factory=dict)  # over the first N_i (or all) observations

    def additional(self, current: Mapping[str, int]) -> dict[str, int]:
        """Replications still to run per configuration, given how many each has."""
        return {key: max(0, n - int(current.get(key, 0))) for key, n in self.required.items()}


def two_stage_selection(observations: Mapping[str, Sequence[float] | np.ndarray], *,
                        indifference_zone: float, pstar: float = 0.95, minimize: bool = False,
                        common_random_numbers: bool = False,
                        n0: int | None = None) -> TwoStageSelection:
    """Indifference-zone selection of the best configuration in two stages.

    ``observations``: config_key -> values in replication order (with CRN, row r of every
    configuration must be replication r: use ``frames.aligned_samples``). The first ``n0``
    (default: the fewest any configuration has) give the first-stage variances; call again with
    the second-stage observations added to get ``best``. Rinott's procedure without CRN, the
    Bonferroni (Clark & Yang) procedure with it; see the module docstring.
    """
    pstar = check_confidence(pstar, "pstar")
    if not (indifference_zone > 0 and math.isfinite(indifference_zone)):
        raise ValueError(f"indifference_zone = {indifference_zone!r}: must be a positive number")
    data = as_arrays(observations, "observations")
    k = len(data)
    shortest = min(x.size for x in data.values())
    n0 = shortest if n0 is None else int(n0)
    if n0 < 2 or n0 > shortest:
        raise ValueError(f"n0 = {n0}: needs 2 <= n0 <= {shortest} (the fewest observations any "
                         "configuration has)")
    keys = sorted(data)
    if k == 1:
        required = {keys[0]: n0}
        constant, procedure = 0.0, "rinott"
    elif common_random_numbers:
        procedure = "bonferroni-crn"
        constant = float(special.stdtrit(n0 - 1, 1.0 - (1.0 - pstar) / (k - 1)))
        spread = max(float(np.var(data[a][:n0] - data[b][:n0], ddof=1))
                     for a, b in combinations(keys, 2))
        common = max(n0, math.ceil(constant**2 * spread / indifference_zone**2))
        required = dict.fromkeys(keys, common)
    else:
        procedure = "rinott"
        constant = rinott_h(k, n0, pstar)
        required = {key: max(n0, math.ceil(constant**2 * float(np.var(data[key][:n0], ddof=1))
                                           / indifference_zone**2)) for key in keys}
    complete = all(data[key].size >= required[key] for key in keys)
    means = {key: float(data[key][: required[key]].mean()) for key in keys}
    best = select_best(means, minimize) if complete else None
    return TwoStageSelection(procedure, constant, n0, float(indifference_zone), pstar, minimize,
                             required, complete, best, means)


@dataclass(frozen=True)
class Subset:
    """The configurations that cannot be ruled out as best, and the sample best among them."""

    keep: tuple[str, ...]        # sorted from best to worst sample mean
    best: str                    # the best sample mean
    confidence: float
    minimize: bool
    paired: bool
    means: dict[str, float]


def subset_selection(observations: Mapping[str, Sequence[float] | np.ndarray], *,
                     confidence: float = 0.95, minimize: bool = False,
                     common_random_numbers: bool = False) -> Subset:
    """The subset that contains the best configuration with probability >= ``confidence``.

    ``observations``: config_key -> values (with ``common_random_numbers=True``, aligned by
    replication and of equal length: use ``frames.aligned_samples``). See the module docstring
    for the procedures (Nelson et al. 2001; Boesel, Nelson & Kim 2003).
    """
    confidence = check_confidence(confidence)
    data = as_arrays(observations, "observations")
    keys = sorted(data)
    k = len(keys)
    sign = -1.0 if minimize else 1.0
    x = {key: sign * data[key] for key in keys}
    for key in keys:
        if x[key].size < 2:
            raise ValueError(f"configuration {key!r}: {x[key].size} observation(s); subset "
                             "selection needs at least 2")
    means = {key: float(data[key].mean()) for key in keys}
    if common_random_numbers:
        lengths = {x[key].size for key in keys}
        if len(lengths) != 1:
            raise ValueError("common_random_numbers=True needs the same replications for every "
                             f"configuration (lengths {sorted(lengths)}); use aligned_samples")
    keep = []
    for i in keys:
        ruled_out = False
        for j in keys:
            if i == j:
                continue
            if common_random_numbers:
                n = x[i].size
                t = float(special.stdtrit(n - 1, 1.0 - (1.0 - confidence) / (k - 1)))
                w = t * float(np.std(x[i] - x[j], ddof=1)) / math.sqrt(n)
            else:
                q = confidence ** (1.0 / (k - 1))
                ti = float(special.stdtrit(x[i].size - 1, q))
                tj = float(special.stdtrit(x[j].size - 1, q))
                w = math.sqrt(ti**2 * np.var(x[i], ddof=1) / x[i].size
                              + tj**2 * np.var(x[j], ddof=1) / x[j].size)
            if x[i].mean() < x[j].mean() - w:
                ruled_out = True
                break
        if not ruled_out:
            keep.append(i)
    order = sorted(keep, key=lambda key: (-sign * means[key], key))
    return Subset(tuple(order), select_best(means, minimize), confidence, minimize,
                  common_random_numbers, means)


@dataclass(frozen=True)
class Recommendation:
    """The configuration to act on: the cheapest among those as good as the best on the objective.

    ``equivalent``: the configurations treated as equally good (best sample mean first): within
    the indifference zone of the best mean, or, without a zone, those subset selection cannot rule
    out; every configuration when none differs significantly from the baseline. ``choice`` is the
    cheapest of them by ``cost`` (its mean), else by the fewest ``changes`` from the baseline, ties
    (and without either) broken by the objective. ``reason`` says which: "cost", "fewest
    changes" or "best".
    """

    choice: str
    best: str
    equivalent: tuple[str, ...]
    reason: str
    minimize: bool
    means: dict[str, float]
    indifference_zone: float | None = None
    cost: dict[str, float] | None = None
    changes: dict[str, int] | None = None
    # With constraints: the configurations shown to meet them (the only ones recommended);
    # None without constraints. ``best`` is then the best of these.
    feasible: tuple[str, ...] | None = None


def recommend(means: Mapping[str, float], *, minimize: bool,
              indifference_zone: float | None = None, keep: Sequence[str] | None = None,
              cost: Mapping[str, float] | None = None, changes: Mapping[str, int] | None = None,
              all_equivalent: bool = False,
              feasible: Collection[str] | None = None) -> Recommendation:
    """Which configuration to recommend, respecting the indifference zone (see Recommendation).

    ``means``: config_key -> objective mean. ``keep``: subset selection's survivors (used without
    a zone). ``cost``: config_key -> mean cost (lower is cheaper). ``changes``: config_key ->
    number of parameters changed from the baseline. ``all_equivalent``: no configuration differs
    significantly from the baseline, so all are treated as equally good. ``feasible``: with
    constraints, the configurations declared feasible (``analysis.constraints``): the
    recommendation is the best among them, and the others are not considered at all (ValueError
    when none is feasible: the caller says so instead).
    """
    constrained = None
    if feasible is not None:
        constrained = tuple(sorted(k for k in feasible if k in means))
        if not constrained:
            raise ValueError("recommend: no configuration is feasible (meets every constraint)")
        means = {k: means[k] for k in constrained}
        if keep:
            keep = [k for k in keep if k in means]
    best = select_best(means, minimize)
    sign = 1.0 if minimize else -1.0
    defined = [k for k in means if not math.isnan(means[k])]
    if all_equivalent:
        equivalent = defined
    elif indifference_zone is not None:
        equivalent = [k for k in defined
                      if sign * (means[k] - means[best]) <= indifference_zone * (1 + 1e-12)]
    elif keep:
        equivalent = [k for k in keep if k in means]
    else:
        equivalent = [best]
    order = sorted(equivalent, key=lambda k: (sign * means[k], k))
    by_objective = {k: i for i, k in enumerate(order)}
    if cost is not None and all(k in cost and not math.isnan(cost[k]) for k in order):
        choice = min(order, key=lambda k: (cost[k], by_objective[k]))
        reason = "cost"
    elif changes is not None and all(k in changes for k in order):
        choice = min(order, key=lambda k: (changes[k], by_objective[k]))
        reason = "fewest changes"
    else:
        choice, reason = order[0], "best"
    if choice == order[0] and reason != "best" and len(order) == 1:
        reason = "best"
    return Recommendation(choice, best, tuple(order), reason, minimize, dict(means),
                          indifference_zone, dict(cost) if cost is not None else None,
                          dict(changes) if changes is not None else None, constrained)
