"""Output statistics cover only the observation window [warmup, warmup + horizon], and time
averages are time-weighted: the estimators on hand-made paths, then the mmck model on scripted
(deterministic) arrivals and service demands whose every metric can be worked out on paper.

Dyadic times (sums of 1/4s) keep every event time and area exact in floating point.
"""

import math
from collections.abc import Iterator

import pytest

import engine
from engine.randomness import Stream
from engine.statistics import Counter, Tally, TimeAverage


def test_time_average_weights_by_duration_and_clips_to_the_window():
    avg = TimeAverage(2.0, 8.0)
    avg.set(1.0, 3.0)    # 3 from t = 1: only [2, 4) of it is inside the window
    avg.set(4.0, 1.0)    # 1 on [4, 8]
    avg.set(10.0, 50.0)  # after the window: ignored
    assert avg.mean() == pytest.approx((3 * 2 + 1 * 4) / 6, rel=1e-15)


def test_time_average_is_not_an_average_over_change_events():
    # Many short excursions to 10 and one long stretch at 0: the event average would be ~5,
    # the time average is the area (10 x 0.25 per excursion) over the span.
    avg = TimeAverage(0.0, 100.0)
    for k in range(20):
        avg.set(k, 10.0)
        avg.set(k + 0.25, 0.0)
    assert avg.mean() == pytest.approx(20 * 10 * 0.25 / 100, rel=1e-15)


def test_time_average_value_set_before_the_window_counts_for_all_of_it():
    avg = TimeAverage(5.0, 9.0)
    avg.add(1.0, 2.0)
    avg.add(3.0, 1.0)  # 3 from t = 3 until the end, never changed inside the window
    assert avg.mean() == 3.0


def test_time_average_batches_cover_the_whole_run_in_equal_widths():
    avg = TimeAverage(4.0, 8.0, batch_width=2.0)
    avg.set(1.0, 4.0)  # [0,1): 0, [1,3): 4, [3,5): 2, [5,8]: 6
    avg.set(3.0, 2.0)
    avg.set(5.0, 6.0)
    assert avg.mean() == pytest.approx((2 * 1 + 6 * 3) / 4, rel=1e-15)
    # batches from t = 0, warm-up included: [0,2) [2,4) [4,6) [6,8)
    assert avg.batches == pytest.approx([(0 + 4) / 2, (4 + 2) / 2, (2 + 6) / 2, 6.0], rel=1e-15)


def test_tally_and_counter_keep_only_observations_inside_the_window():
    tally, counter = Tally(10.0, 20.0), Counter(10.0, 20.0)
    for when, value in ((9.75, 100.0), (10.0, 1.0), (15.0, 2.0), (20.0, 3.0), (20.25, 100.0)):
        tally.record(when, value)
        counter.hit(when)
    assert (tally.count, tally.mean(), counter.count) == (3, 2.0, 3)
    assert math.isnan(Tally(0.0, 1.0).mean())  # no observation: undefined, not zero


# --- the mmck model on scripted inputs ---------------------------------------------------------

def _script(monkeypatch, **sequences: list[float]) -> None:
    """Make each named stream's exponential() return the given values, then never again (1e9)."""
    streams: dict[str, Iterator[float]] = {name: iter(values) for name, values in sequences.items()}

    def exponential(self, mean):
        return next(streams[self.name], 1e9)

    monkeypatch.setattr(Stream, "exponential", exponential)


def _mmck(params: dict, warmup: float, horizon: float) -> dict[str, float]:
    return engine.simulate("mmck", params, replication=0, seed=1, warmup=warmup,
                           horizon=horizon).metrics


def test_mmck_window_with_queueing(monkeypatch):
    # Arrivals at 1, 1.25, 1.5, 11.5 with demands 2, 2, 2, 0.5 on one server: customer 1 is served
    # on [1, 3], customer 2 waits and is served on [3, 5], customer 3 on [5, 7], customer 4 on
    # [11.5, 12]. Window [4, 20]: customer 2 started service before it (its wait is not counted)
    # but departs inside it (its time in system is); customer 3 started at 5 after waiting 3.5.
    _script(monkeypatch, arrivals=[1.0, 0.25, 0.25, 10.0], service=[2.0, 2.0, 2.0, 0.5])
    metrics = _mmck({"servers": 1, "capacity": None, "arrival_rate": 1.0, "service_rate": 1.0},
                    warmup=4.0, horizon=16.0)
    # in system: 2 on [4,5], 1 on [5,7], 1 on [11.5,12]; busy: 1 on [4,7] and [11.5,12]
    assert metrics["mean_number_in_system"] == pytest.approx((2 * 1 + 1 * 2 + 0.5) / 16, rel=1e-15)
    assert metrics["server_utilisation"] == pytest.approx(3.5 / 16, rel=1e-15)
    assert metrics["mean_queue_length"] == pytest.approx(1 / 16, rel=1e-14)
    assert metrics["mean_wait"] == pytest.approx((3.5 + 0.0) / 2, rel=1e-15)  # customers 3 and 4
    assert metrics["mean_time_in_system"] == pytest.approx((3.75 + 5.5 + 0.5) / 3, rel=1e-15)
    assert metrics["customers_served"] == 3.0
    assert metrics["throughput"] == pytest.approx(3 / 16, rel=1e-15)
    assert metrics["blocking_probability"] == 0.0


def test_mmck_window_with_blocking(monkeypatch):
    # One server, room for one (K = 1): arrivals every 1, each needing 1.5, so odd-numbered
    # customers are served on [n, n + 1.5] and even-numbered ones find the system full.
    _script(monkeypatch, arrivals=[1.0] * 40, service=[1.5] * 40)
    metrics = _mmck({"servers": 1, "capacity": 1, "arrival_rate": 1.0, "service_rate": 1.0},
                    warmup=10.25, horizon=6.5)
    # window [10.25, 16.75]: arrivals 11..16, of which 12, 14, 16 blocked; busy on [10.25, 10.5],
    # [11, 12.5], [13, 14.5], [15, 16.5]; departures at 10.5, 12.5, 14.5, 16.5
    assert metrics["blocking_probability"] == 0.5
    assert metrics["mean_number_in_system"] == pytest.approx(4.75 / 6.5, rel=1e-15)
    assert metrics["server_utilisation"] == pytest.approx(4.75 / 6.5, rel=1e-15)
    assert metrics["mean_queue_length"] == 0.0
    assert metrics["mean_wait"] == 0.0
    assert metrics["mean_time_in_system"] == 1.5
    assert metrics["customers_served"] == 4.0
    assert metrics["throughput"] == pytest.approx(4 / 6.5, rel=1e-15)


def test_mmck_nothing_in_the_window_gives_undefined_means_not_zeros(monkeypatch):
    _script(monkeypatch, arrivals=[1.0], service=[0.5])
    metrics = _mmck({"servers": 1}, warmup=10.0, horizon=5.0)
    assert math.isnan(metrics["mean_wait"]) and math.isnan(metrics["mean_time_in_system"])
    assert metrics["mean_number_in_system"] == 0.0 and metrics["customers_served"] == 0.0
