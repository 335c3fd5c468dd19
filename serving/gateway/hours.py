"""The inference-log spool's hour folders (framework-free): their names, which exist, which are closed.

The one home of these facts for the writer (:mod:`serving.gateway.logstore`) and the readers
(:mod:`assets.monitoring.logs`, the monitoring assets). Layout::

    <spool_dir>/<YYYY-MM-DDTHH>/<hostname>-<pid>-<start_ns>.jsonl

The hour folder is the UTC hour of a row's ``ts``, the time the request *arrived*; the row is written when
the request ends, so an hour's folder can still grow for up to one request's duration after the hour ends.
:func:`closed_hours` lists the folders strictly before the UTC hour of ``now - grace_s``: pass the longest
request duration (plus clock skew between gateway hosts) as ``grace_s`` to read only folders no gateway will
write to again.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

__all__ = ["HOUR_FORMAT", "closed_hours", "daily_hours", "hour_dirs", "hour_of", "is_hour"]

HOUR_FORMAT = "%Y-%m-%dT%H"  # hour folder names: "2026-11-23T06"
_HOUR_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$")


def is_hour(name: str) -> bool:
    """Whether ``name`` is an hour folder name: ``YYYY-MM-DDTHH`` of a real date and hour."""
    if not _HOUR_RE.match(name):
        return False
    try:
        datetime.strptime(name, HOUR_FORMAT)
    except ValueError:
        return False
    return True


def hour_of(moment: datetime | str) -> str:
    """The hour folder (``YYYY-MM-DDTHH``, UTC) of a timezone-aware datetime or of an ISO-8601 timestamp with
    a UTC offset (a row's ``ts``). A naive or unparsable one is a ValueError naming it."""
    if isinstance(moment, str):
        try:
            parsed = datetime.fromisoformat(moment)
        except ValueError as e:
            raise ValueError(f"ts {moment!r} is not an ISO-8601 timestamp") from e
        if parsed.tzinfo is None:
            raise ValueError(f"ts {moment!r} has no UTC offset")
        moment = parsed
    elif moment.tzinfo is None:
        raise ValueError(f"hour_of: {moment!r} is naive; pass a timezone-aware datetime")
    return moment.astimezone(UTC).strftime(HOUR_FORMAT)


def hour_dirs(spool_dir: str | os.PathLike[str]) -> list[str]:
    """Every hour folder in the spool, oldest first; [] when the spool does not exist.

    Entries that are not directories named ``YYYY-MM-DDTHH`` (a valid date and hour) are ignored.
    """
    root = Path(spool_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_hour(p.name))


def closed_hours(spool_dir: str | os.PathLike[str], now: datetime | None = None, *, grace_s: float = 0.0) -> list[str]:
    """The spool's hour folders strictly before the UTC hour of ``now - grace_s`` (``now``: default the current
    time; timezone-aware, else ValueError). ``grace_s``: how late a row may arrive in its hour's folder (module
    docstring); 0 trusts every folder as soon as its hour has ended."""
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None:
        raise ValueError("closed_hours: now must be timezone-aware")
    current = hour_of(now - timedelta(seconds=grace_s))
    return [h for h in hour_dirs(spool_dir) if h < current]  # the fixed-width names sort as times


def daily_hours(day: str) -> list[str]:
    """The 24 hour-folder names of the UTC day ``"YYYY-MM-DD"``: ``"YYYY-MM-DDT00"`` ... ``"T23"``."""
    start = datetime.strptime(day, "%Y-%m-%d")
    return [(start + timedelta(hours=h)).strftime(HOUR_FORMAT) for h in range(24)]
