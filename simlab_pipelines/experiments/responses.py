"""Responses: named expressions over a replication's metrics and its configuration's parameters.

An experiment file may declare, e.g.::

    responses:
      profit_per_day: "25 * parties_served - 120 * waiters - 40 * tables"
      late_share: {expression: "fraction_wait_over", unit: fraction, better: lower}

Each response is evaluated once per replication, so it gets confidence intervals, paired
comparisons and selection like any metric; the summary stores it in ``observations`` beside the
metrics. It may be the objective's or the precision's metric.

The expression language is a small whitelist over Python's syntax, parsed with ``ast`` and never
executed: numbers, names (the model's metrics and parameters), ``+ - * / **``, unary ``-``/``+``,
comparisons (``< <= > >= == !=``, true is 1), ``and``/``or``/``not``, ``a if condition else b``
and the functions ``min``, ``max``, ``abs``, ``sqrt``, ``log``, ``exp``. Everything else (attribute
access, subscripts, lambdas, other calls, strings, ...) is rejected at load, naming the construct.
It is compiled to a polars expression for the replications (``add_responses``), and interpreted
over floats for the load-time probe (``check_responses``), which evaluates every configuration with
every metric set to 1: a division by zero, a log of 0 or an overflow there rejects the file. A
value that is not finite in a replication (a metric that happened to be 0 as a divisor) is NaN.
"""

import ast
import math
import operator
import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from simlab_pipelines.experiments.errors import SpecErrors
from simlab_pipelines.experiments.models import RESERVED_NAMES

RESPONSE_NAME = r"^[a-z][a-z0-9_]*$"
MAX_EXPRESSION = 2_000  # characters: a formula, not a program
MAX_NODES = 500


class ResponseSpec(BaseModel):
    """A response with its unit and direction (the short form is the expression alone)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    expression: str = Field(min_length=1, max_length=MAX_EXPRESSION)
    unit: str | None = Field(default=None, max_length=40)
    better: Literal["lower", "higher"] | None = None
    # What it is, in the reader's words ("parties waiting over {wait_threshold} min for a
    # table"): the answer and the report name the response by it. ``{parameter}`` is replaced
    # by the parameter's value where every configuration has the same one.
    description: str | None = Field(default=None, min_length=1, max_length=200)


class ExpressionError(ValueError):
    """An expression that is not in the whitelist, names something unknown or cannot be evaluated."""


_BINARY: dict[type, tuple[Callable[[Any, Any], Any], Callable[[float, float], float]]] = {
    ast.Add: (operator.add, operator.add),
    ast.Sub: (operator.sub, operator.sub),
    ast.Mult: (operator.mul, operator.mul),
    ast.Div: (operator.truediv, operator.truediv),
    ast.Pow: (lambda a, b: a.pow(b), operator.pow),
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_FUNCTIONS: dict[str, tuple[int | None, Callable[..., Any], Callable[..., float]]] = {
    # name: (number of arguments (None: 2 or more), polars, float)
    "min": (None, lambda *a: pl.min_horizontal(*a), min),
    "max": (None, lambda *a: pl.max_horizontal(*a), max),
    "abs": (1, lambda a: a.abs(), abs),
    "sqrt": (1, lambda a: a.sqrt(), math.sqrt),
    "log": (1, lambda a: a.log(), math.log),
    "exp": (1, lambda a: a.exp(), math.exp),
}
# Nodes allowed as such (their parts are checked on their own).
_STRUCTURE = (ast.BoolOp, ast.IfExp, ast.expr_context, ast.operator, ast.unaryop, ast.cmpop,
              ast.boolop)
_NOT_ALLOWED = {
    ast.Attribute: "attribute access", ast.Subscript: "subscripts", ast.Lambda: "lambda",
    ast.ListComp: "comprehensions", ast.GeneratorExp: "comprehensions",
    ast.DictComp: "comprehensions", ast.SetComp: "comprehensions", ast.NamedExpr: "assignment",
    ast.Starred: "starred arguments", ast.JoinedStr: "strings", ast.List: "lists",
    ast.Tuple: "tuples", ast.Dict: "dicts", ast.Set: "sets", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield",
}


@dataclass(frozen=True)
class Response:
    """A parsed response: its name, expression tree, the names it reads, unit and direction."""

    name: str
    expression: str
    tree: ast.expr
    names: tuple[str, ...]
    unit: str | None = None
    better: str | None = None
    description: str | None = None

    def polars(self) -> pl.Expr:
        """The response as a polars expression over columns named after metrics and parameters;
        values that are not finite become NaN."""
        value = _to_polars(self.tree).cast(pl.Float64)
        return pl.when(value.is_finite()).then(value).otherwise(float("nan")).alias(self.name)

    def evaluate(self, values: Mapping[str, float]) -> float:
        """The response over plain numbers (raises ZeroDivisionError, ValueError, OverflowError)."""
        return _to_float(self.tree, values)


def parse_response(name: str, expression: str, unit: str | None = None,
                   better: str | None = None, description: str | None = None) -> Response:
    """Parse and whitelist ``expression``; raises ExpressionError with the reason."""
    if len(expression) > MAX_EXPRESSION:
        raise ExpressionError(f"longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid expression: {exc.msg}"
                              + (f" at column {exc.offset}" if exc.offset else "")) from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ExpressionError(f"more than {MAX_NODES} terms")
    names: list[str] = []
    for node in nodes:
        _allowed(node)
        if isinstance(node, ast.Name) and node.id not in names and not _is_function(node, nodes):
            names.append(node.id)
    return Response(name, expression, tree, tuple(names), unit, better, description)


def _is_function(node: ast.Name, nodes: Iterable[ast.AST]) -> bool:
    return any(isinstance(n, ast.Call) and n.func is node for n in nodes)


def _allowed(node: ast.AST) -> None:
    """Raise ExpressionError unless ``node`` is in the whitelist."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExpressionError(f"only numbers are allowed as constants, not {node.value!r}")
        try:
            float(node.value)
        except OverflowError:
            raise ExpressionError("a number too large for a float") from None
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed "
                                  "(allowed: + - * / **)")
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
    elif isinstance(node, ast.Compare):
        if any(type(op) not in _COMPARE for op in node.ops):
            raise ExpressionError("only < <= > >= == != comparisons are allowed")
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExpressionError(f"calling {what!r} is not allowed (functions: "
                                  f"{', '.join(_FUNCTIONS)})")
        if node.keywords:
            raise ExpressionError(f"{node.func.id}() takes no keyword arguments")
        arity = _FUNCTIONS[node.func.id][0]
        count = len(node.args)
        if (arity is None and count < 2) or (arity is not None and count != arity):
            wanted = "at least 2 arguments" if arity is None else f"{arity} argument"
            raise ExpressionError(f"{node.func.id}() takes {wanted}, got {count}")
    elif isinstance(node, ast.Name):
        if not isinstance(node.ctx, ast.Load) or node.id.startswith("_"):
            raise ExpressionError(f"name {node.id!r} is not allowed")
    elif isinstance(node, _STRUCTURE):
        pass
    else:
        what = _NOT_ALLOWED.get(type(node), type(node).__name__)
        raise ExpressionError(f"{what} not allowed in an expression")


