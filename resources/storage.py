"""The data root: where every asset writes, laid out by asset and partition, always atomically.

A local directory by default; any fsspec URL (``s3://bucket/prefix``, ``gs://…``, ``memory://…``) by
configuration. Nothing downstream can ever read a half-written file: every write goes to a temporary name
first and is renamed into place only once complete (``os.replace`` locally, a move on object stores,
where a single PUT is itself atomic).
"""

import contextlib
import io
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import fsspec
import polars as pl
from pydantic import Field

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = os.environ.get("CRAWL2SERVE_DATA_ROOT", str(REPO_ROOT / "data"))
UNPARTITIONED = "_"
TMP_PREFIX = ".tmp-"
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

    def read_parquet(self, path: str, columns: list[str] | None = None, where: pl.Expr | None = None) -> pl.DataFrame:
        """The Parquet file at ``path``: only ``columns`` when named, only the rows ``where`` holds when given (a
        local file is scanned with the filter pushed down, so only matching rows' other columns are decoded)."""
        sys.audit(READ_EVENT, path)  # polars reads a local file natively: no "open" audit event would show it
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

    def write_bytes(self, data: bytes, path: str) -> str:
        with self.atomic_open(path, "wb") as f:
            f.write(data)
        return path

    def remove(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def clean_temporaries(self, directory: str) -> int:
        """Delete leftovers of writes that were killed mid-way (never visible under a real name)."""
        leftovers = [p for p in self.fs.glob(f"{directory}/**") if Path(p).name.startswith(TMP_PREFIX)]
        for p in leftovers:
            self.fs.rm(p)
        return len(leftovers)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)
