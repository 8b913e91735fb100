"""The ``constraints:`` of an experiment file: service levels a recommendation must meet.

```yaml
constraints:
  - {metric: latency_p99, max: 0.2}                     # confidence: the file's (default 0.95)
  - {metric: success_rate, min: 0.99, confidence: 0.99}
```

Each constraint bounds the mean of one metric or response from above (``max``), below (``min``)
or both. Constraints are allowed with every kind of experiment (factors, configurations, design,
search) and filter its recommendation: only configurations shown to meet every constraint (one-
sided intervals, ``analysis.constraints``) can be recommended. The checks that need the model
(unknown metric or response, neither bound given, ``min`` above ``max``, a metric constrained
twice) are in ``check_constraints``, called by ``resolve.py`` with field paths such as
``constraints[1].metric``.
"""

import math
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from simlab_pipelines.experiments.errors import Loc

# As spec.py's _STRICT (spec.py imports this module, so it cannot be imported from there).
_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


class Constraint(BaseModel):
    """One service level: ``min <= mean(metric) <= max`` (either bound may be absent, not both),
    shown with one-sided intervals at ``confidence`` (default: the file's ``confidence``)."""

    model_config = _STRICT

    metric: str
    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    confidence: float | None = Field(default=None, gt=0, lt=1)

    def resolved_confidence(self, default: float) -> float:
        """The constraint's confidence, or the file's ``default``."""
        return self.confidence if self.confidence is not None else default

    def describe(self) -> str:
        """``latency_p99 <= 0.2``, ``0.99 <= success_rate``, ``1 <= x <= 2``."""
        if self.min is not None and self.max is not None:
            return f"{self.min:g} <= {self.metric} <= {self.max:g}"
        if self.max is not None:
            return f"{self.metric} <= {self.max:g}"
        return f"{self.metric} >= {self.min:g}"


def check_constraints(constraints: Sequence[Constraint], metrics: Iterable[str],
                      model_name: str) -> list[tuple[Loc, str]]:
    """(field path, reason) for every problem: unknown metric or response, neither bound,
    ``min > max``, and a metric constrained twice (give both bounds in one constraint)."""
    known = list(dict.fromkeys(metrics))
    errors: list[tuple[Loc, str]] = []
    seen: dict[str, int] = {}
    for i, constraint in enumerate(constraints):
        loc: Loc = ("constraints", i)
        if constraint.metric not in known:
            errors.append(((*loc, "metric"), f"unknown metric or response "
                           f"{constraint.metric!r} for model {model_name!r} (known: "
                           f"{', '.join(known)})"))
        elif constraint.metric in seen:
            errors.append(((*loc, "metric"), f"{constraint.metric!r} is already constrained "
                           f"in constraints[{seen[constraint.metric]}]; give min and max in one "
                           "constraint"))
        else:
            seen[constraint.metric] = i
        if constraint.min is None and constraint.max is None:
            errors.append((loc, f"constraint on {constraint.metric!r} has neither min nor max: "
                           "give at least one bound"))
        elif (constraint.min is not None and constraint.max is not None
              and constraint.min > constraint.max):
            errors.append(((*loc, "min"), f"min = {constraint.min:g} is above max = "
                           f"{constraint.max:g}: no value can meet both"))
    return errors


def canonical_constraints(constraints: Sequence[Constraint]) -> list[dict[str, Any]]:
    """The constraints as the spec hash sees them (floats as floats, absent fields left out)."""
    out = []
    for c in constraints:
        entry: dict[str, Any] = {"metric": c.metric}
        for name in ("min", "max", "confidence"):
            value = getattr(c, name)
            if value is not None and math.isfinite(value):
                entry[name] = float(value)
        out.append(entry)
    return out
