"""t intervals over mmck replications cover the queueing-theory value at about the nominal rate.

M/M/2/10 with lambda = mu = 1 (rho = 0.5), started empty, warm-up 20, horizon 200: the queue
relaxes in a few time units, so the initial-condition bias left after the warm-up is negligible
(over 1,000 replications the mean of L was 1.328 ± 0.008 against the exact 1.3264). What remains
is the skewness of a replication's time average (about 1 for L at this horizon), which makes a
10-replication t interval slightly liberal: in 2,000 macro-replications offline, coverage of the
95% interval was 0.945 for mean_number_in_system and 0.9475 for server_utilisation (standard
error 0.005). mean_wait (0.934) is left out: a ratio estimator, more skewed.

The test: 400 macro-replications of 10 replications each (replication numbers are disjoint, so
all 4,000 runs are independent). A correct pipeline has a true coverage in [0.935, 0.95]; the
accepted band is [0.935 - 3.29 sd, 0.95 + 3.29 sd] with sd = sqrt(0.95·0.05/400) = 0.011, so each
metric fails by chance with probability <= 0.1% (two-sided), the file <= 0.2%. It catches a
missing 1/sqrt(n) (coverage ~1), correlated replications (far below), and the like. ~13 s of CPU.
"""

import math

import numpy as np
import pytest

import engine
from engine.theory import expected_metrics
from simlab_pipelines.analysis import t_interval

pytestmark = pytest.mark.slow

PARAMS = {"servers": 2, "capacity": 10, "arrival_rate": 1.0, "service_rate": 1.0}
MACRO, REPLICATIONS, SEED = 400, 10, 99
METRICS = ("mean_number_in_system", "server_utilisation")


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    values = {m: np.empty((MACRO, REPLICATIONS)) for m in METRICS}
    for i in range(MACRO):
        for r in range(REPLICATIONS):
            metrics = engine.simulate("mmck", PARAMS, replication=i * REPLICATIONS + r, seed=SEED,
                                      horizon=200.0, warmup=20.0).metrics
            for m in METRICS:
                values[m][i, r] = metrics[m]
    return values


@pytest.mark.parametrize("metric", METRICS)
def test_coverage_of_mmck_intervals_is_near_nominal(outputs, metric):
    truth = expected_metrics(PARAMS)[metric]
    covered = sum(iv.ci_low <= truth <= iv.ci_high for iv in map(t_interval, outputs[metric]))
    sd = math.sqrt(0.95 * 0.05 / MACRO)
    assert 0.935 - 3.29 * sd <= covered / MACRO <= 0.95 + 3.29 * sd, covered / MACRO