def _truth(value: pl.Expr) -> pl.Expr:
    return value != 0


def _to_polars(node: ast.expr) -> pl.Expr:
    if isinstance(node, ast.Constant):
        return pl.lit(float(node.value))
    if isinstance(node, ast.Name):
        return pl.col(node.id).cast(pl.Float64)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)][0](_to_polars(node.left), _to_polars(node.right))
    if isinstance(node, ast.UnaryOp):
        inner = _to_polars(node.operand)
        if isinstance(node.op, ast.Not):
            return (~_truth(inner)).cast(pl.Float64)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Compare):
        left, parts = _to_polars(node.left), []
        for op, right in zip(node.ops, node.comparators, strict=True):
            rhs = _to_polars(right)
            parts.append(_COMPARE[type(op)](left, rhs))
            left = rhs
        return pl.all_horizontal(parts).cast(pl.Float64)
    if isinstance(node, ast.BoolOp):
        values = [_truth(_to_polars(v)) for v in node.values]
        combined = pl.all_horizontal(values) if isinstance(node.op, ast.And) \
            else pl.any_horizontal(values)
        return combined.cast(pl.Float64)
    if isinstance(node, ast.IfExp):
        return pl.when(_truth(_to_polars(node.test))).then(_to_polars(node.body)).otherwise(
            _to_polars(node.orelse))
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id][1](*(_to_polars(a) for a in node.args))
    raise ExpressionError(f"{type(node).__name__} not allowed in an expression")


