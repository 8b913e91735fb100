"""Numbers with their units, as a reader writes them: ``$1,075 ± 18 a day``, ``56.9 ± 0.5 min``,
``16.5 ± 0.9 %``, and differences ``+$56 ± 6 a day``, ``81 ± 0.3 points``.

A unit is the file's or the model's string (``responses.<name>.unit``, ``Model.units``):

- ``fraction`` is shown as a percentage, and a difference of two fractions in percentage points;
  ``%`` (a value already in percent) likewise;
- a currency (``$``, ``€``, ``£``, ``¥``) is written before the number (``$ per time unit``:
  ``$12 per time unit``);
- ``X/day`` (or ``/h``, ``/s``, ``/week`` ...) is ``X`` per that time: ``$/day`` gives
  ``$56 a day``, ``requests/s`` gives ``20 requests a second``;
- anything else follows the number (``min``, ``parties``).

Numbers are rounded to the precision their half-width supports (``format_estimate``): the
half-width to one significant digit (two when it starts with 1 or 2), the value to the same
decimal place; thousands are grouped (``1,075``).

A parameter's value has no half-width: it is written with its unit to 3 significant digits
(``format_setting``), more when values shown together would otherwise read the same
(``setting_digits``): a search's proposals are rounded to 6 digits internally, and ``timeout
1.14501`` reads ``timeout 1.15 s``.
"""

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

CURRENCIES = frozenset({"$", "€", "£", "¥"})  # units written before the number
# The time after a "/" in a unit, as words after the number.
_PER = {"s": "a second", "sec": "a second", "second": "a second", "ms": "a millisecond",
        "min": "a minute", "minute": "a minute", "h": "an hour", "hr": "an hour",
        "hour": "an hour", "d": "a day", "day": "a day", "week": "a week", "wk": "a week",
        "month": "a month", "year": "a year", "yr": "a year"}
# Units of time: a difference in one is "longer"/"shorter" rather than "higher"/"lower".
TIME_UNITS = frozenset({"ms", "s", "sec", "second", "seconds", "min", "minute", "minutes", "h",
                        "hr", "hour", "hours", "d", "day", "days", "week", "weeks",
                        "time unit", "time units"})


def format_estimate(value: float, half_width: float) -> tuple[str, str]:
    """``(value, half_width)`` as strings rounded to the precision the half-width supports."""
    if math.isnan(value):
        return "n/a", "n/a"
    if not (half_width > 0 and math.isfinite(half_width)):
        return f"{value:.4g}", ("0" if half_width == 0 else "n/a")
    exponent = math.floor(math.log10(half_width))
    leading = half_width / 10**exponent
    digits = 2 if leading < 3 else 1
    decimals = max(0, digits - 1 - exponent)
    if round(half_width, decimals) >= 10 ** (exponent + 1):
        # Rounding went up a decade (0.96 -> 1): the new leading digit is 1, so keep two digits.
        decimals = max(0, 1 - (exponent + 1))
    return f"{round(value, decimals):.{decimals}f}", f"{round(half_width, decimals):.{decimals}f}"


@dataclass(frozen=True)
class Unit:
    """How a unit is written around a number."""

    before: str = ""     # a currency
    after: str = ""      # " min", " %", " parties"
    per: str = ""        # " a day"
    scale: float = 1.0   # 100 for a fraction shown as a percentage
    percent: bool = False  # differences are in percentage points
    time: bool = False   # a duration: differences are "longer"/"shorter"


def parse_unit(unit: str | None) -> Unit:
    """The parts of ``unit`` (see the module docstring)."""
    if not unit:
        return Unit()
    unit = unit.strip()
    if unit == "fraction":
        return Unit(after=" %", scale=100.0, percent=True)
    if unit == "%":
        return Unit(after=" %", percent=True)
    per = ""
    match = re.fullmatch(r"(.+?)\s*(?:/|\bper\s+)\s*([A-Za-z]+)", unit)
    if match and match.group(2).lower() in _PER:
        unit, per = match.group(1).strip(), " " + _PER[match.group(2).lower()]
    if unit in CURRENCIES:
        return Unit(before=unit, per=per)
    if unit[:1] in CURRENCIES and unit[1:2] == " ":  # "$ per time unit": $12 per time unit
        return Unit(before=unit[0], after=" " + unit[2:].strip(), per=per)
    return Unit(after=f" {unit}" if unit else "", per=per, time=not per and unit in TIME_UNITS)


def unit_suffix(unit: str | None) -> str:
    """`` min`` for "min", `` %`` for a fraction shown as a percentage, "" without a unit."""
    if not unit:
        return ""
    return " %" if unit == "fraction" else f" {unit}"


