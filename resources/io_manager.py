"""The IO manager: polars DataFrames as Parquet under the data root, by asset and partition, atomically.

A table made shard by shard (the corpus stages, resources/corpus_executor.py) comes as a ``ShardedTable``: its
shards' Parquet files, staged by the shard tasks under the asset's partition folder. The IO manager commits them,
in order, into the same ``data.parquet`` a DataFrame would go to (one row group per non-empty shard, streamed: one
shard in memory at a time), records each shard in the file's footer, and removes the staged files. A consumer
that annotates its input ``ShardedTable`` gets those shards back (a row-group range of ``data.parquet`` each; a
table written whole is one shard), to map over them in turn; any other consumer gets the whole DataFrame.
"""

import typing
from dataclasses import dataclass

import dagster as dg
import polars as pl

from crawl2serve.assets.metadata import COLUMN_SCHEMA, frame_column_schema

from .storage import DataRoot

FILENAME = "data.parquet"


@dataclass(frozen=True)
class TableShard:
    """One shard of a table: what it was made from (``source``: a WARC file, an upstream shard), its rows, and
    where they are: a Parquet file, or the row groups ``[start, stop)`` of one."""

    source: str
    path: str
    rows: int = 0
    row_groups: tuple[int, int] | None = None


@dataclass(frozen=True)
class ShardedTable:
    """A table as its shards, in order, with the columns every shard has (``schema``)."""

    shards: tuple[TableShard, ...]
    schema: dict[str, pl.DataType]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)


class ParquetIOManager(dg.ConfigurableIOManager):
    """``{data_root}/{asset}/{partition}/data.parquet``; several upstream partitions load concatenated, or, for an
    input typed ``dict[str, pl.DataFrame]``, as ``{partition: frame}`` of those that exist (maybe none)."""

    data_root: dg.ResourceDependency[DataRoot]

    def _path(self, asset_key: dg.AssetKey, partition: str | None) -> str:
        return self.data_root.path("/".join(asset_key.path), partition, FILENAME)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | ShardedTable | None) -> None:
        if obj is None:
            return
        partition = context.partition_key if context.has_asset_partitions else None
        path = self._path(context.asset_key, partition)
        if isinstance(obj, ShardedTable):
            rows, schema = self._commit_shards(obj, path), obj.schema
        elif isinstance(obj, pl.DataFrame):
            self.data_root.write_parquet(obj, path)
            rows, schema = obj.height, obj.schema
        else:
            raise TypeError(
                f"{context.asset_key.to_user_string()}: expected a polars DataFrame or a ShardedTable, got {type(obj)}"
            )
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(path),
                "rows": rows,
                "dagster/row_count": rows,
                # names and types from the frame written; descriptions from the asset's declared column schema
                COLUMN_SCHEMA: frame_column_schema(schema, context.definition_metadata.get(COLUMN_SCHEMA)),
            }
        )

    def _commit_shards(self, table: ShardedTable, path: str) -> int:
        """The staged shard files into ``path`` (atomically), then the staged files removed; the rows written."""
        if not table.shards:
            self.data_root.write_parquet(pl.DataFrame(schema=table.schema), path)
            return 0
        parts = [s.path for s in table.shards]
        rows = self.data_root.combine_parquet(parts, path, labels=[s.source for s in table.shards])
        for part in parts:
            self.data_root.remove(part)
        for folder in {part.rsplit("/", 1)[0] for part in parts}:
            self.data_root.remove_if_empty(folder)
        return sum(rows)

    def _shards(self, path: str) -> list[TableShard]:
        parts = self.data_root.parquet_parts(path)
        if parts is None:
            return [TableShard(source=path, path=path, rows=self.data_root.parquet_rows(path))]
        return [TableShard(source=label, path=path, rows=rows, row_groups=groups) for label, rows, groups in parts]

    def load_input(self, context: dg.InputContext) -> pl.DataFrame | dict[str, pl.DataFrame]:
        key = context.asset_key
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        paths = [self._path(key, p) for p in partitions]
        if getattr(context.dagster_type, "typing_type", None) is ShardedTable:
            present = [p for p in paths if self.data_root.exists(p)]
            if not present:
                raise FileNotFoundError(f"{key.to_user_string()}: not materialized yet ({paths[0]})")
            schema = dict(self.data_root.parquet_schema(present[0]))
            return ShardedTable(shards=tuple(s for p in present for s in self._shards(p)), schema=schema)
        if typing.get_origin(getattr(context.dagster_type, "typing_type", None)) is dict:
            return {
                p: self.data_root.read_parquet(path)
                for p, path in zip(partitions, paths)
                if self.data_root.exists(path)
            }
        missing = [p for p in paths if not self.data_root.exists(p)]
        if missing and len(missing) == len(paths):
            raise FileNotFoundError(f"{key.to_user_string()}: not materialized yet ({missing[0]})")
        frames = [self.data_root.read_parquet(p) for p in paths if p not in missing]
        return pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
