"""Interval charts drawn as SVG text: one labelled row per configuration (or pair), each with one
or more points and their confidence intervals on a shared horizontal axis.

The summary draws two such charts per metric (the report has ~50 for the restaurant): with
matplotlib each took ~75 ms of layout and rasterising, most of a summary step; written as SVG text
they take well under a millisecond, scale without blur, and keep their labels as searchable text.
The richer pictures of designed experiments (tornado, main effects, metamodel fit) stay matplotlib.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

_FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"
_CHAR = 6.6  # average width of a 11 px character, for the label margin
_ROW = 24.0
_WIDTH = 680.0


@dataclass(frozen=True)
class Mark:
    """A point with its interval: ``value`` ± ``half`` (``half`` 0 or NaN: no whiskers)."""

    value: float
    half: float
    colour: str
    offset: float = 0.0  # vertical offset inside the row, in rows (e.g. ±0.2 for a pair)


@dataclass(frozen=True)
class Row:
    label: str
    marks: Sequence[Mark]


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5 or 5 x 10^k apart) inside [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(count - 1, 1)
    exponent = math.floor(math.log10(raw))
    # The round step nearest the ideal one (on a log scale): 3 to 10 ticks, never 2.
    step = min((m * 10.0 ** exponent for m in (1, 2, 2.5, 5, 10)),
               key=lambda candidate: abs(math.log(candidate / raw)))
    digits = max(0, 3 - exponent)  # rounds k * step to the value it stands for
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    return [round(k * step, digits) + 0.0 for k in range(first, last + 1)]


def _tick_label(value: float, step: float) -> str:
    exponent = math.floor(math.log10(step) + 1e-9)
    decimals = max(0, -exponent + (1 if round(step / 10 ** exponent, 6) == 2.5 else 0))
    return f"{value:,.{min(decimals, 12)}f}"


def _extent(rows: Sequence[Row], reference: float | None) -> tuple[float, float]:
    values = [reference] if reference is not None else []
    for row in rows:
        for mark in row.marks:
            if math.isfinite(mark.value):
                half = mark.half if math.isfinite(mark.half) else 0.0
                values += [mark.value - half, mark.value + half]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if high - low <= 1e-12 * max(abs(low), abs(high), 1.0):  # one value: a window around it
        spread = abs(low) * 0.1 or 1.0
        return low - spread, high + spread
    pad = (high - low) * 0.05
    return low - pad, high + pad


def interval_chart(rows: Sequence[Row], *, title: str, x_label: str,
                   legend: Sequence[tuple[str, str]] = (), reference: float | None = None
                   ) -> bytes:
    """The chart as UTF-8 SVG: ``rows`` top to bottom, ``legend`` (label, colour) pairs under the
    title, and a red vertical line at ``reference`` (e.g. zero difference)."""
    label_width = min(max((len(r.label) for r in rows), default=4) * _CHAR + 16, 320)
    left, right = label_width, _WIDTH - 24
    top = 34 + (20 if legend else 0)
    height = top + _ROW * max(len(rows), 1) + 52
    low, high = _extent(rows, reference)

    def x(value: float) -> float:
        return left + (value - low) / (high - low) * (right - left)

    bottom = top + _ROW * len(rows)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{_WIDTH:.0f}' height='{height:.0f}' "
           f"viewBox='0 0 {_WIDTH:.0f} {height:.0f}' {_FONT} font-size='11'>",
           "<rect width='100%' height='100%' fill='white'/>",
           f"<text x='{_WIDTH / 2:.0f}' y='20' text-anchor='middle' font-size='13' "
           f"font-weight='bold'>{escape(title)}</text>"]
    cursor = left
    for label, colour in legend:
        out.append(f"<circle cx='{cursor + 5:.1f}' cy='{top - 18:.1f}' r='4' fill='{colour}'/>"
                   f"<text x='{cursor + 13:.1f}' y='{top - 14:.1f}'>{escape(label)}</text>")
        cursor += 13 + len(label) * _CHAR + 18
    ticks = nice_ticks(low, high)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    for tick in ticks:
        tx = x(tick)
        out.append(f"<line x1='{tx:.1f}' y1='{top:.1f}' x2='{tx:.1f}' y2='{bottom:.1f}' "
                   f"stroke='#e3e3e3'/><text x='{tx:.1f}' y='{bottom + 15:.1f}' "
                   f"text-anchor='middle'>{_tick_label(tick, step)}</text>")
    out.append(f"<rect x='{left:.1f}' y='{top:.1f}' width='{right - left:.1f}' "
               f"height='{bottom - top:.1f}' fill='none' stroke='#888'/>")
    if reference is not None:
        rx = x(reference)
        out.append(f"<line x1='{rx:.1f}' y1='{top:.1f}' x2='{rx:.1f}' y2='{bottom:.1f}' "
                   "stroke='#aa3333'/>")
    for i, row in enumerate(rows):
        centre = top + _ROW * (i + 0.5)
        out.append(f"<text x='{left - 8:.1f}' y='{centre + 4:.1f}' text-anchor='end'>"
                   f"{escape(row.label)}</text>")
        for mark in row.marks:
            if not math.isfinite(mark.value):
                continue
            y, cx = centre + mark.offset * _ROW, x(mark.value)
            half = mark.half if math.isfinite(mark.half) else 0.0
            if half > 0:
                a, b = x(mark.value - half), x(mark.value + half)
                out.append(f"<path d='M{a:.1f} {y:.1f}H{b:.1f}M{a:.1f} {y - 4:.1f}V{y + 4:.1f}"
                           f"M{b:.1f} {y - 4:.1f}V{y + 4:.1f}' stroke='{mark.colour}' "
                           "stroke-width='1.5' fill='none'/>")
            out.append(f"<circle cx='{cx:.1f}' cy='{y:.1f}' r='4' fill='{mark.colour}'/>")
    out.append(f"<text x='{(left + right) / 2:.1f}' y='{bottom + 38:.1f}' "
               f"text-anchor='middle'>{escape(x_label)}</text></svg>")
    return "".join(out).encode("utf-8")
