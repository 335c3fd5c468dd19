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

Hours: the writer files each row under the UTC hour of its ``ts``, the time the request *arrived*,
and writes it when the request ends, so an hour's folder can still grow for up to one request's
duration after the hour ends. :func:`closed_hours` lists the folders strictly before the UTC hour of
``now - grace_s``; pass the longest request duration (plus clock skew between gateway hosts) as
``grace_s`` to read only folders no gateway will write to again.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from crawl2serve.serving.gateway.logrow import LOG_FIELDS, TIMESTAMP_FIELDS, base_type

__all__ = ["HOUR_FORMAT", "LOG_SCHEMA", "closed_hours", "daily_hours", "hour_of", "hour_partitions", "read_spool"]

HOUR_FORMAT = "%Y-%m-%dT%H"  # hour folder names: "2026-11-23T06"
_HOUR_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$")

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


def _is_hour(name: str) -> bool:
    if not _HOUR_RE.match(name):
        return False
    try:
        datetime.strptime(name, HOUR_FORMAT)
    except ValueError:
        return False
    return True


def hour_of(moment: datetime) -> str:
    """The hour folder name of ``moment``, in UTC; ``moment`` must be timezone-aware (ValueError)."""
    if moment.tzinfo is None:
        raise ValueError(f"hour_of: {moment!r} is naive; pass a timezone-aware datetime")
    return moment.astimezone(UTC).strftime(HOUR_FORMAT)


def hour_partitions(spool_dir: str | os.PathLike) -> list[str]:
    """Every hour folder in the spool, sorted (oldest first); [] when the spool does not exist.

    Entries that are not directories named ``YYYY-MM-DDTHH`` (a valid date and hour) are ignored.
    """
    root = Path(spool_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _is_hour(p.name))


def closed_hours(spool_dir: str | os.PathLike, now: datetime, *, grace_s: float = 0.0) -> list[str]:
    """The spool's hour folders strictly before the UTC hour of ``now - grace_s``.

    ``now`` must be timezone-aware (ValueError otherwise). ``grace_s``: how late a row may arrive in
    its hour's folder (module docstring); 0 trusts every folder as soon as its hour has ended.
    """
    if now.tzinfo is None:
        raise ValueError("closed_hours: now must be timezone-aware")
    current = hour_of(now - timedelta(seconds=grace_s))
    return [h for h in hour_partitions(spool_dir) if h < current]  # the fixed-width names sort as times


def daily_hours(day: str) -> list[str]:
    """The 24 hour-folder names of the UTC day ``"YYYY-MM-DD"``: ``"YYYY-MM-DDT00"`` ... ``"T23"``."""
    start = datetime.strptime(day, "%Y-%m-%d")
    return [(start + timedelta(hours=h)).strftime(HOUR_FORMAT) for h in range(24)]


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
    bad = [h for h in hours if not _is_hour(h)]
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
