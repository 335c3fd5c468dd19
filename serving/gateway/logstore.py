"""The inference log: every request/response the gateway serves, one :class:`~serving.gateway.logrow.LogRow`
appended as one JSON line, batched, fsync'ed.

Layout::

    <spool_dir>/<YYYY-MM-DDTHH>/<hostname>-<pid>-<start_ns>.jsonl

The hour folder is the UTC hour of each row's ``ts``; each writer (one :class:`InferenceLog`, i.e. one
gateway process) has its own file per hour, so writers never share a file and never need a lock.

Writing: the caller's thread validates and serializes the row and queues it; one background thread takes
up to ``max_batch`` queued rows at a time and writes them with a single ``write()`` per file followed by
``fsync`` (group commit). A failed write (disk full, I/O error) is truncated back and retried every
``retry_delay_s``, so a queued row is never dropped and never duplicated.

Durability, two ways in:

- :meth:`InferenceLog.commit` (the gateway, before it answers) returns once the row's batch is
  fsync'ed, without blocking the event loop. A commit makes the writer start a batch at once (no
  ``flush_interval_s`` wait); commits arriving during that fsync share the next one. So an answered request's
  row survives a crash or SIGKILL. If the row cannot be committed within ``commit_timeout_s`` (the disk keeps
  failing), commit raises :class:`LogUnavailable` and the row will not be written as given: it stays queued
  rewritten as refused (``status`` 503, ``error`` ``"log_unavailable"``), which is what the caller must then
  answer; when ``max_pending`` rows already wait, it is refused at once and dropped (``dropped``). The
  promise is the gateway's: no answer without its row on disk.
- :meth:`InferenceLog.append` only enqueues (it blocks only when more than ``max_pending`` rows wait:
  backpressure). Such a row is durable once :meth:`InferenceLog.flush` has returned, or at most
  ``flush_interval_s`` plus one fsync after ``append``; a crash loses the rows not yet fsync'ed.

A crash in the middle of a ``write()`` can leave a torn last line (never a committed one), which
:func:`read_rows` skips and counts. Readers should treat rows as arriving up to one request's duration late
(``ts`` is when the request arrived), see ``grace_s`` in :func:`serving.gateway.hours.closed_hours`.
"""

import asyncio
import atexit
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .hours import hour_dirs, hour_of
from .logrow import LOG_FIELDS, LogRow, validate_row

__all__ = [
    "LOG_FIELDS",
    "InferenceLog",
    "LogRow",
    "LogUnavailable",
    "fsync_dir",
    "read_rows",
    "utc_now_iso",
    "validate_row",
]

log = logging.getLogger(__name__)


def utc_now_iso() -> str:
    """The current time as the log's ``ts``: ISO-8601, UTC, microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "host"


class LogUnavailable(Exception):
    """:meth:`InferenceLog.commit` could not commit the row in time. The row will not be written as given:
    it stays queued marked as refused (``status`` 503, ``error`` ``"log_unavailable"``, also set on the
    caller's row), or, when ``max_pending`` rows already wait, it is dropped (counted in ``dropped``)."""


REFUSED_STATUS = 503
REFUSED_ERROR = "log_unavailable"


class _Entry:
    """One queued row: its hour folder and JSON line; for :meth:`InferenceLog.commit`, the waiter."""

    __slots__ = ("hour", "line", "row", "loop", "waiter", "committed", "writing", "abandoned")

    def __init__(
        self,
        hour: str,
        line: bytes,
        row: LogRow,
        loop: asyncio.AbstractEventLoop | None = None,
        waiter: asyncio.Future | None = None,
    ):
        self.hour, self.line, self.row, self.loop, self.waiter = hour, line, row, loop, waiter
        self.committed = waiter is not None  # queued by commit(): write it at once
        self.writing = False  # in the write() + fsync being attempted right now
        self.abandoned = False  # its commit timed out while it was being written: refuse it if that fails


def _refused_line(row: LogRow) -> bytes:
    return dataclasses.replace(row, status=REFUSED_STATUS, error=REFUSED_ERROR).json_line()


def _settle(waiters: list[asyncio.Future], error: LogUnavailable | None) -> None:
    """Resolve commit waiters (on their event loop)."""
    for fut in waiters:
        if not fut.done():  # a cancelled commit (the client left) has nobody waiting
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)


