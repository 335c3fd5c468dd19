"""Builders for the metadata people read in the Dagster UI: typed tables (``dg.MetadataValue.table``) with
readable numbers, column schemas derived from polars schemas, and each asset's owners and code version."""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

COLUMN_SCHEMA = "dagster/column_schema"
SIGNIFICANT_DIGITS = 4

# Who answers for each stage's assets (the asset groups are the stages). Monitoring watches the served traffic
# and the gateway writes its log, so it belongs with serving; drift -> retraining is a sensor, not an owner.
OWNERS: dict[str, list[str]] = {
    "crawl": ["team:data"],
    "corpus": ["team:data"],
    "features": ["team:data"],
    "training": ["team:ml"],
    "release": ["team:ml"],
    "retrieval": ["team:ml"],
    "serving": ["team:serving"],
    "monitoring": ["team:serving"],
}
GPU_POOL = "gpu"  # dagster_home/dagster.yaml limits it: one GPU-heavy step at a time on the instance
_ASSETS_DIR = Path(__file__).resolve().parent


def readable(value):
    """``value`` for reading: floats to ``SIGNIFICANT_DIGITS`` significant digits (0.000123456 -> 0.0001235,
    12345.678 -> 12350.0), everything else as it is."""
    if isinstance(value, float | np.floating) and np.isfinite(value):
        return float(f"{float(value):.{SIGNIFICANT_DIGITS}g}")
    return value


def _cell(value):
    value = readable(value.item() if isinstance(value, np.generic) else value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _kind(values: Sequence) -> str:
    seen = {type(v) for v in values if v is not None}
    if seen and seen <= {bool}:
        return "bool"
    if seen and seen <= {int}:
        return "int"
    if seen and seen <= {int, float}:
        return "float"
    return "string"


def table(header: Sequence[str], rows: Iterable[Sequence], descriptions: Mapping[str, str] | None = None):
    """A typed table: one record per row (cells in ``header`` order), each column's type inferred from its
    values (int, float, bool, else string; floats rounded by :func:`readable`)."""
    cells = [[_cell(v) for v in row] for row in rows]
    for row in cells:
        if len(row) != len(header):
            raise ValueError(f"table row {row!r} has {len(row)} cells, the header {tuple(header)} {len(header)}")
    columns = [
        dg.TableColumn(name, _kind([r[i] for r in cells]), description=(descriptions or {}).get(name))
        for i, name in enumerate(header)
    ]
    # a string column may hold a number in one row ("n/a" in another): all its cells go out as strings
    strings = [i for i, c in enumerate(columns) if c.type == "string"]
    records = [
        dg.TableRecord(
            {name: (str(r[i]) if i in strings and r[i] is not None else r[i]) for i, name in enumerate(header)}
        )
        for r in cells
    ]
    return dg.MetadataValue.table(records, schema=dg.TableSchema(columns=columns))


def facts_table(facts: Mapping[str, object], header: tuple[str, str] = ("fact", "value")):
    """A two-column table of named facts (floats rounded; values of mixed types go out as text)."""
    return table(header, list(facts.items()))


def histogram_table(values: Sequence[float], bins: int = 10, lo: float = 0.0, hi: float = 1.0, title: str = "value"):
    """A histogram as a table: bin, count and a text bar."""
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins, range=(lo, hi))
    peak = max(int(counts.max()), 1) if len(counts) else 1
    rows = [(f"{edges[i]:.2f}–{edges[i + 1]:.2f}", int(c), "█" * round(30 * c / peak)) for i, c in enumerate(counts)]
    return table((title, "docs", "bar"), rows)


def funnel_table(steps: Sequence[tuple[str, int, int]]):
    """Rows of (step, count in, count out) as a funnel with the share dropped at each step."""
    rows = [(name, n_in, n_out, n_in - n_out, (n_in - n_out) / n_in if n_in else None) for name, n_in, n_out in steps]
    return table(("step", "in", "out", "dropped", "dropped_share"), rows)


def frame_table(df: pl.DataFrame, limit: int = 20, max_chars: int = 120):
    """The first ``limit`` rows of a polars frame as a typed table (long strings cut at ``max_chars``)."""
    rows = [[v[:max_chars] if isinstance(v, str) else v for v in row] for row in df.head(limit).rows()]
    return table(df.columns, rows)


