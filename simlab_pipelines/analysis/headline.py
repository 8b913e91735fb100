"""The metric an experiment is about, which the summary's tables, the sweep's closing table and
the HTML report lead with: its objective, else its precision metric, else the model's first metric.
"""

from simlab_pipelines.experiments import ExperimentSpec


def headline_metric(spec: ExperimentSpec) -> str:
    """The metric the experiment is about: its objective, else its precision metric, else the
    model's first metric."""
    if spec.objective is not None:
        return spec.objective.metric
    if spec.precision is not None:
        return spec.precision.metric
    return next(iter(spec.resolved_model.metrics))
