"""The IO manager: polars DataFrames as Parquet under the data root, by asset and partition, atomically."""

import typing

import dagster as dg
import polars as pl

from crawl2serve.assets.metadata import COLUMN_SCHEMA, frame_column_schema

from .storage import DataRoot

FILENAME = "data.parquet"


class ParquetIOManager(dg.ConfigurableIOManager):
    """``{data_root}/{asset}/{partition}/data.parquet``; several upstream partitions load concatenated, or, for an
    input typed ``dict[str, pl.DataFrame]``, as ``{partition: frame}`` of those that exist (maybe none)."""

    data_root: dg.ResourceDependency[DataRoot]

    def _path(self, asset_key: dg.AssetKey, partition: str | None) -> str:
        return self.data_root.path("/".join(asset_key.path), partition, FILENAME)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a polars DataFrame, got {type(obj)}")
        partition = context.partition_key if context.has_asset_partitions else None
        path = self.data_root.write_parquet(obj, self._path(context.asset_key, partition))
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(path),
                "rows": obj.height,
                "dagster/row_count": obj.height,
                # names and types from the frame written; descriptions from the asset's declared column schema
                COLUMN_SCHEMA: frame_column_schema(obj.schema, context.definition_metadata.get(COLUMN_SCHEMA)),
            }
        )

    def load_input(self, context: dg.InputContext) -> pl.DataFrame | dict[str, pl.DataFrame]:
        key = context.asset_key
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        paths = [self._path(key, p) for p in partitions]
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
