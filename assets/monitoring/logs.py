"""Read the gateway's inference-log spool (framework-free).

Layout: the OpenAI-compatible gateway appends one JSON object per request, one object per line, to
``{spool_dir}/<YYYY-MM-DDTHH>/<hostname>-<pid>-<start_ns>.jsonl`` (``serving.gateway.logstore``). Hour
folders are the UTC hour of each row's ``ts``; every gateway process writes its own file per hour, so
a file is only ever appended to by one writer, and a crash can leave at most its last line torn.

Reading rules (:func:`read_spool`), the same as the writer's own reader
(``serving.gateway.logstore.read_rows``):

- A line is complete when it ends in a newline and parses as a JSON object. The bytes after a file's
  last newline are a torn write (a crash mid-``write()``, or a writer still writing): skipped and
  counted, even when they happen to parse.
- Blank lines are ignored (not counted). Any other line that is not a JSON object is skipped and
  counted too; with one writer per file only a torn tail should ever be, so a non-zero count on a
  closed hour is worth a look.
- Rows are typed by :data:`LOG_SCHEMA`, derived from the writer's row type
  (:class:`serving.gateway.logrow.LogRow`, the one schema of the log): keys missing from a row become
  nulls, keys the schema does not name are dropped. A row whose values cannot take the schema's types (``"status": "abc"``) is a
  writer bug and raises rather than being dropped silently.

Hours: which folders exist, their names and which are closed (no row will be added to them any more) are
:mod:`serving.gateway.hours`' (``hour_dirs``, ``hour_of``, ``closed_hours``), shared with the writer.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from crawl2serve.serving.gateway.hours import is_hour
from crawl2serve.serving.gateway.logrow import LOG_FIELDS, TIMESTAMP_FIELDS, base_type

__all__ = ["LOG_SCHEMA", "read_spool"]

_POLARS_TYPES = {str: pl.String(), int: pl.Int64(), float: pl.Float64(), bool: pl.Boolean()}

#: The typed rows: :class:`serving.gateway.logrow.LogRow`'s fields in order, each as its type (nullable:
#: polars columns always are); timestamps as datetimes. The compacted hour (Parquet) has this schema.
LOG_SCHEMA = pl.Schema(
    {
        name: pl.Datetime("us", "UTC") if name in TIMESTAMP_FIELDS else _POLARS_TYPES[base_type(t)]
        for name, t in LOG_FIELDS.items()
    }
)
# As written on disk: timestamps are ISO-8601 strings ("2026-11-23T06:05:01.123456+00:00").
_RAW_SCHEMA = pl.Schema({k: (pl.String() if k in TIMESTAMP_FIELDS else v) for k, v in LOG_SCHEMA.items()})


def _split_complete(data: bytes) -> tuple[bytes, bytes]:
    """(complete lines, bytes after the last newline)."""
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]


def _parse_lines(data: bytes) -> tuple[list[dict], int]:
    """The slow path: every line on its own; (objects, lines that are not JSON objects)."""
    rows: list[dict] = []
    bad = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([{k: r.get(k) for k in _RAW_SCHEMA} for r in rows], schema=_RAW_SCHEMA, strict=False)


def _read_files(files: Iterable[Path]) -> tuple[pl.DataFrame, int]:
    heads: list[bytes] = []
    skipped = 0
    for path in files:
        head, tail = _split_complete(path.read_bytes())
        heads.append(head)
        if tail:  # a torn write
            skipped += 1
    body = b"".join(heads)
    frames: list[pl.DataFrame] = []
    if body.strip():
        try:  # the fast path: one native NDJSON parse of every complete line
            frames.append(pl.read_ndjson(io.BytesIO(body), schema=_RAW_SCHEMA, ignore_errors=False))
        except pl.exceptions.PolarsError:  # a line that is not JSON, or a value of the wrong type
            rows, bad = _parse_lines(body)
            skipped += bad
            if rows:
                frames.append(_frame(rows))
    if not frames:
        return LOG_SCHEMA.to_frame(eager=True), skipped
    raw = pl.concat(frames, how="vertical")
    typed = raw.with_columns(
        pl.col(name).str.to_datetime(time_unit="us", time_zone="UTC", strict=True) for name in TIMESTAMP_FIELDS
    )
    return typed.select(LOG_SCHEMA.names()).cast(LOG_SCHEMA), skipped


def read_spool(spool_dir: str | os.PathLike, hours: list[str]) -> tuple[pl.DataFrame, int]:
    """All complete rows of the hour folders ``hours``, typed by :data:`LOG_SCHEMA`, sorted by ``ts``.

    Returns ``(rows, skipped_lines)``; see the module docstring for what is skipped. A missing hour
    folder contributes nothing; with no rows at all the frame is empty but carries the schema. Files
    are read in name order within an hour and hours in the order given (duplicates read once); the
    final sort by ``ts`` is stable, so rows with equal timestamps keep that order. A name in ``hours``
    that is not ``YYYY-MM-DDTHH`` raises ValueError.
    """
    bad = [h for h in hours if not is_hour(h)]
    if bad:
        raise ValueError(f"not hour folder names (YYYY-MM-DDTHH): {bad}")
    root = Path(spool_dir)
    files: list[Path] = []
    for hour in dict.fromkeys(hours):
        folder = root / hour
        if folder.is_dir():
            files += sorted(p for p in folder.glob("*.jsonl") if p.is_file())
    df, skipped = _read_files(files)
    return df.sort("ts", maintain_order=True), skipped
