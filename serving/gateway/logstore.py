"""The inference log: every request/response the gateway serves, appended as one JSON line, batched,
fsync'ed, never dropped.

Layout::

    <spool_dir>/<YYYY-MM-DDTHH>/<hostname>-<pid>-<start_ns>.jsonl

The hour folder is the UTC hour of each row's ``ts``; each writer (one :class:`InferenceLog`, i.e. one
gateway process) has its own file per hour, so writers never share a file and never need a lock.

Durability: :meth:`InferenceLog.append` only enqueues (it serializes and validates the row in the
caller's thread, takes a lock briefly, and blocks only when more than ``max_pending`` rows wait: then
the caller is held back until the writer catches up, rows are never dropped). One background thread
takes up to ``max_batch`` rows at a time and writes them with a single ``write()`` per file followed by
``fsync`` (group commit). A row is durable once :meth:`InferenceLog.flush` has returned, or at most
``flush_interval_s`` plus one fsync after ``append``. A crash (or SIGKILL) loses at most the rows not yet
fsync'ed: the batch in flight and whatever was still queued; a crash in the middle of a ``write()`` can
leave a torn last line, which :func:`read_rows` skips and counts. Readers should treat rows as arriving
up to one request's duration late (``ts`` is when the request arrived), see ``grace_s`` in
:func:`closed_hours`.
"""

import atexit
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import UnionType
from typing import Any

log = logging.getLogger(__name__)

#: The row schema: every row has exactly these fields (values of these types; ints pass as floats).
LOG_FIELDS: dict[str, type | UnionType] = {
    "request_id": str,
    "ts": str,  # ISO-8601 UTC with microseconds: utc_now_iso()
    "tenant": str,
    "key_id": str,
    "endpoint": str,  # "chat.completions" | "completions"
    "model": str,  # the model name the client asked for
    "served_model": str,  # the engine's model name
    "model_version": str,
    "adapter": str,
    "engine": str,
    "route": str,  # "stable" | "canary" | "fallback"
    "stream": bool,
    "status": int,  # HTTP status
    "error": str | None,  # error kind, None on success
    "prompt": str,
    "output": str,
    "prompt_tokens": int,
    "completion_tokens": int,
    "latency_ms": float,
    "ttft_ms": float | None,  # time to first token (streams)
    "input_verdict": str,
    "output_verdict": str,
    "verdict_reasons": str,  # ";"-joined
    "finish_reason": str | None,
}

HOUR_FORMAT = "%Y-%m-%dT%H"
_HOUR_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$")


