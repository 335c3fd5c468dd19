"""The data root: where every asset writes, laid out by asset and partition, always atomically.

A local directory by default; any fsspec URL (``s3://bucket/prefix``, ``gs://…``, ``memory://…``) by
configuration. Nothing downstream can ever read a half-written file: every write goes to a temporary name
first and is renamed into place only once complete (``os.replace`` locally, a move on object stores,
where a single PUT is itself atomic).
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import fsspec
import polars as pl
import pyarrow.parquet as pq
from pydantic import Field

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = os.environ.get("CRAWL2SERVE_DATA_ROOT", str(REPO_ROOT / "data"))
UNPARTITIONED = "_"
TMP_PREFIX = ".tmp-"
PARTS_KEY = "crawl2serve.parts"  # footer key of a table combined from parts: [{label, rows}]
READ_EVENT = "crawl2serve.data_root.read"  # sys.audit event of every Parquet read (tests audit inputs with it)


class DataRoot(dg.ConfigurableResource):
    """Root of all pipeline data: ``{url}/{asset}/{partition}/{file}``."""

    url: str = Field(
        default=DEFAULT_DATA_ROOT,
        description="Local directory or fsspec URL under which every asset writes "
        "(env CRAWL2SERVE_DATA_ROOT sets the default).",
    )

    # -- layout ---------------------------------------------------------------------------------
    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        fs, _ = fsspec.core.url_to_fs(self.url)
        return fs

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    @property
    def root(self) -> str:
        _, path = fsspec.core.url_to_fs(self.url)
        return path.rstrip("/") if not self.is_local else str(Path(path).resolve())

    def path(self, asset: str, partition: str | None = None, *names: str) -> str:
        """The path of ``names`` under an asset's partition directory."""
        return "/".join([self.root, asset, partition or UNPARTITIONED, *names])

    def local_path(self, path: str) -> Path:
        """``path`` as a local Path (only for a local data root)."""
        if not self.is_local:
            raise ValueError(f"data root {self.url!r} is not local; {path} has no local path")
        return Path(path)

    # -- reading --------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def glob(self, pattern: str) -> list[str]:
        return sorted(p for p in self.fs.glob(pattern) if not Path(p).name.startswith(TMP_PREFIX))

    def open(self, path: str, mode: str = "rb"):
        return self.fs.open(path, mode)

    def read_parquet(
        self,
        path: str,
        columns: list[str] | None = None,
        where: pl.Expr | None = None,
        row_groups: tuple[int, int] | None = None,
    ) -> pl.DataFrame:
        """The Parquet file at ``path``: only ``columns`` when named; only row groups ``[start, stop)`` when given;
        only the rows ``where`` holds when given (a local file is scanned with the filter pushed down, so only
        matching rows' other columns are decoded)."""
        sys.audit(READ_EVENT, path)  # polars reads a local file natively: no "open" audit event would show it
        if row_groups is not None:
            if where is not None:
                raise ValueError("read_parquet: give row_groups or where, not both")
            with self.fs.open(path, "rb") as f:
                part = pq.ParquetFile(f).read_row_groups(range(*row_groups), columns=columns)
            return pl.from_arrow(part)
        if self.is_local:
            if where is None:
                return pl.read_parquet(path, columns=columns)
            scan = pl.scan_parquet(path).filter(where)
            return (scan.select(columns) if columns else scan).collect()
        needed = None if columns is None else [*columns, *(c for c in where.meta.root_names() if c not in columns)]
        with self.fs.open(path, "rb") as f:
            frame = pl.read_parquet(f, columns=columns if where is None else needed)
        if where is None:
            return frame
        frame = frame.filter(where)
        return frame.select(columns) if columns else frame

    # -- atomic writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def atomic_open(self, path: str, mode: str = "wb") -> Iterator[io.IOBase]:
        """Open ``path`` for writing; it appears under its name only if the block completes."""
        fs = self.fs
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        name = path.rsplit("/", 1)[1]
        if self.is_local:
            fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{name}.", dir=parent)
            try:
                with os.fdopen(fd, mode) as f:
                    yield f
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return
        tmp = f"{parent}/{TMP_PREFIX}{name}.{uuid.uuid4().hex}"
        try:
            with fs.open(tmp, mode) as f:
                yield f
            fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm(tmp)
            raise

    def write_parquet(self, df: pl.DataFrame, path: str) -> str:
        """Write ``df`` to ``path`` atomically (zstd-compressed Parquet with statistics)."""
        with self.atomic_open(path, "wb") as f:
            df.write_parquet(f, compression="zstd", statistics=True)
        return path

    def combine_parquet(self, parts: list[str], path: str, labels: list[str] | None = None) -> list[int]:
        """Write the Parquet files ``parts`` as one table at ``path`` (atomically), one after another, each
        non-empty part as one row group: memory holds one part at a time. The file's footer records each part's
        label (default: its path) and rows (``parquet_parts`` reads them back). Returns each part's row count. A
        part whose columns differ from the first's is an error naming it."""
        if not parts:
            raise ValueError(f"{path}: nothing to combine")
        rows = []
        for part in parts:
            with self.fs.open(part, "rb") as src:
                rows.append(pq.read_metadata(src).num_rows)
        schema = None
        with self.atomic_open(path, "wb") as f:
            writer = None
            try:
                for part, n in zip(parts, rows):
                    with self.fs.open(part, "rb") as src:
                        table = pq.read_table(src)
                    if schema is None:
                        schema = table.schema
                        writer = pq.ParquetWriter(f, schema, compression="zstd", write_statistics=True)
                    elif not table.schema.equals(schema):
                        raise ValueError(f"{part}: columns {table.schema} differ from the first part's {schema}")
                    if n:
                        writer.write_table(table, row_group_size=n)
                    del table
                labels = list(parts) if labels is None else list(labels)
                writer.add_key_value_metadata(
                    {PARTS_KEY: json.dumps([{"label": lb, "rows": n} for lb, n in zip(labels, rows)])}
                )
            finally:
                if writer is not None:
                    writer.close()
        return rows

    def parquet_rows(self, path: str) -> int:
        with self.fs.open(path, "rb") as f:
            return pq.read_metadata(f).num_rows

    def parquet_schema(self, path: str) -> pl.Schema:
        with self.fs.open(path, "rb") as f:
            return pl.read_parquet_schema(f)

    def parquet_null_counts(self, path: str, columns: list[str]) -> dict[str, int]:
        """Nulls per column of the Parquet file at ``path``, from its footer's statistics (a column without
        them is read)."""
        with self.fs.open(path, "rb") as f:
            meta = pq.read_metadata(f)
        names = [meta.schema.column(i).path for i in range(meta.num_columns)]
        counts, unknown = {}, []
        for col in columns:
            if col not in names:
                continue
            j, total = names.index(col), 0
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(j).statistics
                if stats is None or not stats.has_null_count:
                    unknown.append(col)
                    break
                total += stats.null_count
            else:
                counts[col] = total
        if unknown:
            frame = self.read_parquet(path, columns=unknown)
            counts |= {c: int(frame[c].null_count()) for c in unknown}
        return counts

    def parquet_parts(self, path: str) -> list[tuple[str, int, tuple[int, int]]] | None:
        """``(label, rows, (first row group, stop))`` of each part of a table ``combine_parquet`` wrote at
        ``path``, in order (an empty part holds no row group); None for a table written whole."""
        with self.fs.open(path, "rb") as f:
            meta = pq.read_metadata(f).metadata or {}
        if PARTS_KEY.encode() not in meta:
            return None
        out, group = [], 0
        for part in json.loads(meta[PARTS_KEY.encode()]):
            stop = group + (1 if part["rows"] else 0)
            out.append((part["label"], part["rows"], (group, stop)))
            group = stop
        return out

    def write_bytes(self, data: bytes, path: str) -> str:
        with self.atomic_open(path, "wb") as f:
            f.write(data)
        return path

    def remove(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def remove_if_empty(self, folder: str) -> None:
        """Remove ``folder`` if nothing is in it (object stores have no empty folders: nothing to do there)."""
        with contextlib.suppress(FileNotFoundError, OSError):
            if not self.fs.ls(folder):
                self.fs.rmdir(folder)

    def clean_temporaries(self, directory: str) -> int:
        """Delete leftovers of writes that were killed mid-way (never visible under a real name)."""
        leftovers = [p for p in self.fs.glob(f"{directory}/**") if Path(p).name.startswith(TMP_PREFIX)]
        for p in leftovers:
            self.fs.rm(p)
        return len(leftovers)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)
