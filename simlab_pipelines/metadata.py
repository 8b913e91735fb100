"""How results read in the Dagster UI: tables with a schema, numbers rounded to meaningful digits.

The UI renders ``MetadataValue.table`` as a real table (sortable columns, types, a schema tab),
where a markdown table is a block of text behind a link; and it shows a float's full ``repr``, so
numbers are rounded here to the digits that mean something (the exact values are in Parquet and
DuckDB).
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl

# Significant digits in the UI: a 95% interval's half-width is rarely known better than 1 in 1000.
DIGITS = 4


def rounded(value: Any, digits: int = DIGITS) -> Any:
    """``value`` with floats to ``digits`` significant digits; NaN and infinities as None
    (the UI's JSON has no NaN); anything else unchanged."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{digits}g}")
    return value


def _column_type(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype == pl.Boolean:
        return "bool"
    return "string"


def table(frame: pl.DataFrame, columns: Sequence[str],
          descriptions: Mapping[str, str] | None = None) -> dg.TableMetadataValue:
    """``frame``'s ``columns`` as a UI table (floats rounded; nested values as text)."""
    descriptions = descriptions or {}
    schema = dg.TableSchema(columns=[
        dg.TableColumn(c, _column_type(frame.schema[c]), description=descriptions.get(c))
        for c in columns])
    records = []
    for row in frame.select(columns).iter_rows(named=True):
        records.append(dg.TableRecord({
            k: rounded(v) if v is None or isinstance(v, int | float | bool | str) else str(v)
            for k, v in row.items()}))
    return dg.MetadataValue.table(records=records, schema=schema)


def records_table(rows: Sequence[Mapping[str, Any]],
                  descriptions: Mapping[str, str] | None = None) -> dg.TableMetadataValue:
    """A UI table of plain rows (dicts with the same keys), column types from the values."""
    if not rows:
        return dg.MetadataValue.table(records=[], schema=dg.TableSchema(columns=[]))
    return table(pl.DataFrame(rows, infer_schema_length=None), list(rows[0]), descriptions)
