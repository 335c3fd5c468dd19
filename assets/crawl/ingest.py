"""Ingest mode: manifest rows for existing WARC/WET files, one file at a time (framework-free).

``ingest_sources`` turns ``ingest_paths`` into the files to read, in order: a path, a glob, or a path list as
Common Crawl publishes one per crawl (``warc.paths.gz`` / ``wet.paths.gz``: one path a line, gzip or plain; a
relative line is under ``base``, by default the list's own folder). ``ingest_file`` reads one file's records
(one shard of ``raw_crawl``'s ingest: the asset maps it over the files on the corpus executor), and
``combine_manifests`` keeps the first row of each URL, in file order, as a single pass over the files would.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import polars as pl

from crawl2serve.resources.storage import DataRoot

from .crawler import MANIFEST_SCHEMA
from .warc import iter_records

MANIFEST = {**MANIFEST_SCHEMA, "record_type": pl.String}
PATH_LISTS = (".paths", ".paths.gz")


def ingest_sources(data_root: DataRoot, patterns: list[str], base: str = "") -> list[str]:
    """The files ``patterns`` name, in order (see the module docstring); a glob that matches nothing, or an
    empty path list, is an error naming it."""
    paths: list[str] = []
    for pattern in patterns:
        if pattern.endswith(PATH_LISTS):
            with data_root.fs.open(pattern, "rb") as f:
                raw = f.read()
            text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
            folder = pattern.rsplit("/", 1)[0] if "/" in pattern else "."
            root = (base or folder).rstrip("/")
            listed = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            if not listed:
                raise ValueError(f"ingest_paths: the path list {pattern!r} lists no file")
            paths += [ln if ln.startswith("/") or "://" in ln else f"{root}/{ln}" for ln in listed]
            continue
        found = data_root.fs.glob(pattern) if any(c in pattern for c in "*?[") else [pattern]
        if not found:
            raise FileNotFoundError(f"ingest_paths: nothing matches {pattern!r}")
        paths += sorted(found)
    return paths


def ingest_file(data_root: DataRoot, path: str, problems: list | None = None) -> pl.DataFrame:
    """Manifest rows for the response/conversion records of one WARC/WET file.

    Only whole records become rows (``iter_records`` validates lengths, digests and gzip members). A file
    that is truncated or corrupt is reported and skipped from its fault on, never fatal: its records
    before the fault are kept, and each ``ReadProblem`` (file, byte offset, what) is appended to
    ``problems`` (raised as ``WarcReadError`` when ``problems`` is None).
    """
    rows = []
    with data_root.fs.open(path, "rb") as f:
        for rec in iter_records(f, name=path, on_problem=None if problems is None else problems.append):
            rows.append(
                {
                    "url": rec.url,
                    "status": rec.status,
                    "bytes": len(rec.body),
                    "fetch_time": _warc_date(rec.date),
                    "content_type": rec.content_type,
                    "warc_file": path,
                    "warc_offset": rec.offset,
                    "record_type": rec.kind,
                    "attempts": 0,
                }
            )
    return pl.DataFrame({c: [r.get(c) for r in rows] for c in MANIFEST}, schema=MANIFEST)


def ingest_shard(root_url: str, path: str) -> tuple[pl.DataFrame, list]:
    """One file's manifest rows and read problems (the function the corpus executor maps over the files)."""
    problems: list = []
    return ingest_file(DataRoot(url=root_url), path, problems), problems


def combine_manifests(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The files' rows in order, the first row of each URL kept."""
    if not frames:
        return pl.DataFrame(schema=MANIFEST)
    return pl.concat(frames).unique("url", keep="first", maintain_order=True)


def _warc_date(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