def utc_now_iso() -> str:
    """The current time as the log's ``ts``: ISO-8601, UTC, microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def hour_of(ts: str) -> str:
    """The hour folder (``YYYY-MM-DDTHH``, UTC) of an ISO-8601 timestamp with a UTC offset."""
    try:
        t = datetime.fromisoformat(ts)
    except ValueError as e:
        raise ValueError(f"ts {ts!r} is not an ISO-8601 timestamp") from e
    if t.tzinfo is None:
        raise ValueError(f"ts {ts!r} has no UTC offset")
    return t.astimezone(UTC).strftime(HOUR_FORMAT)


def validate_row(row: dict[str, Any]) -> None:
    """Raise ValueError naming the first missing, unknown or mistyped field."""
    for name in row:
        if name not in LOG_FIELDS:
            raise ValueError(f"unknown inference log field {name!r}")
    for name, expected in LOG_FIELDS.items():
        if name not in row:
            raise ValueError(f"inference log row lacks field {name!r}")
        value = row[name]
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"inference log field {name!r} must be finite, got {value!r}")
        if not _is_instance(value, expected):
            raise ValueError(f"inference log field {name!r} must be {_type_name(expected)}, "
                             f"got {type(value).__name__}")


def _is_instance(value: Any, expected: type | UnionType) -> bool:
    if isinstance(value, bool):  # bool is an int subclass: only a bool field takes one
        return _accepts(expected, bool)
    if isinstance(value, int) and _accepts(expected, float):
        return True
    return isinstance(value, expected)


def _type_name(expected: type | UnionType) -> str:
    return expected.__name__ if isinstance(expected, type) else str(expected).replace("NoneType", "None")


def _accepts(expected: type | UnionType, t: type) -> bool:
    return expected is t or (isinstance(expected, UnionType) and t in expected.__args__)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "host"


class InferenceLog:
    """Append-only, batched, fsync'ed JSONL log of inference rows, written by one background thread.

    ``with InferenceLog(dir) as log: log.append(row)``; or ``start()`` … ``close()``.
    """

    retry_delay_s = 0.5  # pause before retrying a batch whose write failed (disk full, I/O error)

    def __init__(self, spool_dir: str | os.PathLike[str], flush_interval_s: float = 0.05,
                 max_batch: int = 512, max_pending: int = 100_000):
        if flush_interval_s < 0 or max_batch < 1 or max_pending < 1:
            raise ValueError(f"need flush_interval_s >= 0, max_batch >= 1, max_pending >= 1; got "
                             f"{flush_interval_s}, {max_batch}, {max_pending}")
        self.spool_dir = Path(spool_dir)
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.file_name = f"{_safe_name(socket.gethostname())}-{os.getpid()}-{time.time_ns()}.jsonl"
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, bytes]] = deque()  # (hour, JSON line)
        self._oldest_at = 0.0  # monotonic time the oldest queued row arrived in an empty queue
        self._appended = 0
        self._written = 0
        self._flush_waiters = 0
        self._closing = False
        self._thread: threading.Thread | None = None
        self._fds: dict[str, int] = {}  # hour -> open file descriptor (O_APPEND)

    # -- stats ----------------------------------------------------------------------------------
    @property
    def written(self) -> int:
        """Rows fsync'ed so far."""
        return self._written

    @property
    def pending(self) -> int:
        """Rows appended but not yet fsync'ed (queued or in the batch being written)."""
        with self._cond:
            return self._appended - self._written

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "InferenceLog":
        """Start the writer thread (once; later calls do nothing)."""
        with self._cond:
            if self._closing:
                raise RuntimeError("inference log is closed")
            if self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
            self._thread.start()
        atexit.register(self.close)  # a daemon thread dies at exit: drain first
        return self

    def close(self, timeout: float | None = None) -> None:
        """Write everything appended, then stop the writer. ``timeout=None`` waits as long as it takes."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"inference log: {self.pending} rows still unwritten after {timeout}s")
        atexit.unregister(self.close)

    def __enter__(self) -> "InferenceLog":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- producers ------------------------------------------------------------------------------
    def append(self, row: dict[str, Any]) -> None:
        """Validate and enqueue one row (blocks only while ``max_pending`` rows wait: backpressure)."""
        validate_row(row)
        hour = hour_of(row["ts"])
        line = json.dumps(row, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
        with self._cond:
            while True:
                if self._closing:
                    raise RuntimeError("inference log is closed")
                if self._thread is None:
                    raise RuntimeError("inference log not started: call start() or use it as a context manager")
                if len(self._queue) < self.max_pending:
                    break
                self._cond.wait()
            if not self._queue:
                self._oldest_at = time.monotonic()
            self._queue.append((hour, line))
            self._appended += 1
            if len(self._queue) == 1 or len(self._queue) >= self.max_batch:
                self._cond.notify_all()

    def flush(self, timeout: float = 5) -> None:
        """Wait until every row appended before this call is on disk (TimeoutError if not in time)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._appended
            if self._written >= target:
                return
            if self._thread is None or not self._thread.is_alive():
                raise RuntimeError("inference log writer is not running")
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                while self._written < target:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"inference log: {target - self._written} rows not on disk "
                                           f"after {timeout}s")
                    self._cond.wait(left)
            finally:
                self._flush_waiters -= 1

    # -- the writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._commit(batch)
        finally:
            self._close_files()

    def _next_batch(self) -> list[tuple[str, bytes]] | None:
        """Wait for a batch worth writing: ``max_batch`` rows, a flush or close, or the oldest row
        having waited ``flush_interval_s``. None once closing with nothing left."""
        with self._cond:
            while True:
                if self._queue and (self._closing or self._flush_waiters or len(self._queue) >= self.max_batch):
                    break
                if self._queue:
                    left = self._oldest_at + self.flush_interval_s - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()
            n = min(self.max_batch, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._oldest_at = -math.inf  # rows left behind (a backlog) are due at once
            self._cond.notify_all()  # room in the queue for backpressured producers
            return batch

    def _commit(self, batch: list[tuple[str, bytes]]) -> None:
        """Write and fsync a batch, retrying until it succeeds (rows are never dropped)."""
        while True:
            try:
                self._write_batch(batch)
                break
            except OSError:
                log.exception("inference log: writing %d rows failed; retrying in %.1fs", len(batch),
                              self.retry_delay_s)
                time.sleep(self.retry_delay_s)
        with self._cond:
            self._written += len(batch)
            self._cond.notify_all()

    def _write_batch(self, batch: list[tuple[str, bytes]]) -> None:
        by_hour: dict[str, list[bytes]] = {}
        for hour, line in batch:
            by_hour.setdefault(hour, []).append(line)
        for hour, lines in by_hour.items():
            self._append_to_file(hour, b"".join(lines))

    def _append_to_file(self, hour: str, data: bytes) -> None:
        """One write() of ``data`` to this writer's file for ``hour``, then fsync. On failure the file
        is truncated back to where it was, so a retry cannot leave a torn line mid-file."""
        fd = self._fd(hour)
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            written = os.write(fd, data)
            while written < len(data):  # short writes do not happen on local files, but be correct
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:
                log.exception("inference log: could not truncate %s after a failed write", hour)
            raise

    def _fd(self, hour: str) -> int:
        fd = self._fds.get(hour)
        if fd is not None:
            return fd
        hour_dir = self.spool_dir / hour
        new_dir = not hour_dir.is_dir()
        hour_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(hour_dir / self.file_name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fsync_dir(hour_dir)  # make the new file's directory entry durable
            if new_dir:
                fsync_dir(self.spool_dir)
        except OSError:
            os.close(fd)
            raise
        self._fds[hour] = fd
        while len(self._fds) > 2:  # keep the current and the previous hour open (late rows)
            os.close(self._fds.pop(min(self._fds)))
        return fd

    def _close_files(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- readers ------------------------------------------------------------------------------------
def hour_dirs(spool_dir: str | os.PathLike[str]) -> list[str]:
    """The hour folders under ``spool_dir``, oldest first (a missing spool is empty)."""
    root = Path(spool_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _HOUR_DIR.match(p.name))


def read_rows(spool_dir: str | os.PathLike[str], hours: list[str] | None = None) -> tuple[list[dict], int]:
    """(rows, skipped): every complete line of every log file in ``hours`` (default: all hours), by hour,
    file and line order. A line is complete when it ends in a newline and parses; the torn last line a
    crash (or a writer still writing) leaves is skipped and counted, as is any other unparsable line."""
    rows: list[dict] = []
    skipped = 0
    for hour in hour_dirs(spool_dir) if hours is None else hours:
        folder = Path(spool_dir) / hour
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.jsonl")):
            file_rows, file_skipped = _read_file(path)
            rows += file_rows
            skipped += file_skipped
    return rows, skipped


def _read_file(path: Path) -> tuple[list[dict], int]:
    *lines, tail = path.read_bytes().split(b"\n")
    rows, skipped = [], 0
    if tail:
        log.warning("inference log: skipping a torn last line (%d bytes) in %s", len(tail), path)
        skipped += 1
    for i, line in enumerate(lines):
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            log.warning("inference log: skipping unparsable line %d in %s", i + 1, path)
            skipped += 1
    return rows, skipped


def closed_hours(spool_dir: str | os.PathLike[str], now: datetime | None = None,
                 grace_s: float = 0.0) -> list[str]:
    """Hour folders strictly before the current UTC hour (of ``now - grace_s``): no row will be added
    to them any more, given rows are at most ``grace_s`` late. ``now`` must be timezone-aware."""
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None:
        raise ValueError("closed_hours: now must be timezone-aware")
    current = (now.astimezone(UTC) - timedelta(seconds=grace_s)).strftime(HOUR_FORMAT)
    return [h for h in hour_dirs(spool_dir) if h < current]
