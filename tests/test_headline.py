"""The metric the sweep's table and the report lead with is the one the experiment asks about:
a breaking point's metric and a design's analysed metric (it was the model's first metric,
mean_number_in_system, for both of the mmck examples)."""

from pathlib import Path

import pytest

from simlab_pipelines.analysis.headline import headline_metric
from simlab_pipelines.experiments import load_experiment

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


@pytest.mark.parametrize("name", ["mmck_breaking_point", "mmck_capacity_screening"])
def test_the_headline_is_what_the_question_is_about(name):
    spec = load_experiment(EXPERIMENTS / f"{name}.yaml")
    assert headline_metric(spec) == "wait_p95"


def test_an_objective_still_leads_and_otherwise_the_models_first_metric():
    assert headline_metric(load_experiment(EXPERIMENTS / "restaurant_staffing.yaml")) == \
        "profit_per_day"
    assert headline_metric(load_experiment(EXPERIMENTS / "mmck_validation.yaml")) == \
        "mean_number_in_system"
