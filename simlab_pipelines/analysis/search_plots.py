"""Pictures of a search, drawn as SVG text like ``svg.py``'s interval charts (no matplotlib):

- ``convergence_chart``: every evaluated configuration's first-stage objective mean by round
  (coloured by its constraint status) and the best feasible mean so far as a step line;
- ``configurations_chart``: the evaluated configurations over two factors (by default the two
  that matter most for the objective, ``important_factors``), feasible / infeasible / undecided
  marked, the recommendation ringed;
- ``threshold_chart``: a breaking-point search's metric against the factor, each value's mean
  with its decision bounds, the limit, and the breaking point's interval as a band.

Each returns UTF-8 SVG bytes (``plots.img_tag``/``plots.data_uri`` embed them).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
from scipy import stats

from simlab_pipelines.analysis.constraints import FEASIBLE, INFEASIBLE, UNDECIDED
from simlab_pipelines.analysis.svg import nice_ticks
from simlab_pipelines.analysis.threshold import BEYOND, UNCLEAR, WITHIN, BreakingPoint, Point

_FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"
_WIDTH, _HEIGHT = 680.0, 400.0
_LEFT, _RIGHT, _TOP, _BOTTOM = 70.0, 24.0, 52.0, 50.0
STATUS_COLOURS = {FEASIBLE: "#1a7f37", INFEASIBLE: "#cf222e", UNDECIDED: "#bf8700",
                  WITHIN: "#1a7f37", BEYOND: "#cf222e", UNCLEAR: "#bf8700"}
_LINE, _GREY, _BAND = "#1f6fb4", "#8c959f", "#ddf4ff"


def _label(value: float, step: float) -> str:
    if not math.isfinite(value):
        return ""
    if step <= 0:
        return f"{value:,.0f}"
    exponent = math.floor(math.log10(step) + 1e-9)
    # 0.25 needs one more decimal than 0.2; 250 none more than 200
    decimals = max(0, -exponent + (1 if round(step / 10 ** exponent, 6) == 2.5 else 0))
    return f"{value:,.{min(decimals, 12)}f}"


@dataclass
class _Frame:
    """The plotting area and the mapping of data to it."""

    x_low: float
    x_high: float
    y_low: float
    y_high: float
    x_names: Sequence[str] | None = None  # categorical x: tick labels at 0, 1, ...
    y_names: Sequence[str] | None = None

    def x(self, value: float) -> float:
        return _LEFT + (value - self.x_low) / (self.x_high - self.x_low) * (
            _WIDTH - _LEFT - _RIGHT)

    def y(self, value: float) -> float:
        return _HEIGHT - _BOTTOM - (value - self.y_low) / (self.y_high - self.y_low) * (
            _HEIGHT - _TOP - _BOTTOM)


def _extent(values: Sequence[float], pad: float = 0.06) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if high - low <= 1e-12 * max(abs(low), abs(high), 1.0):
        spread = abs(low) * 0.1 or 1.0
        return low - spread, high + spread
    margin = (high - low) * pad
    return low - margin, high + margin


def _open(title: str, legend: Sequence[tuple[str, str, str]] = ()) -> list[str]:
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{_WIDTH:.0f}' "
           f"height='{_HEIGHT:.0f}' viewBox='0 0 {_WIDTH:.0f} {_HEIGHT:.0f}' {_FONT} "
           "font-size='11'>", "<rect width='100%' height='100%' fill='white'/>",
           f"<text x='{_WIDTH / 2:.0f}' y='18' text-anchor='middle' font-size='13' "
           f"font-weight='bold'>{escape(title)}</text>"]
    cursor = _LEFT
    for label, colour, shape in legend:
        out.append(_marker(cursor + 5, 34, colour, shape)
                   + f"<text x='{cursor + 13:.1f}' y='38'>{escape(label)}</text>")
        cursor += 13 + len(label) * 6.6 + 18
    return out


def _marker(x: float, y: float, colour: str, shape: str, size: float = 4.0) -> str:
    if shape == "cross":
        return (f"<path d='M{x - size:.1f} {y - size:.1f}L{x + size:.1f} {y + size:.1f}"
                f"M{x - size:.1f} {y + size:.1f}L{x + size:.1f} {y - size:.1f}' "
                f"stroke='{colour}' stroke-width='2'/>")
    if shape == "square":
        return (f"<rect x='{x - size:.1f}' y='{y - size:.1f}' width='{2 * size:.1f}' "
                f"height='{2 * size:.1f}' fill='{colour}'/>")
    if shape == "line":
        return (f"<line x1='{x - 6:.1f}' y1='{y:.1f}' x2='{x + 6:.1f}' y2='{y:.1f}' "
                f"stroke='{colour}' stroke-width='2'/>")
    return f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{size:.1f}' fill='{colour}'/>"


_SHAPES = {FEASIBLE: "circle", INFEASIBLE: "cross", UNDECIDED: "square", WITHIN: "circle",
           BEYOND: "cross", UNCLEAR: "square"}


def _axes(frame: _Frame, x_title: str, y_title: str) -> list[str]:
    top, bottom = _TOP, _HEIGHT - _BOTTOM
    left, right = _LEFT, _WIDTH - _RIGHT
    out = []
    if frame.x_names is not None:
        xs = [(float(i), name) for i, name in enumerate(frame.x_names)]
    else:
        ticks = nice_ticks(frame.x_low, frame.x_high)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        xs = [(t, _label(t, step)) for t in ticks]
    for value, text in xs:
        px = frame.x(value)
        out.append(f"<line x1='{px:.1f}' y1='{top:.1f}' x2='{px:.1f}' y2='{bottom:.1f}' "
                   f"stroke='#eaeef2'/><text x='{px:.1f}' y='{bottom + 15:.1f}' "
                   f"text-anchor='middle'>{escape(text)}</text>")
    if frame.y_names is not None:
        ys = [(float(i), name) for i, name in enumerate(frame.y_names)]
    else:
        ticks = nice_ticks(frame.y_low, frame.y_high)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        ys = [(t, _label(t, step)) for t in ticks]
    for value, text in ys:
        py = frame.y(value)
        out.append(f"<line x1='{left:.1f}' y1='{py:.1f}' x2='{right:.1f}' y2='{py:.1f}' "
                   f"stroke='#eaeef2'/><text x='{left - 6:.1f}' y='{py + 4:.1f}' "
                   f"text-anchor='end'>{escape(text)}</text>")
    out.append(f"<rect x='{left:.1f}' y='{top:.1f}' width='{right - left:.1f}' "
               f"height='{bottom - top:.1f}' fill='none' stroke='#888'/>")
    out.append(f"<text x='{(left + right) / 2:.1f}' y='{_HEIGHT - 12:.1f}' "
               f"text-anchor='middle'>{escape(x_title)}</text>")
    out.append(f"<text x='14' y='{(top + bottom) / 2:.1f}' text-anchor='middle' "
               f"transform='rotate(-90 14 {(top + bottom) / 2:.1f})'>{escape(y_title)}</text>")
    return out


def _title(name: str, unit: str | None) -> str:
    name = name.replace("_", " ")
    return f"{name} ({unit})" if unit else name


def convergence_chart(points: Sequence[tuple[int, float, str]], *, metric: str,
                      unit: str | None = None, minimize: bool = True,
                      title: str | None = None) -> bytes:
    """``points``: (round, first-stage objective mean, constraint status) of every evaluated
    configuration. Each drawn at its round, in its status's colour and shape; the step line is
    the best mean among the feasible ones so far (where there is one)."""
    sign = 1.0 if minimize else -1.0
    rounds = sorted({int(r) for r, _, _ in points}) or [0]
    best, best_by_round = math.inf, {}
    for r in rounds:
        for rr, value, status in points:
            if rr == r and status == FEASIBLE and math.isfinite(value):
                best = min(best, sign * value)
        best_by_round[r] = sign * best if math.isfinite(best) else math.nan
    # up to 20 rounds, one tick each (numeric ticks could fall between rounds)
    names = [str(r) for r in range(rounds[-1] + 1)] if rounds[0] >= 0 and rounds[-1] < 20 \
        else None
    frame = _Frame(*_extent([rounds[0] - 0.5, rounds[-1] + 0.5], 0.0),
                   *_extent([v for _, v, _ in points]), x_names=names)
    if names is not None:
        frame.x_low, frame.x_high = -0.5, len(names) - 0.5
    legend = [("best feasible so far", _LINE, "line")]
    legend += [(s, STATUS_COLOURS[s], _SHAPES[s]) for s in (FEASIBLE, UNDECIDED, INFEASIBLE)
               if any(st == s for _, _, st in points)]
    out = _open(title or f"Search: best feasible {metric.replace('_', ' ')} by round", legend)
    out += _axes(frame, "round", _title(metric, unit))
    for r, value, status in points:
        if math.isfinite(value):
            out.append(_marker(frame.x(r), frame.y(value), STATUS_COLOURS.get(status, _GREY),
                               _SHAPES.get(status, "circle"), 3.5))
    path, previous = [], None
    for r in rounds:
        value = best_by_round[r]
        if not math.isfinite(value):
            continue
        x0, x1, y = frame.x(r - 0.5), frame.x(r + 0.5), frame.y(value)
        path.append(f"{'M' if previous is None else 'L'}{x0:.1f} {y:.1f}H{x1:.1f}")
        previous = value
    if path:
        out.append(f"<path d='{''.join(path)}' stroke='{_LINE}' stroke-width='2' fill='none'/>")
    out.append("</svg>")
    return "".join(out).encode("utf-8")


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def important_factors(configurations: Mapping[str, Mapping[str, Any]],
                      objective: Mapping[str, float], factors: Sequence[str]) -> list[str]:
    """``factors`` ordered by how much the objective moves with them: the absolute Spearman
    correlation for numbers, the correlation ratio (the share of the objective's spread between
    the factor's values, square-rooted) for other values; factors that never vary last."""
    keys = [k for k in configurations if math.isfinite(objective.get(k, math.nan))]
    y = np.array([objective[k] for k in keys])

    def strength(name: str) -> float:
        values = [configurations[k].get(name) for k in keys]
        if len(keys) < 3 or len({repr(v) for v in values}) < 2 or np.ptp(y) == 0:
            return -1.0
        if _numeric(values):
            rho = stats.spearmanr(np.asarray(values, dtype=float), y).statistic
            return abs(float(rho)) if math.isfinite(rho) else 0.0
        groups: dict[str, list[float]] = {}
        for v, target in zip(values, y, strict=True):
            groups.setdefault(repr(v), []).append(float(target))
        between = sum(len(g) * (np.mean(g) - y.mean()) ** 2 for g in groups.values())
        return math.sqrt(between / float(((y - y.mean()) ** 2).sum()))

    return sorted(factors, key=lambda name: (-strength(name), list(factors).index(name)))


def _axis_values(values: Sequence[Any]) -> tuple[list[float], Sequence[str] | None]:
    """Positions on an axis: numbers as they are, other values by their order of appearance."""
    if _numeric(values):
        return [float(v) for v in values], None
    names = list(dict.fromkeys(str(v) for v in values))
    return [float(names.index(str(v))) for v in values], names


def configurations_chart(configurations: Mapping[str, Mapping[str, Any]],
                         statuses: Mapping[str, str], *, x_factor: str,
                         y_factor: str | None = None, recommended: str | None = None,
                         title: str | None = None) -> bytes:
    """The evaluated configurations over ``x_factor`` and ``y_factor`` (one factor: a strip),
    marked by their status (feasible / infeasible / undecided), ``recommended`` ringed."""
    keys = list(configurations)
    xs, x_names = _axis_values([configurations[k].get(x_factor) for k in keys])
    if y_factor is not None:
        ys, y_names = _axis_values([configurations[k].get(y_factor) for k in keys])
    else:
        ys, y_names = [0.0] * len(keys), [""]
    x_low, x_high = _extent(xs) if x_names is None else (-0.5, len(x_names) - 0.5)
    y_low, y_high = _extent(ys) if y_names is None else (-0.5, len(y_names) - 0.5)
    frame = _Frame(x_low, x_high, y_low, y_high, x_names, y_names)
    present = {statuses.get(k, FEASIBLE) for k in keys}
    legend = [(s, STATUS_COLOURS[s], _SHAPES[s]) for s in (FEASIBLE, UNDECIDED, INFEASIBLE)
              if s in present]
    if recommended in configurations:
        legend.append(("recommended", "#1f6fb4", "circle"))
    heading = title or ("Evaluated configurations" + (f" over {x_factor} and {y_factor}"
                                                      if y_factor else f" over {x_factor}"))
    out = _open(heading, legend)
    out += _axes(frame, x_factor.replace("_", " "), (y_factor or "").replace("_", " "))
    for key, x, y in zip(keys, xs, ys, strict=True):
        status = statuses.get(key, FEASIBLE)
        px, py = frame.x(x), frame.y(y)
        out.append(f"<g><title>{escape(key)}: {status}</title>"
                   + _marker(px, py, STATUS_COLOURS.get(status, _GREY),
                             _SHAPES.get(status, "circle")) + "</g>")
    if recommended in configurations:
        index = keys.index(recommended)
        out.append(f"<circle cx='{frame.x(xs[index]):.1f}' cy='{frame.y(ys[index]):.1f}' r='9' "
                   "fill='none' stroke='#1f6fb4' stroke-width='2'/>")
    out.append("</svg>")
    return "".join(out).encode("utf-8")


def threshold_chart(points: Sequence[Point], result: BreakingPoint | None, *, factor: str,
                    metric: str, limit: float, unit: str | None = None,
                    factor_unit: str | None = None, title: str | None = None) -> bytes:
    """The metric against the factor: each evaluated value's mean with its decision bounds (the
    one-sided bounds the search judged it by), coloured within / beyond / unclear; the limit as
    a dashed line; the breaking point's interval as a band and its estimate as a line.

    The vertical axis keeps the limit in view: it reaches at most as far beyond the limit as the
    lowest value is below it (times 1.5); a value further out (a metric that explodes near
    saturation) is drawn at the edge as a triangle, its value in its tooltip."""
    xs = [float(p.x) for p in points]
    spans = [v for p in points for v in (p.mean, p.lower, p.upper) if math.isfinite(v)]
    x_ends = list(xs)
    if result is not None:
        x_ends += [v for v in (result.ci_low, result.ci_high, result.low, result.high)
                   if v is not None]
    values = [*spans, limit]
    below, above = limit - min(values), max(values) - limit
    # how far from the limit the axis reaches: 1.5 times the side that stays in view
    reach = 1.5 * (below if below > 0 else above) or abs(limit) or 1.0
    frame = _Frame(*_extent(x_ends, 0.03), *_extent([max(min(values), limit - reach),
                                                     min(max(values), limit + reach)]))

    def clip(value: float) -> float:
        return min(max(value, frame.y_low), frame.y_high)

    legend = [(s, STATUS_COLOURS[s], _SHAPES[s]) for s in (WITHIN, UNCLEAR, BEYOND)
              if any(p.status == s for p in points)]
    legend.append(("limit", "#cf222e", "line"))
    if result is not None and (result.ci_low is not None or result.ci_high is not None):
        legend.append((f"breaking point ({result.confidence * 100:g} %)", _LINE, "line"))
    out = _open(title or f"{metric.replace('_', ' ')} against {factor.replace('_', ' ')}",
                legend)
    top, bottom = _TOP, _HEIGHT - _BOTTOM
    if result is not None and (result.ci_low is not None or result.ci_high is not None):
        a = frame.x(result.ci_low) if result.ci_low is not None else _LEFT
        b = frame.x(result.ci_high) if result.ci_high is not None else _WIDTH - _RIGHT
        out.append(f"<rect x='{a:.1f}' y='{top:.1f}' width='{max(b - a, 1.5):.1f}' "
                   f"height='{bottom - top:.1f}' fill='{_BAND}'/>")
    out += _axes(frame, _title(factor, factor_unit), _title(metric, unit))
    ly = frame.y(limit)
    out.append(f"<line x1='{_LEFT:.1f}' y1='{ly:.1f}' x2='{_WIDTH - _RIGHT:.1f}' y2='{ly:.1f}' "
               "stroke='#cf222e' stroke-dasharray='6 4' stroke-width='1.5'/>")
    if result is not None and result.estimate is not None:
        ex = frame.x(float(result.estimate))
        out.append(f"<line x1='{ex:.1f}' y1='{top:.1f}' x2='{ex:.1f}' y2='{bottom:.1f}' "
                   f"stroke='{_LINE}' stroke-width='1.5'/>")
    for p in points:
        if not math.isfinite(p.mean):
            continue
        px, colour = frame.x(float(p.x)), STATUS_COLOURS.get(p.status, _GREY)
        if math.isfinite(p.lower) and math.isfinite(p.upper):
            out.append(f"<line x1='{px:.1f}' y1='{frame.y(clip(p.lower)):.1f}' x2='{px:.1f}' "
                       f"y2='{frame.y(clip(p.upper)):.1f}' stroke='{colour}' "
                       "stroke-width='1.5'/>")
        outside = clip(p.mean) != p.mean
        py = frame.y(clip(p.mean))
        tip = f"{factor} {p.x:g}: {p.status}, {p.n} replications, mean {p.mean:.4g}"
        if outside:  # a triangle at the edge, pointing the way the value lies
            d = -6 if p.mean > frame.y_high else 6
            mark = (f"<path d='M{px - 5:.1f} {py - d / 2:.1f}L{px + 5:.1f} {py - d / 2:.1f}"
                    f"L{px:.1f} {py + d / 2:.1f}Z' fill='{colour}'/>")
        else:
            mark = _marker(px, py, colour, _SHAPES.get(p.status, "circle"))
        out.append(f"<g><title>{escape(tip)}</title>{mark}</g>")
    out.append("</svg>")
    return "".join(out).encode("utf-8")


__all__ = ["STATUS_COLOURS", "configurations_chart", "convergence_chart", "important_factors",
           "threshold_chart"]
