"""The metric an experiment is about, which the summary's tables, the sweep's closing table and
the HTML report lead with: a breaking point's metric, else its objective, else its precision
metric, else the first metric its design analyses, else the model's first metric.
"""

from simlab_pipelines.experiments import ExperimentSpec


def headline_metric(spec: ExperimentSpec) -> str:
    """The metric the experiment is about: a breaking point's metric, else its objective, else
    its precision metric, else its design's first analysed metric, else the model's first."""
    search = spec.search
    if search is not None and search.method == "threshold" and search.metric:
        return search.metric
    if spec.objective is not None:
        return spec.objective.metric
    if spec.precision is not None:
        return spec.precision.metric
    if spec.design is not None and spec.design.metrics:
        return spec.design.metrics[0]
    return next(iter(spec.resolved_model.metrics))