def _to_float(node: ast.expr, values: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(values[node.id])
    if isinstance(node, ast.BinOp):
        left, right = _to_float(node.left, values), _to_float(node.right, values)
        result = _BINARY[type(node.op)][1](left, right)
        if isinstance(result, complex):
            raise ValueError(f"a negative number ({left:g}) to a fractional power ({right:g})")
        return result
    if isinstance(node, ast.UnaryOp):
        inner = _to_float(node.operand, values)
        if isinstance(node.op, ast.Not):
            return float(inner == 0)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Compare):
        left, ok = _to_float(node.left, values), True
        for op, right in zip(node.ops, node.comparators, strict=True):
            rhs = _to_float(right, values)
            ok = ok and _COMPARE[type(op)](left, rhs)
            left = rhs
        return float(ok)
    if isinstance(node, ast.BoolOp):
        truths = [_to_float(v, values) != 0 for v in node.values]
        return float(all(truths) if isinstance(node.op, ast.And) else any(truths))
    if isinstance(node, ast.IfExp):
        # Only the branch taken: the other one's value is discarded on that row, even if it is
        # not finite (``x / (waiters - 2) if waiters > 2 else 0``).
        branch = node.body if _to_float(node.test, values) != 0 else node.orelse
        return _to_float(branch, values)
    if isinstance(node, ast.Call):
        return float(_FUNCTIONS[node.func.id][2](*(_to_float(a, values) for a in node.args)))
    raise ExpressionError(f"{type(node).__name__} not allowed in an expression")


def check_responses(given: Mapping[str, str | ResponseSpec], metrics: Iterable[str],
                    configurations: Mapping[str, Mapping[str, Any]],
                    parameters: Iterable[str]) -> tuple[dict[str, Response],
                                                        list[tuple[tuple[str, ...], str]]]:
    """Parse every response and probe it on every configuration (config_key -> parameters),
    with every metric at 1.

    Returns the parsed responses and the errors as ``(("responses", name), reason)``. Names must
    be new (not a metric or parameter), expressions must read only metrics and parameters.
    """
    metrics, parameters = list(metrics), list(parameters)
    parsed: dict[str, Response] = {}
    errors: list[tuple[tuple[str, ...], str]] = []
    for name, entry in given.items():
        loc = ("responses", name)
        spec = entry if isinstance(entry, ResponseSpec) else ResponseSpec(expression=entry)
        if not re.match(RESPONSE_NAME, name):
            errors.append((loc, f"response name {name!r} must match {RESPONSE_NAME}"))
            continue
        if name in RESERVED_NAMES:
            errors.append((loc, f"response name {name!r} is a column of the results' tables "
                                f"({', '.join(RESERVED_NAMES)}); choose another"))
            continue
        if name in metrics or name in parameters:
            kind = "metric" if name in metrics else "parameter"
            errors.append((loc, f"response name {name!r} is already a {kind} of the model; "
                           "choose another"))
            continue
        try:
            response = parse_response(name, spec.expression, spec.unit, spec.better,
                                      spec.description)
        except ExpressionError as exc:
            errors.append((loc, f"{spec.expression!r}: {exc}"))
            continue
        problem = _description_problem(spec.description, parameters)
        if problem:
            errors.append(((*loc, "description"), problem))
            continue
        unknown = [n for n in response.names if n not in metrics and n not in parameters]
        if unknown:
            errors.append((loc, f"{spec.expression!r}: unknown name(s) {', '.join(unknown)} "
                           f"(metrics: {', '.join(metrics)}; parameters: "
                           f"{', '.join(parameters)})"))
            continue
        reserved = [n for n in response.names if n in RESERVED_NAMES]
        if reserved:
            # evaluated beside those columns, it would read them, not the parameter
            errors.append((loc, f"{spec.expression!r}: reads {', '.join(reserved)}, a column of "
                                "the results' tables; a response cannot use a parameter so named"))
            continue
        problem = _probe(response, metrics, configurations)
        if problem:
            errors.append((loc, f"{spec.expression!r}: {problem}"))
            continue
        parsed[name] = response
    return parsed, errors


def _description_problem(description: str | None, parameters: list[str]) -> str | None:
    """Why ``description``'s placeholders cannot be filled (each must be ``{parameter}``)."""
    if description is None:
        return None
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion
                  in string.Formatter().parse(description) if name is not None]
    except ValueError as exc:
        return f"{description!r}: {exc} (write {{{{ and }}}} for literal braces)"
    for name, spec, conversion in fields:
        if name not in parameters or spec or conversion:
            return (f"{description!r}: placeholder {{{name}}} must name a parameter "
                    f"({', '.join(parameters)}), without a format")
    return None


def fill_description(description: str, fixed: Mapping[str, Any]) -> str:
    """``description`` with each ``{parameter}`` replaced by its value in ``fixed`` (the
    parameters every configuration shares), else by the parameter's name."""
    def value(name: str) -> str:
        if name not in fixed:
            return name
        given = fixed[name]
        return f"{given:g}" if isinstance(given, float) else str(given)

    return "".join(text + ("" if name is None else value(name))
                   for text, name, _, _ in string.Formatter().parse(description))


