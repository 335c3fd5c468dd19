"""Table contracts: the schema, completeness, uniqueness and range rules of an asset's DataFrame,
turned into Dagster asset checks that run inside the materialization (so they see exactly the
partition just written, and a blocking failure stops everything downstream)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from crawl2serve.assets.metadata import COLUMN_SCHEMA, column_schema

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


@dataclass(frozen=True)
class Distribution:
    """A named sanity check over the whole frame: ``measure(df, facts)`` gives a value that must lie in
    bounds; ``facts`` are figures of the run that the frame alone does not hold (e.g. rows in)."""

    name: str
    description: str
    measure: Callable[[pl.DataFrame, dict], float]
    low: float | None = None
    high: float | None = None
    blocking: bool = False


@dataclass(frozen=True)
class TableContract:
    schema: dict[str, pl.DataType]
    not_null: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    distributions: tuple[Distribution, ...] = ()
    columns: dict[str, str] = field(default_factory=dict)
    """What each column holds (one description per column of ``schema``): the column schema the UI shows."""

    def column_schema(self) -> dg.TableSchema:
        """The declared column schema (``dagster/column_schema`` definition metadata): each column's type from
        ``schema``, its description from ``columns``, nullable/unique from ``not_null``/``unique``. The IO
        manager takes names and types from the frame it writes and descriptions from here."""
        return column_schema(self.schema, self.columns, self.not_null, self.unique)

    def definition_metadata(self) -> dict:
        return {COLUMN_SCHEMA: self.column_schema()}

    def check_specs(self, asset: str) -> list[dg.AssetCheckSpec]:
        specs = [
            dg.AssetCheckSpec("schema", asset=asset, blocking=True, description="Columns and dtypes as declared."),
            dg.AssetCheckSpec(
                "no_nulls", asset=asset, blocking=True, description=f"No nulls in {', '.join(self.not_null) or '-'}."
            ),
            dg.AssetCheckSpec(
                "unique_ids", asset=asset, blocking=True, description=f"Unique {', '.join(self.unique) or '-'}."
            ),
            dg.AssetCheckSpec(
                "value_ranges",
                asset=asset,
                blocking=True,
                description="; ".join(f"{c} in [{lo}, {hi}]" for c, (lo, hi) in self.ranges.items()) or "-",
            ),
        ]
        specs += [
            dg.AssetCheckSpec(d.name, asset=asset, blocking=d.blocking, description=d.description)
            for d in self.distributions
        ]
        return specs

    def evaluate(
        self,
        df: pl.DataFrame,
        asset: str,
        facts: dict | None = None,
        *,
        schema: dict[str, pl.DataType] | None = None,
        null_counts: dict[str, int] | None = None,
    ) -> list[dg.AssetCheckResult]:
        """Every check on ``df``. A table too large to hold comes as a frame of some of its columns (those the
        uniqueness, range and distribution checks read: no text) with the whole table's ``schema`` and the
        ``null_counts`` of its ``not_null`` columns, counted shard by shard."""
        schema = dict(df.schema) if schema is None else schema
        if null_counts is None:
            null_counts = {c: int(df[c].null_count()) for c in self.not_null if c in df.columns}
        return [
            _schema(schema, self.schema, asset),
            _no_nulls(null_counts, asset),
            _unique(df, self.unique, asset),
            _ranges(df, self.ranges, asset),
            *(_distribution(df, d, asset, facts or {}) for d in self.distributions),
        ]


def _result(asset: str, name: str, passed: bool, severity, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset, check_name=name, passed=bool(passed), severity=severity, metadata=metadata
    )


def _schema(actual: dict[str, pl.DataType], schema: dict[str, pl.DataType], asset: str) -> dg.AssetCheckResult:
    problems = []
    for col, dtype in schema.items():
        if col not in actual:
            problems.append(f"missing column {col}")
        elif actual[col] != dtype:
            problems.append(f"{col}: {actual[col]} != {dtype}")
    return _result(asset, "schema", not problems, ERROR, problems=dg.MetadataValue.json(problems), columns=len(actual))


def _no_nulls(counts: dict[str, int], asset: str) -> dg.AssetCheckResult:
    return _result(asset, "no_nulls", not any(counts.values()), ERROR, null_counts=dg.MetadataValue.json(counts))


def _unique(df: pl.DataFrame, cols: tuple[str, ...], asset: str) -> dg.AssetCheckResult:
    dupes = {c: int(df.height - df[c].n_unique()) for c in cols if c in df.columns}
    return _result(asset, "unique_ids", not any(dupes.values()), ERROR, duplicate_counts=dg.MetadataValue.json(dupes))


def _ranges(df: pl.DataFrame, ranges: dict, asset: str) -> dg.AssetCheckResult:
    bad = {}
    for col, (lo, hi) in ranges.items():
        if col not in df.columns or df.height == 0:
            continue
        s = df[col].drop_nulls()
        n = int(((s < lo).sum() if lo is not None else 0) + ((s > hi).sum() if hi is not None else 0))
        if n:
            bad[col] = n
    return _result(asset, "value_ranges", not bad, ERROR, out_of_range=dg.MetadataValue.json(bad))


def _distribution(df: pl.DataFrame, d: Distribution, asset: str, facts: dict) -> dg.AssetCheckResult:
    value = float(d.measure(df, facts))
    ok = (d.low is None or value >= d.low) and (d.high is None or value <= d.high)
    return _result(
        asset,
        d.name,
        ok,
        ERROR if d.blocking else WARN,
        value=value,
        bounds=dg.MetadataValue.text(f"[{d.low}, {d.high}]"),
    )