class InferenceLog:
    """Append-only, batched, fsync'ed JSONL log of inference rows, written by one background thread.

    ``with InferenceLog(dir) as log: log.append(row)`` (or ``await log.commit(row)``); or ``start()`` …
    ``close()``.
    """

    retry_delay_s = 0.5  # pause before retrying a batch whose write failed (disk full, I/O error)

    def __init__(
        self,
        spool_dir: str | os.PathLike[str],
        flush_interval_s: float = 0.05,
        max_batch: int = 512,
        max_pending: int = 100_000,
        commit_timeout_s: float = 10.0,
    ):
        if flush_interval_s < 0 or max_batch < 1 or max_pending < 1 or commit_timeout_s < 0:
            raise ValueError(
                f"need flush_interval_s >= 0, max_batch >= 1, max_pending >= 1, commit_timeout_s >= 0;"
                f" got {flush_interval_s}, {max_batch}, {max_pending}, {commit_timeout_s}"
            )
        self.spool_dir = Path(spool_dir)
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.commit_timeout_s = commit_timeout_s
        self.file_name = f"{_safe_name(socket.gethostname())}-{os.getpid()}-{time.time_ns()}.jsonl"
        self._cond = threading.Condition()
        self._queue: deque[_Entry] = deque()
        self._oldest_at = 0.0  # monotonic time the oldest queued row arrived in an empty queue
        self._appended = 0
        self._written = 0
        self._flush_waiters = 0
        self._committers = 0  # queued rows whose commit() waits: the writer writes at once, no flush interval
        self._failing = False
        self._dropped = 0
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

    @property
    def failing(self) -> bool:
        """True while the last write attempt failed (rows wait; commits time out into :class:`LogUnavailable`)."""
        return self._failing

    @property
    def dropped(self) -> int:
        """Rows refused by :meth:`commit` with ``max_pending`` rows already waiting: never written."""
        return self._dropped

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
    def append(self, row: LogRow | dict[str, Any]) -> None:
        """Validate and enqueue one row, without waiting for it to be written (blocks only while
        ``max_pending`` rows wait: backpressure). Durable after :meth:`flush`, or within
        ``flush_interval_s`` plus one fsync."""
        entry = self._entry(row)
        with self._cond:
            while True:
                self._check_running()
                if len(self._queue) < self.max_pending:
                    break
                self._cond.wait()
            self._enqueue(entry)

    async def commit(self, row: LogRow | dict[str, Any], timeout: float | None = None) -> None:
        """Validate and enqueue one row; return once it is fsync'ed. Never blocks the event loop.

        Rows committed together share one write + fsync (group commit): the writer starts a batch as soon
        as a commit waits, and the rows that arrive during that fsync make the next batch.
        ``timeout`` (default ``commit_timeout_s``; ``math.inf``: no limit) bounds the wait while the disk
        fails: then :class:`LogUnavailable` is raised and the row will not be written as given (see there);
        a row being written when the time runs out waits for that attempt's outcome. ``row`` must not
        change until this returns. Raises ValueError for an invalid row, RuntimeError when not running.
        """
        timeout = self.commit_timeout_s if timeout is None else timeout
        if isinstance(row, dict):
            row = LogRow.from_json(row)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        entry = self._entry(row, loop, waiter)
        with self._cond:
            self._check_running()
            if len(self._queue) >= self.max_pending:
                self._dropped += 1
                log.error(
                    "inference log: %d rows wait (writer failing: %s); refusing request %s",
                    len(self._queue),
                    self._failing,
                    row.request_id,
                )
                row.update(status=REFUSED_STATUS, error=REFUSED_ERROR)
                raise LogUnavailable(f"{len(self._queue)} inference log rows wait to be written")
            self._committers += 1
            self._enqueue(entry)
        try:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), None if math.isinf(timeout) else timeout)
                return
            except TimeoutError:
                with self._cond:
                    if entry.waiter is None:
                        pass  # the writer has just settled it: the result is on its way
                    elif entry.writing:
                        entry.abandoned = True  # written, or refused if this attempt fails
                    else:  # queued, or between two failed attempts
                        self._refuse(entry)
                await waiter
        except LogUnavailable:
            row.update(status=REFUSED_STATUS, error=REFUSED_ERROR)
            raise
        except asyncio.CancelledError:
            waiter.cancel()  # the row is still written; nobody waits for it
            raise

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
                        raise TimeoutError(f"inference log: {target - self._written} rows not on disk after {timeout}s")
                    self._cond.wait(left)
            finally:
                self._flush_waiters -= 1

    @staticmethod
    def _entry(
        row: LogRow | dict[str, Any],
        loop: asyncio.AbstractEventLoop | None = None,
        waiter: asyncio.Future | None = None,
    ) -> _Entry:
        """Validate and serialize in the caller's thread (the writer only writes)."""
        if isinstance(row, dict):
            row = LogRow.from_json(row)
        line = row.json_line()
        return _Entry(hour_of(row.ts), line, row, loop, waiter)

    def _check_running(self) -> None:
        if self._closing:
            raise RuntimeError("inference log is closed")
        if self._thread is None:
            raise RuntimeError("inference log not started: call start() or use it as a context manager")

    def _enqueue(self, entry: _Entry) -> None:
        """Queue ``entry`` (holding the lock) and wake the writer when it has something to do."""
        if not self._queue:
            self._oldest_at = time.monotonic()
        self._queue.append(entry)
        self._appended += 1
        if len(self._queue) == 1 or len(self._queue) >= self.max_batch or entry.committed:
            self._cond.notify_all()

    def _refuse(self, entry: _Entry) -> None:
        """(Holding the lock, the entry not being written.) Its commit gave up: queue it as refused instead."""
        entry.line = _refused_line(entry.row)
        waiter, loop, entry.waiter = entry.waiter, entry.loop, None
        assert waiter is not None and loop is not None
        error = LogUnavailable(f"inference log row not written in time (writer failing: {self._failing})")
        if threading.current_thread() is self._thread:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, [waiter], error)
        else:  # the commit's own event loop thread
            _settle([waiter], error)

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

    def _next_batch(self) -> list[_Entry] | None:
        """Wait for a batch worth writing: ``max_batch`` rows, a commit, a flush or close, or the oldest row
        having waited ``flush_interval_s``. None once closing with nothing left."""
        with self._cond:
            while True:
                if self._queue and (
                    self._closing or self._flush_waiters or self._committers or len(self._queue) >= self.max_batch
                ):
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
            self._committers -= sum(e.committed for e in batch)
            self._oldest_at = -math.inf  # rows left behind (a backlog) are due at once
            self._cond.notify_all()  # room in the queue for backpressured producers
            return batch

    def _commit(self, batch: list[_Entry]) -> None:
        """Write and fsync a batch, retrying until it succeeds (a row is never dropped once queued); then
        wake the commits waiting for it, one call per event loop."""
        while True:
            with self._cond:
                for e in batch:
                    e.writing = True
            try:
                self._write_batch(batch)
                break
            except OSError:
                log.exception(
                    "inference log: writing %d rows failed; retrying in %.1fs", len(batch), self.retry_delay_s
                )
                with self._cond:
                    self._failing = True
                    for e in batch:
                        e.writing = False
                        if e.abandoned and e.waiter is not None:
                            self._refuse(e)
                time.sleep(self.retry_delay_s)
        waiters: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
        with self._cond:
            self._failing = False
            self._written += len(batch)
            for e in batch:
                if e.waiter is not None and e.loop is not None:
                    waiters.setdefault(e.loop, []).append(e.waiter)
                    e.waiter = None
            self._cond.notify_all()
        for loop, futures in waiters.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, futures, None)

    def _write_batch(self, batch: list[_Entry]) -> None:
        by_hour: dict[str, list[bytes]] = {}
        for e in batch:
            by_hour.setdefault(e.hour, []).append(e.line)
        for hour, lines in by_hour.items():
            self._append_to_file(hour, b"".join(lines))

    def _append_to_file(self, hour: str, data: bytes) -> None:
        """One write() of ``data`` to this writer's file for ``hour``, then fsync. On failure the file
        is truncated back to where it was, so a retry cannot leave a torn line mid-file, and closed: the
        retry opens it again (a file removed or replaced meanwhile is created anew)."""
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
            del self._fds[hour]
            with contextlib.suppress(OSError):
                os.close(fd)
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