def _probe(response: Response, metrics: list[str],
           configurations: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why ``response`` cannot be evaluated for some configuration with every metric 1, or None."""
    for key, params in (configurations or {"default": {}}).items():
        values = {**dict.fromkeys(metrics, 1.0),
                  **{k: float(v) for k, v in params.items()
                     if isinstance(v, int | float) and not isinstance(v, bool)}}
        missing = [n for n in response.names if n not in values]
        if missing:
            return f"parameter(s) {', '.join(missing)} have no numeric value in configuration {key}"
        where = f"in configuration {key} (with every metric 1)"
        try:
            value = response.evaluate(values)
        except ZeroDivisionError:
            return f"division by zero {where}"
        except OverflowError:
            return f"overflows a float {where}"
        except ValueError as exc:
            return f"cannot be evaluated {where}: {exc}"
        if not math.isfinite(value):
            return f"is {value} {where}"
    return None


def add_responses(wide: pl.DataFrame, responses: Mapping[str, Response],
                  params: Mapping[str, Mapping[str, Any]]) -> pl.DataFrame:
    """``wide`` (one row per replication: config_key and metric columns) with a column per
    response; ``params`` maps config_key to the configuration's parameters."""
    if not responses or wide.is_empty():
        return wide
    needed = {n for r in responses.values() for n in r.names if n not in wide.columns}
    if needed:
        rows = [{"config_key": key, **{n: _number(p.get(n)) for n in needed}}
                for key, p in params.items()]
        table = pl.DataFrame(rows, schema={"config_key": pl.String,
                                           **dict.fromkeys(needed, pl.Float64)})
        wide = wide.join(table, on="config_key", how="left")
    return wide.with_columns(r.polars() for r in responses.values()).drop(sorted(needed))


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def resolve_responses(given: Mapping[str, str | ResponseSpec], model: Any,
                      configurations: Iterable[Any]) -> dict[str, Response]:
    """``check_responses`` for a spec's model and configurations; raises SpecErrors."""
    if not given:
        return {}
    parsed, errors = check_responses(given, model.metrics, {c.key: c.params for c in configurations},
                                     [p.name for p in model.parameters])
    if errors:
        raise SpecErrors(errors)
    return parsed


COST_RESPONSE = "cost"  # a response by this name makes the recommendation prefer the cheapest


def headline_responses(spec: Any, limit: int = 4) -> list[str]:
    """What a decision is weighed on besides the objective: the file's responses; without any,
    the precision metric and the model's means and counts that say which way is better."""
    objective = spec.objective.metric if spec.objective is not None else None
    names = [n for n in spec.responses if n != objective]
    if not names:
        better = spec.better()
        wanted = [spec.precision.metric] if spec.precision is not None else []
        wanted += [m for m in better if m not in spec.responses and not re.search(r"_p\d+$", m)]
        names = [m for m in dict.fromkeys(wanted) if m != objective]
    return names[:limit]


def descriptions(spec: Any) -> dict[str, str]:
    """What every metric and response is, in the reader's words: a response's ``description``
    (its placeholders filled), else the model's help for a metric without its trailing
    bracket (how it is measured), a parameter it names given with its value ("longer than the
    wait threshold (5)"); names with neither are left out."""
    configurations = spec.configurations_list()
    if configurations:
        first = configurations[0].params
        fixed = {k: v for k, v in first.items()
                 if all(c.params.get(k) == v for c in configurations[1:])}
    else:
        fixed = dict(spec.parameters)
    units = {p.name: p.unit for p in spec.resolved_model.parameters if p.unit}
    words = {name: _parameters_named(re.sub(r"\s*\([^()]*\)$", "", text.strip()).strip(), fixed,
                                     units)
             for name, text in spec.resolved_model.metrics.items() if text and text.strip()}
    words |= {name: fill_description(r.description, fixed)
              for name, r in spec.parsed_responses.items() if r.description}
    return {k: v for k, v in words.items() if v}


def _parameters_named(text: str, fixed: Mapping[str, Any],
                      units: Mapping[str, str] | None = None) -> str:
    """``longer than wait_threshold`` -> ``longer than the wait threshold (5 min)`` (with the
    parameter's unit, when it declares one)."""
    from simlab_pipelines.analysis.units import format_setting

    for name, value in fixed.items():
        if "_" in name and re.search(rf"\b{re.escape(name)}\b", text):
            shown = format_setting(value, (units or {}).get(name))
            text = re.sub(rf"\b{re.escape(name)}\b",
                          f"the {name.replace('_', ' ')} ({shown})", text)
    return text
