"""The validated experiment: the schema of the file's fields and what is derived from them."""

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.models.base import Model
from engine.registry import ModelRef
from simlab_pipelines.experiments import scale
from simlab_pipelines.experiments.constraints import Constraint, canonical_constraints
from simlab_pipelines.experiments.designs import Design, DesignPoints
from simlab_pipelines.experiments.keys import Configuration, canonical_json
from simlab_pipelines.experiments.models import ExperimentModel, check_model_field, identity
from simlab_pipelines.experiments.resolve import (
    DEFAULT_TIMEOUT_SECONDS,
    MAX_REPLICATIONS,
    resolve_spec,
)
from simlab_pipelines.experiments.responses import Response, ResponseSpec, resolve_responses
from simlab_pipelines.experiments.search import (
    MAX_SEARCH_CONFIGURATIONS,
    Search,
    SearchSpace,
    probes,
)

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
# Asset groups of our own: an experiment by that name would collide with them in the UI.
RESERVED_NAMES = frozenset({"rejected_experiments"})
# The horizon-doubling steady-state check: replications per configuration run again at twice the
# horizon under ``horizon_doubling: auto`` (three: a paired t test with 2 degrees of freedom, which
# an unbounded queue's growth clears by far; ``analysis/stationarity.py``), and at most.
DOUBLING_SAMPLE = 3
MAX_DOUBLING = 1000
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0  # a week: beyond it a simulation is not a replication

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