def group_thousands(text: str) -> str:
    """``1075.5`` -> ``1,075.5`` (a leading sign kept; "n/a" and short numbers unchanged)."""
    match = re.fullmatch(r"([+-]?)(\d+)(\.\d+)?", text)
    if not match or len(match.group(2)) < 4:
        return text
    sign, whole, fraction = match.group(1), match.group(2), match.group(3) or ""
    return f"{sign}{int(whole):,}{fraction}"


def _write(value_text: str, half_text: str | None, parts: Unit, signed: bool = False) -> str:
    sign = ""
    if value_text.startswith("-"):
        sign, value_text = "-", value_text[1:]
    elif signed and value_text not in ("n/a",) and float(value_text) != 0:
        sign = "+"
    number = group_thousands(value_text)
    spread = "" if half_text in (None, "0", "n/a") else f" ± {group_thousands(half_text)}"
    return f"{sign}{parts.before}{number}{spread}{parts.after}{parts.per}"


def format_quantity(value: float, half_width: float, unit: str | None = None) -> str:
    """``value ± half_width`` with its unit, rounded to what the half-width supports:
    ``$1,075 ± 18 a day``, ``17 ± 1 %`` (a fraction), ``56.9 ± 0.5 min``; no ± when the
    half-width is 0 or unknown."""
    parts = parse_unit(unit)
    text, half = format_estimate(value * parts.scale, half_width * parts.scale)
    return _write(text, half, parts)


def format_value(value: float, half_width: float, unit: str | None = None,
                 with_unit: bool = True) -> str:
    """``value`` with its unit, rounded to the precision ``half_width`` supports (no ±);
    ``with_unit=False`` leaves out what follows the number (not a currency before it)."""
    parts = parse_unit(unit)
    text, _ = format_estimate(value * parts.scale, half_width * parts.scale)
    if not with_unit:
        parts = Unit(before=parts.before)
    return _write(text, None, parts)


def format_difference(difference: float, half_width: float, unit: str | None = None, *,
                      signed: bool = False) -> str:
    """A difference of two means with its unit: a fraction's in percentage points
    (``4.3 ± 1.3 points``), a currency's ``$56 ± 6 a day``; the magnitude unless ``signed``
    (``+$56 ± 6 a day``)."""
    parts = parse_unit(unit)
    if parts.percent:
        parts = Unit(after=" points" if abs(difference * parts.scale) != 1 else " point",
                     scale=parts.scale)
    value = difference if signed else abs(difference)
    text, half = format_estimate(value * parts.scale, half_width * parts.scale)
    return _write(text, half, parts, signed=signed)


SETTING_DIGITS = 3  # significant digits of a parameter's value, unless more are needed
_MAX_SETTING_DIGITS = 12


def _significant(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, without an exponent for everyday magnitudes
    and without trailing zeros; the whole part is never rounded away (1234.5 -> 1235)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if abs(value) >= 1e15 or abs(value) < 1e-4:
        return f"{value:.{digits}g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{round(value, decimals):.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def setting_digits(values: Iterable[object], minimum: int = SETTING_DIGITS) -> int:
    """The fewest significant digits (at least ``minimum``) at which the distinct ``values``
    still read distinct."""
    distinct = {float(v) for v in values
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
    for digits in range(minimum, _MAX_SETTING_DIGITS + 1):
        if len({_significant(v, digits) for v in distinct}) == len(distinct):
            return digits
    return _MAX_SETTING_DIGITS


def format_setting(value: object, unit: str | None = None,
                   digits: int = SETTING_DIGITS) -> str:
    """A parameter's value as a person writes it, with its unit: ``15 min``, ``1.15 s``,
    ``0.3 parties a minute``, ``$25``; a whole number as it is (``8``); ``not set`` for an
    absent one (None); anything else (a string) as it is."""
    if value is None:
        return "not set"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    parts = parse_unit(unit)
    scaled = value * parts.scale
    if isinstance(value, int) and parts.scale == 1.0:
        text = str(value)
    else:
        text = _significant(float(scaled), digits)
    if text == "1" and not parts.percent:  # "1 time unit", "1 party a minute"
        parts = Unit(before=parts.before, after=_singular(parts.after), per=parts.per)
    return _write(group_thousands(text), None, parts)


def _singular(after: str) -> str:
    """`` time units`` -> `` time unit``, `` parties`` -> `` party``; anything else unchanged."""
    head, _, word = after.rpartition(" ")
    if not word:
        return after
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and len(word) > 3 and not word.endswith("ss"):
        word = word[:-1]
    return f"{head} {word}"


def change_words(unit: str | None, increase: bool) -> str:
    """The word for a change of a quantity in ``unit``: longer/shorter for durations, else
    higher/lower."""
    if parse_unit(unit).time:
        return "longer" if increase else "shorter"
    return "higher" if increase else "lower"