# -- column schemas ------------------------------------------------------------------------------------------------
def polars_type(dtype: pl.DataType) -> str:
    """A readable name of a polars dtype: ``string``, ``int64``, ``float64``, ``bool``,
    ``timestamp[us, UTC]``, ``list<string>``, ``array<int32, 256>``, ``struct<a: int64, …>``."""
    if isinstance(dtype, pl.Datetime):
        return f"timestamp[{dtype.time_unit}{', ' + dtype.time_zone if dtype.time_zone else ''}]"
    if isinstance(dtype, pl.Array):
        return f"array<{polars_type(dtype.inner)}, {dtype.size}>"
    if isinstance(dtype, pl.List):
        return f"list<{polars_type(dtype.inner)}>"
    if isinstance(dtype, pl.Struct):
        return "struct<" + ", ".join(f"{f.name}: {polars_type(f.dtype)}" for f in dtype.fields) + ">"
    simple = {pl.String: "string", pl.Boolean: "bool", pl.Date: "date", pl.Null: "null", pl.Binary: "binary"}
    for kind, name in simple.items():
        if dtype == kind:
            return name
    return str(dtype).lower()  # Int32 -> int32, Float64 -> float64, UInt8 -> uint8, Decimal(...) -> decimal(...)


def column_schema(
    schema: Mapping[str, pl.DataType],
    descriptions: Mapping[str, str],
    not_null: Iterable[str] = (),
    unique: Iterable[str] = (),
) -> dg.TableSchema:
    """The column schema of a table from its polars schema and one description per column; a column without a
    description (or a description of no column) is a ValueError naming it."""
    missing = [c for c in schema if not (descriptions.get(c) or "").strip()]
    unknown = [c for c in descriptions if c not in schema]
    if missing or unknown:
        raise ValueError(
            "column descriptions must name every column once: "
            + "; ".join([*(f"{c}: no description" for c in missing), *(f"{c}: not a column" for c in unknown)])
        )
    not_null, unique = set(not_null), set(unique)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name,
                polars_type(dtype),
                description=descriptions[name],
                constraints=dg.TableColumnConstraints(nullable=name not in not_null, unique=name in unique),
            )
            for name, dtype in schema.items()
        ]
    )


def frame_column_schema(schema: Mapping[str, pl.DataType], declared=None) -> dg.TableSchema:
    """The column schema of the frame actually written: its columns and dtypes, with the description and
    constraints that ``declared`` (the asset's ``dagster/column_schema`` definition metadata) gives each name."""
    declared = getattr(declared, "schema", declared)  # a TableSchemaMetadataValue holds the TableSchema
    known = {c.name: c for c in (declared.columns if declared is not None else [])}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name,
                polars_type(dtype),
                description=known[name].description if name in known else None,
                constraints=known[name].constraints if name in known else None,
            )
            for name, dtype in schema.items()
        ]
    )


def attribute_docs(cls: type) -> dict[str, str]:
    """The docstrings written under a class's attributes (``x: int = 0`` then ``\"\"\"What x is.\"\"\"``),
    whitespace-normalized, by attribute name."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for stmt, after in zip(body, body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


# -- owners and code versions ----------------------------------------------------------------------------------------
def code_version(stage: str) -> str:
    """The code version of a stage's assets: a hash of the source of its package (``assets/<stage>/**.py``),
    where each stage keeps its assets beside their framework-free logic. It changes exactly when that code
    does, with nothing to bump by hand; a change elsewhere (a resource, another stage's helper) does not
    count as a new version of these assets."""
    package = _ASSETS_DIR / stage
    if not package.is_dir():
        raise ValueError(f"code_version: no stage package assets/{stage}/ (stages: {', '.join(sorted(OWNERS))})")
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def stage_facts(stage: str) -> dict:
    """``owners`` and ``code_version`` of an asset of ``stage`` (its group), as decorator keyword arguments."""
    if stage not in OWNERS:
        raise ValueError(f"stage {stage!r} has no owners (known: {', '.join(sorted(OWNERS))})")
    return {"owners": OWNERS[stage], "code_version": code_version(stage)}