class Precision(BaseModel):
    """Sequential replications: add replications until ``metric``'s CI is narrow enough."""

    model_config = _STRICT

    metric: str
    relative_half_width: float = Field(gt=0, lt=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    max_replications: int = Field(ge=2, le=MAX_REPLICATIONS)


class Objective(BaseModel):
    """What "better" means when configurations are compared or ranked."""

    model_config = _STRICT

    metric: str
    direction: Literal["minimize", "maximize"]
    indifference_zone: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class ExperimentSpec(BaseModel):
    """A validated experiment definition (see DESIGN.md, "Experiment definition")."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(pattern=NAME_PATTERN, max_length=60)
    description: str = ""
    question: str = ""  # the plain question the experiment answers
    model: str | dict[str, Any]  # a name, 'package.module:ATTRIBUTE' or a command (models.py)
    seed: int = Field(ge=0, lt=2**63)
    replications: int = Field(ge=2, le=MAX_REPLICATIONS)
    horizon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    warmup: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    common_random_numbers: bool = True
    parameters: dict[str, Any] = Field(default_factory=dict)
    factors: dict[str, list[Any]] | None = None
    configurations: list[dict[str, Any]] | None = Field(default=None, min_length=1)
    design: Design | None = None  # a sampling plan instead of factors/configurations
    search: Search | None = None  # an optimiser's proposals instead (experiments/search.py)
    baseline: dict[str, Any] | None = None
    precision: Precision | None = None
    objective: Objective | None = None
    confidence: float = Field(default=0.95, gt=0, lt=1)
    series_interval: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_partitions_per_run: int | None = Field(default=None, ge=1)
    # Replications per partition: blocks keep an experiment within Dagster's recommended
    # 100,000 partitions per asset (experiments/scale.py); results do not depend on it.
    replications_per_partition: int | str = "auto"
    # Replications per configuration run again at twice the horizon for the steady-state check
    # of a model that records no series (analysis/stationarity.py); auto: DOUBLING_SAMPLE then.
    horizon_doubling: int | str = "auto"
    compare_all_pairs: bool = False  # comparisons between every pair, not only to the baseline
    check_theory: bool = False  # mmck only: the agrees_with_theory check on the summary
    # Wall-time limit of one simulation (seconds); then it fails its partition only.
    timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS, gt=0, le=MAX_TIMEOUT_SECONDS,
                                   allow_inf_nan=False)
    # name -> expression over a replication's metrics and parameters (responses.py)
    responses: dict[str, str | ResponseSpec] = Field(default_factory=dict)
    # service levels that filter the recommendation (constraints.py, analysis/constraints.py)
    constraints: list[Constraint] = Field(default_factory=list)

    _source: Path | None = PrivateAttr(default=None)
    _configurations: tuple[Configuration, ...] = PrivateAttr(default=())
    _baseline_key: str | None = PrivateAttr(default=None)
    _canonical: dict[str, Any] = PrivateAttr(default_factory=dict)
    _responses: dict[str, Response] = PrivateAttr(default_factory=dict)
    _design: DesignPoints | None = PrivateAttr(default=None)
    _model: ExperimentModel | None = PrivateAttr(default=None)
    _search: SearchSpace | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _search_replications(cls, data: Any) -> Any:
        # With a search, ``replications`` may be left out: it is the search's first stage
        # (resolve.py checks that both agree when both are given).
        if isinstance(data, dict) and "replications" not in data \
                and isinstance(data.get("search"), dict):
            first = data["search"].get("replications")
            if isinstance(first, int) and not isinstance(first, bool):
                data = {**data, "replications": first}
        # A breaking-point search's coverage argument needs independent streams at each value
        # (analysis/threshold.py): that is its default; a file may still ask for CRN.
        if isinstance(data, dict) and "common_random_numbers" not in data \
                and isinstance(data.get("search"), dict) \
                and data["search"].get("method") == "threshold":
            data = {**data, "common_random_numbers": False}
        return data

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_NAMES:
            raise ValueError(f"name {value!r} is reserved (the UI's group of rejected files); "
                             "choose another")
        return value

    @field_validator("replications_per_partition")
    @classmethod
    def _block(cls, value: int | str) -> int | str:
        if value == "auto" or (isinstance(value, int) and 1 <= value <= MAX_REPLICATIONS):
            return value
        raise ValueError(f"replications_per_partition must be auto or a whole number from 1 to "
                         f"{MAX_REPLICATIONS:,} (got {value!r})")

    @field_validator("horizon_doubling")
    @classmethod
    def _doubling(cls, value: int | str) -> int | str:
        if value == "auto" or (isinstance(value, int) and 0 <= value <= MAX_DOUBLING):
            return value
        raise ValueError(f"must be auto, 0 (no check) or a number of replications from 1 to "
                         f"{MAX_DOUBLING} (got {value!r})")

    @field_validator("model", mode="plain")
    @classmethod
    def _model_kind(cls, value: Any) -> Any:
        return check_model_field(value)  # which model, and whether it is usable: resolve_spec

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> "ExperimentSpec":
        resolved = resolve_spec(self, (info.context or {}).get("directory"))
        self._model = resolved.model
        self._configurations = resolved.configurations
        self._baseline_key = resolved.baseline_key
        self._canonical = resolved.canonical
        if not self.responses:  # files without responses keep the spec hash they had
            self._canonical.pop("responses", None)
        if self.replications_per_partition == "auto":  # likewise files that leave it
            self._canonical.pop("replications_per_partition", None)
        if self.horizon_doubling == "auto":
            self._canonical.pop("horizon_doubling", None)
        elif self.horizon_doubling and not self.level_metrics:
            raise ValueError(
                f"horizon_doubling: {self.horizon_doubling} asks for the steady-state check, but "
                f"none of the metrics of model {self.model_name!r} is a level (a mean, rate or "
                "share); declare `kind: level` on the ones that are, or set horizon_doubling: 0")
        if self.constraints:  # likewise files without constraints
            self._canonical["constraints"] = canonical_constraints(self.constraints)
        else:
            self._canonical.pop("constraints", None)
        # A search's configurations are proposed later: responses are checked on probes.
        checked = resolved.configurations if resolved.search is None else probes(
            resolved.search, self.resolved_model, self.parameters)
        self._responses = resolve_responses(self.responses, self.resolved_model, checked)
        self._design = resolved.design
        self._search = resolved.search
        return self

    def __hash__(self) -> int:
        return hash(self.spec_hash())

    @property
    def source(self) -> Path | None:
        """The file this spec was loaded from (not part of the hash)."""
        return self._source

    def configurations_list(self) -> list[Configuration]:
        """The configurations: factorial order (first factor slowest) or the file's order.

        Empty for a search, whose configurations are proposed from the results:
        ``plan.configurations(spec, observations)``."""
        return [Configuration(c.key, dict(c.params), dict(c.varying)) for c in self._configurations]

    def config_keys(self) -> list[str]:
        """The configuration keys, in ``configurations_list()`` order."""
        return [c.key for c in self._configurations]

    @property
    def design_points(self) -> DesignPoints | None:
        """The generated design (rows in the sampler's order, each with its configuration), or
        None without ``design``."""
        return self._design

    @property
    def search_space(self) -> SearchSpace | None:
        """The resolved ``search`` (factors, budget, optimiser), or None without one."""
        return self._search

    @property
    def parsed_responses(self) -> dict[str, Response]:
        """The responses, parsed and checked (name -> Response), in the file's order."""
        return dict(self._responses)

    def units(self) -> dict[str, str]:
        """The unit of every metric and response that declares one."""
        units = dict(self.resolved_model.units)
        return units | {n: r.unit for n, r in self._responses.items() if r.unit}

    def parameter_units(self) -> dict[str, str]:
        """The unit of every model parameter that declares one (``Parameter.unit``)."""
        return {p.name: p.unit for p in self.resolved_model.parameters if p.unit}

    def better(self) -> dict[str, str]:
        """Which way is better ("lower"/"higher") for every metric and response that says so."""
        better = dict(self.resolved_model.better)
        return better | {n: r.better for n, r in self._responses.items() if r.better}

    @property
    def baseline_key(self) -> str | None:
        """The key of the baseline configuration, or None without a baseline."""
        return self._baseline_key

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON of the validated spec (mapping order and source ignored).

        Parameter values are normalised to the model's types first (``1`` and ``1.0`` for a float
        parameter hash the same); list order (factor values, configurations) counts.
        """
        return hashlib.sha256(canonical_json(self._canonical).encode("utf-8")).hexdigest()

    def simulation_hash(self) -> str:
        """sha256 of what every simulation of the experiment depends on besides its configuration
        and replication: model, seed, horizon, warm-up, common random numbers, recorded series and
        the fixed parameters. Adding configurations or replications, or changing the analysis
        (baseline, objective, precision, confidence), leaves it unchanged."""
        shared = {"model": identity(self.model), "seed": self.seed, "horizon": self.resolved_horizon,
                  "warmup": self.resolved_warmup, "crn": self.common_random_numbers,
                  "series_interval": self.series_interval,
                  "parameters": self._canonical.get("parameters", {})}
        if self.doubling_sample:  # (absent without it: those experiments' results stay current)
            shared["horizon_doubling"] = self.doubling_sample
        return hashlib.sha256(canonical_json(shared).encode("utf-8")).hexdigest()

    def inputs_hash(self, config: Configuration) -> str:
        """A short hash of everything one simulation of ``config`` depends on (but the replication
        number, which is in its partition key): a result file whose hash differs was made from
        other inputs and must be run again."""
        inputs = {"simulation": self.simulation_hash(), "params": config.params,
                  **self._model.version_inputs()}
        return hashlib.sha256(canonical_json(inputs).encode("utf-8")).hexdigest()[:24]

    @property
    def resolved_horizon(self) -> float:
        """The horizon, or the model's default."""
        return self.horizon if self.horizon is not None else self.resolved_model.default_horizon

    @property
    def resolved_warmup(self) -> float:
        """The warm-up, or the model's default."""
        return self.warmup if self.warmup is not None else self.resolved_model.default_warmup

    @property
    def resolved_model(self) -> Model:
        """The engine model this experiment runs (built-in, plug-in or command-line simulator)."""
        return self._model.model

    @property
    def model_name(self) -> str:
        """The model's name (``model`` itself may be a reference or a command's declaration)."""
        return self._model.name

    @property
    def model_ref(self) -> ModelRef:
        """How a pool worker finds the model."""
        return self._model.ref

    @property
    def code_version(self) -> str:
        """The replications' code version: ``engine-<version>`` for a built-in model,
        ``model-<name>-<version>`` for a plug-in (which a built-in's change never makes stale)."""
        return self._model.code_version

    @property
    def level_metrics(self) -> tuple[str, ...]:
        """The model's metrics that measure a level (a mean, rate or share), declared or
        inferred (``engine.models.base.metric_kind``): the horizon-doubling check tests these."""
        model = self.resolved_model
        return tuple(m for m in model.metrics if model.kind(m) == "level")

    @property
    def doubling_sample(self) -> int:
        """Replications per configuration (0 .. n-1) also run at twice the horizon for the
        steady-state check: the file's ``horizon_doubling``, or under ``auto``
        ``DOUBLING_SAMPLE`` when the model declares no series (one that does is checked by the
        trend of its series when the file sets ``series_interval``) and some metric is a level;
        else 0. Never more than the replications."""
        if isinstance(self.horizon_doubling, int):
            return min(self.horizon_doubling, self.replications)
        if self.resolved_model.series or not self.level_metrics:
            return 0
        return min(DOUBLING_SAMPLE, self.replications)

    @property
    def max_replications(self) -> int:
        """The most replications any configuration may get (``precision.max_replications`` or
        ``replications``; with a search, ``search.max_replications``)."""
        if self._search is not None:
            return self._search.max_replications
        return self.precision.max_replications if self.precision is not None else self.replications

    @property
    def block_size(self) -> int:
        """Replications per partition: the file's ``replications_per_partition``, or under
        ``auto`` 1 while the partitions stay within Dagster's recommended 100,000 per asset,
        else the smallest block that keeps them there (experiments/scale.py)."""
        if isinstance(self.replications_per_partition, int):
            return self.replications_per_partition
        return scale.auto_block(self._planned_configurations(), self.max_replications)

    def _planned_configurations(self) -> int:
        if self._search is None:
            return max(1, len(self._configurations))
        if self._search.threshold is not None:  # a breaking point: its procedure's bound
            return self._search.threshold.max_points
        # The most configurations the search may propose: its budget's, its space's size.
        space = self._search
        bounds = [space.budget_configurations, space.size,
                  -(-space.budget_simulations // space.replications)
                  if space.budget_simulations else None]
        return min([b for b in bounds if b] or [MAX_SEARCH_CONFIGURATIONS])

    def partitions_warning(self) -> str | None:
        """A warning when the file's ``replications_per_partition`` leaves more partitions than
        Dagster recommends (``auto`` never does)."""
        if not isinstance(self.replications_per_partition, int):
            return None
        warning = scale.partitions_warning(self._planned_configurations(),
                                           self.max_replications, self.block_size)
        return f"{self.name}: {warning}" if warning else None

    def replication_keys(self) -> list[str]:
        """``"0"`` .. ``"replications-1"``."""
        return [str(r) for r in range(self.replications)]
