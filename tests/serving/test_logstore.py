"""The inference log: the LogRow schema, validation, hour bucketing, concurrency, group commit, commit
before answer (acks after fsync, bounded when the disk fails), backpressure, durability across SIGKILL,
torn-line tolerance and closed hours."""

import ast
import asyncio
import dataclasses
import errno
import inspect
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

import crawl2serve.serving.gateway.logrow as logrow
import crawl2serve.serving.gateway.logstore as logstore
from crawl2serve.serving.gateway.hours import HOUR_FORMAT, hour_of
from crawl2serve.serving.gateway.logstore import (
    LOG_FIELDS,
    InferenceLog,
    LogRow,
    LogUnavailable,
    read_rows,
    utc_now_iso,
    validate_row,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


DEFAULTS = {f.name: f.default for f in dataclasses.fields(LogRow)}


def make_row(request_id: str = "req-0", **overrides) -> dict:
    row = {
        **DEFAULTS,  # the fields this row leaves at the gateway's defaults
        "request_id": request_id,
        "ts": "2025-03-01T10:15:30.123456+00:00",
        "tenant": "acme",
        "key_id": "k_1",
        "endpoint": "chat.completions",
        "model": "c2s-chat",
        "served_model": "qwen-ft",
        "model_version": "3",
        "adapter": "",
        "engine": "sglang-0",
        "route": "stable",
        "stream": False,
        "status": 200,
        "error": None,
        "prompt": "How do I use itertools.groupby?",
        "output": "Like so.",
        "prompt_tokens": 9,
        "completion_tokens": 3,
        "cost_usd": 0.0001,
        "latency_ms": 12.5,
        "ttft_ms": None,
        "input_verdict": "allow",
        "output_verdict": "allow",
        "verdict_reasons": "",
        "finish_reason": "stop",
        "role": "primary",
        "experiment": "",
        "arm": "",
        "rating": None,
    }
    assert set(row) == set(LOG_FIELDS)
    return row | overrides


def wait_until(pred, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# -- schema ---------------------------------------------------------------------------------------


def test_log_fields_schema():
    assert list(LOG_FIELDS) == [
        "request_id",
        "ts",
        "tenant",
        "key_id",
        "endpoint",
        "model",
        "served_model",
        "model_version",
        "adapter",
        "engine",
        "route",
        "stream",
        "status",
        "error",
        "prompt",
        "output",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "latency_ms",
        "ttft_ms",
        "input_verdict",
        "output_verdict",
        "verdict_reasons",
        "finish_reason",
        "role",
        "experiment",
        "arm",
        "rating",
        "response_format",
        "tool_calls",
        "cache",
        "routing_rule",
        "batch_id",
        "retrieval_version",
        "retrieval_ms",
        "retrieval_hits",
        "retrieval_top_score",
        "retrieval_urls",
        "semantic_cache_similarity",
    ]
    assert LOG_FIELDS["error"] == str | None and LOG_FIELDS["stream"] is bool


def test_log_fields_are_logrow_fields_each_documented():
    assert {f.name: f.type for f in dataclasses.fields(LogRow)} == LOG_FIELDS
    body = ast.parse(inspect.getsource(logrow)).body
    cls = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == "LogRow").body
    documented = {
        a.target.id
        for a, doc in zip(cls, cls[1:])
        if isinstance(a, ast.AnnAssign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
    }
    assert documented == set(LOG_FIELDS)  # a docstring under every field


def test_logrow_json_line_is_the_dict_format_and_parses_back():
    row = make_row(prompt='naïve ☃ "q"\n', ttft_ms=1.5, stream=True)
    line = LogRow.from_json(row).json_line()
    assert line == json.dumps(row, ensure_ascii=False).encode() + b"\n"  # the on-disk format is unchanged
    assert LogRow.from_json(json.loads(line)).to_json() == row
    assert list(LogRow().to_json()) == list(LOG_FIELDS)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"status": "200"}, "'status' must be int, got str"),
        ({"extra": 1}, "unknown inference log field 'extra'"),
        ({"ttft_ms": float("nan")}, "'ttft_ms' must be finite"),
    ],
)
def test_logrow_from_json_names_the_bad_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        LogRow.from_json(make_row(**overrides))
    with pytest.raises(ValueError, match="lacks field 'tenant'"):
        LogRow.from_json({k: v for k, v in make_row().items() if k != "tenant"})


def test_logrow_validates_before_writing():
    row = LogRow(request_id="r", ts=utc_now_iso())
    row.update(status="500")
    with pytest.raises(ValueError, match="'status' must be int, got str"):
        row.json_line()
    with pytest.raises(AttributeError):
        row.update(stauts=500)  # slots: a typo is an error, not a new attribute


def test_unknown_field_rejected(tmp_path):
    with InferenceLog(tmp_path) as log, pytest.raises(ValueError, match="unknown inference log field 'extra'"):
        log.append(make_row(extra=1))


def test_missing_field_rejected(tmp_path):
    row = make_row()
    del row["served_model"]
    with InferenceLog(tmp_path) as log, pytest.raises(ValueError, match="lacks field 'served_model'"):
        log.append(row)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"status": "200"}, "'status' must be int, got str"),
        ({"status": True}, "'status' must be int, got bool"),
        ({"stream": 1}, "'stream' must be bool, got int"),
        ({"error": 5}, r"'error' must be str \| None, got int"),
        ({"latency_ms": float("nan")}, "'latency_ms' must be finite"),
        ({"ttft_ms": float("inf")}, "'ttft_ms' must be finite"),
        ({"prompt": None}, "'prompt' must be str, got NoneType"),
        ({"ts": "yesterday"}, "not an ISO-8601 timestamp"),
        ({"ts": "2025-03-01T10:15:30.123456"}, "no UTC offset"),
    ],
)
def test_bad_values_rejected(tmp_path, overrides, match):
    with InferenceLog(tmp_path) as log, pytest.raises(ValueError, match=match):
        log.append(make_row(**overrides))
    assert log.written == 0


def test_ints_accepted_for_float_fields():
    validate_row(make_row(latency_ms=12, ttft_ms=3))
    validate_row(make_row(ttft_ms=4.5, error="timeout", finish_reason=None))


def test_utc_now_iso_is_a_ts_hour_of_reads():
    ts = utc_now_iso()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", ts)
    assert hour_of(ts) == datetime.fromisoformat(ts).strftime(HOUR_FORMAT)


# -- writing --------------------------------------------------------------------------------------


def test_round_trip_and_file_layout(tmp_path):
    row = make_row(
        prompt='naïve ☃ "quoted"\nnewline',
        stream=True,
        ttft_ms=1.25,
        error="upstream_5xx",
        status=502,
        verdict_reasons="injection:jailbreak;output_too_long",
    )
    with InferenceLog(tmp_path) as log:
        log.append(row)
        log.flush()
        assert log.written == 1 and log.pending == 0
    files = list(tmp_path.rglob("*.jsonl"))
    assert len(files) == 1
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())
    assert files[0].parent.name == "2025-03-01T10"
    assert re.fullmatch(rf"{re.escape(host)}-{os.getpid()}-\d+\.jsonl", files[0].name)
    assert files[0].name == log.file_name
    assert files[0].read_text(encoding="utf-8").count("\n") == 1
    rows, skipped = read_rows(tmp_path)
    assert rows == [row] and skipped == 0


def test_hour_bucketing(tmp_path):
    stamps = {
        "a": "2025-03-01T10:59:59.999999+00:00",
        "b": "2025-03-01T11:00:00.000000+00:00",
        "c": "2025-03-01T13:30:00.000000+02:00",  # 11:30 UTC
        "d": "2025-03-02T00:00:00.000001+00:00",
        "e": "2025-03-01T10:00:00.000000+00:00",  # late row for an hour already written
    }
    with InferenceLog(tmp_path) as log:
        for rid, ts in stamps.items():
            log.append(make_row(rid, ts=ts))
    hours = sorted(p.name for p in tmp_path.iterdir())
    assert hours == ["2025-03-01T10", "2025-03-01T11", "2025-03-02T00"]
    for hour in hours:  # one file per hour for this writer, same name in each
        assert [p.name for p in (tmp_path / hour).iterdir()] == [log.file_name]

    def ids(hour):
        return sorted(r["request_id"] for r in read_rows(tmp_path, [hour])[0])

    assert ids("2025-03-01T10") == ["a", "e"]
    assert ids("2025-03-01T11") == ["b", "c"]
    assert ids("2025-03-02T00") == ["d"]
    assert read_rows(tmp_path, ["2099-01-01T00"]) == ([], 0)


def test_two_writers_never_share_a_file(tmp_path):
    with InferenceLog(tmp_path) as a, InferenceLog(tmp_path) as b:
        a.append(make_row("a"))
        b.append(make_row("b"))
    assert a.file_name != b.file_name
    assert len(list((tmp_path / "2025-03-01T10").iterdir())) == 2
    assert sorted(r["request_id"] for r in read_rows(tmp_path)[0]) == ["a", "b"]


def test_concurrent_appends_exactly_once(tmp_path):
    """8 threads x 500 appends: exactly 4000 rows on disk after flush, all distinct."""
    with InferenceLog(tmp_path, max_batch=128) as log:

        def work(t: int) -> None:
            for i in range(500):
                log.append(make_row(f"t{t}-{i}", ts=utc_now_iso()))

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log.flush()
        assert log.written == 4000 and log.pending == 0
        rows, skipped = read_rows(tmp_path)
    assert skipped == 0
    assert len(rows) == 4000
    assert len({r["request_id"] for r in rows}) == 4000
    # per-thread order is preserved in the file
    for t in range(8):
        mine = [int(r["request_id"].split("-")[1]) for r in rows if r["request_id"].startswith(f"t{t}-")]
        assert mine == list(range(500))


def test_group_commit_batches_and_one_write_per_file(tmp_path):
    calls: list[tuple[str, int]] = []
    with InferenceLog(tmp_path, max_batch=256, flush_interval_s=0.05) as log:
        real = log._append_to_file

        def counting(hour: str, data: bytes) -> None:
            calls.append((hour, data.count(b"\n")))
            real(hour, data)

        log._append_to_file = counting
        for i in range(2000):
            hour = 10 + i % 2  # two hours interleaved: one write per hour per batch
            log.append(make_row(f"r{i}", ts=f"2025-03-01T{hour}:00:00.000000+00:00"))
        log.flush()
    assert sum(n for _, n in calls) == 2000
    assert max(n for _, n in calls) <= 128  # 256 rows per batch, split over 2 hours
    assert len(calls) <= 2 * 2000 / 64  # batched: far fewer writes than rows
    assert read_rows(tmp_path)[0].__len__() == 2000


def test_rows_are_written_within_flush_interval_without_flush(tmp_path):
    with InferenceLog(tmp_path, flush_interval_s=0.02) as log:
        log.append(make_row())
        assert wait_until(lambda: log.written == 1, timeout=1.0)
        assert read_rows(tmp_path)[0][0]["request_id"] == "req-0"


def test_close_drains_everything(tmp_path):
    log = InferenceLog(tmp_path, flush_interval_s=10)  # nothing written before close
    log.start()
    for i in range(1000):
        log.append(make_row(f"r{i}"))
    log.close()
    assert log.written == 1000
    assert len(read_rows(tmp_path)[0]) == 1000
    log.close()  # idempotent


def test_lifecycle_errors(tmp_path):
    log = InferenceLog(tmp_path)
    with pytest.raises(RuntimeError, match="not started"):
        log.append(make_row())
    log.start()
    assert log.start() is log  # once only
    log.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.append(make_row())
    with pytest.raises(RuntimeError, match="closed"):
        log.start()
    with pytest.raises(ValueError, match="max_batch"):
        InferenceLog(tmp_path, max_batch=0)


def test_flush_with_nothing_pending_returns_at_once(tmp_path):
    with InferenceLog(tmp_path) as log:
        log.flush(timeout=0.01)


class StalledWriter:
    """Holds the writer thread inside _write_batch until released."""

    def __init__(self, log: InferenceLog):
        self.entered = threading.Event()
        self.release = threading.Event()
        real = log._write_batch

        def stalled(batch):
            self.entered.set()
            assert self.release.wait(5)
            real(batch)

        log._write_batch = stalled


def test_backpressure_blocks_append_never_drops(tmp_path):
    log = InferenceLog(tmp_path, flush_interval_s=0, max_batch=4, max_pending=5).start()
    stall = StalledWriter(log)
    log.append(make_row("r0"))
    assert stall.entered.wait(2)  # the writer holds r0 in flight
    for i in range(1, 6):
        log.append(make_row(f"r{i}"))  # fills the queue to max_pending
    assert log.pending == 6

    done = threading.Event()

    def producer():
        for i in range(6, 20):
            log.append(make_row(f"r{i}"))
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    assert not done.wait(0.2)  # blocked by backpressure, not dropping
    assert log.pending == 6
    stall.release.set()
    t.join(5)
    assert done.is_set()
    log.flush()
    log.close()
    rows, skipped = read_rows(tmp_path)
    assert [r["request_id"] for r in rows] == [f"r{i}" for i in range(20)] and skipped == 0


def test_flush_times_out_when_writer_is_stuck(tmp_path):
    log = InferenceLog(tmp_path, flush_interval_s=0).start()
    stall = StalledWriter(log)
    log.append(make_row())
    assert stall.entered.wait(2)
    with pytest.raises(TimeoutError, match="1 rows not on disk"):
        log.flush(timeout=0.1)
    stall.release.set()
    log.flush()
    log.close()
    assert log.written == 1


def test_failed_fsync_is_retried_without_duplicates_or_torn_lines(tmp_path, monkeypatch, caplog):
    real_fsync = os.fsync
    failures = []

    def flaky_fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode) and not failures:
            failures.append(fd)
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(logstore.os, "fsync", flaky_fsync)
    monkeypatch.setattr(InferenceLog, "retry_delay_s", 0.01)
    with InferenceLog(tmp_path) as log:
        for i in range(50):
            log.append(make_row(f"r{i}"))
        log.flush()
    assert failures  # the failure happened, after the data had been written once
    rows, skipped = read_rows(tmp_path)
    assert [r["request_id"] for r in rows] == [f"r{i}" for i in range(50)] and skipped == 0
    assert "retrying" in caplog.text


# -- commit before answer ---------------------------------------------------------------------------


class GatedFsync:
    """os.fsync of regular files (not directories) waits for ``gate``; counts calls; fails while ``error``."""

    def __init__(self, monkeypatch):
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls = 0
        self.error: OSError | None = None
        real = os.fsync

        def fsync(fd):
            if stat.S_ISREG(os.fstat(fd).st_mode):
                self.calls += 1
                self.entered.set()
                assert self.gate.wait(10)
                if self.error is not None:
                    raise self.error
            real(fd)

        monkeypatch.setattr(logstore.os, "fsync", fsync)


def log_row(request_id: str, **overrides) -> LogRow:
    return LogRow.from_json(make_row(request_id, **overrides))


def test_commit_returns_only_once_fsynced_without_blocking_the_loop(tmp_path, monkeypatch):
    fsync = GatedFsync(monkeypatch)
    fsync.gate.clear()

    async def main(log):
        task = asyncio.create_task(log.commit(log_row("a")))
        ticks = 0
        while not fsync.entered.is_set():  # the loop keeps running while the writer is inside fsync
            await asyncio.sleep(0.005)
            ticks += 1
        for _ in range(20):
            await asyncio.sleep(0.005)
            ticks += 1
        assert not task.done() and log.written == 0  # written, not yet fsync'ed: no ack
        fsync.gate.set()
        await asyncio.wait_for(task, 5)
        assert log.written == 1
        return ticks

    with InferenceLog(tmp_path, flush_interval_s=60) as log:  # a commit does not wait for the flush interval
        assert asyncio.run(main(log)) >= 20
        assert [r["request_id"] for r in read_rows(tmp_path)[0]] == ["a"]


def test_concurrent_commits_share_fsyncs(tmp_path, monkeypatch):
    fsync = GatedFsync(monkeypatch)

    async def main(log):
        await asyncio.gather(*[log.commit(log_row(f"r{i}", ts=utc_now_iso())) for i in range(500)])

    with InferenceLog(tmp_path, flush_interval_s=60, max_batch=128) as log:
        start = time.monotonic()
        asyncio.run(main(log))
        assert time.monotonic() - start < 5 and log.written == 500 and log.pending == 0
    assert len({r["request_id"] for r in read_rows(tmp_path)[0]}) == 500
    assert fsync.calls <= 500 / 32  # group commit: far fewer fsyncs than rows


def test_commit_times_out_into_log_unavailable_and_the_row_is_queued_as_refused(tmp_path, monkeypatch):
    """A real full disk: the log file is /dev/full (write() fails with ENOSPC). The commit gives up after its
    timeout; the row, rewritten as refused, is written once the disk is back."""
    monkeypatch.setattr(InferenceLog, "retry_delay_s", 0.02)
    log = InferenceLog(tmp_path, flush_interval_s=0)
    hour_dir = tmp_path / "2025-03-01T10"
    hour_dir.mkdir()
    (hour_dir / log.file_name).symlink_to("/dev/full")
    log.start()
    row = log_row("a")

    async def main():
        start = time.monotonic()
        with pytest.raises(LogUnavailable):
            await log.commit(row, timeout=0.3)
        return time.monotonic() - start

    assert 0.3 <= asyncio.run(main()) < 2
    assert (row.status, row.error) == (503, "log_unavailable")  # what the caller answers
    assert log.failing and log.written == 0
    (hour_dir / log.file_name).unlink()  # space again: the retry creates the file anew
    log.flush()
    log.close()
    assert not log.failing
    rows, skipped = read_rows(tmp_path)
    assert skipped == 0 and [(r["request_id"], r["status"], r["error"], r["output"]) for r in rows] == [
        ("a", 503, "log_unavailable", "Like so.")
    ]


@pytest.mark.parametrize("outcome", ["succeeds", "fails"])
def test_commit_timing_out_during_a_write_follows_that_write(tmp_path, monkeypatch, outcome):
    """The timeout falls while the row's write is in progress: the row is as that write left it, the commit
    says the same (acknowledged if it succeeded, LogUnavailable and the row queued as refused if not)."""
    monkeypatch.setattr(InferenceLog, "retry_delay_s", 0.02)
    fsync = GatedFsync(monkeypatch)
    fsync.gate.clear()
    row = log_row("a")

    async def main(log):
        task = asyncio.create_task(log.commit(row, timeout=0.1))
        while not fsync.entered.is_set():
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)  # past the timeout, the write still in progress
        assert not task.done()
        if outcome == "fails":
            fsync.error = OSError(errno.EIO, "Input/output error")
        fsync.gate.set()
        try:
            await asyncio.wait_for(task, 5)
        except LogUnavailable:
            fsync.error = None
            return "refused"
        return "committed"

    with InferenceLog(tmp_path) as log:
        result = asyncio.run(main(log))
    rows = read_rows(tmp_path)[0]
    if outcome == "succeeds":
        assert result == "committed" and (rows[0]["status"], row.status) == (200, 200)
    else:
        assert result == "refused" and (rows[0]["status"], rows[0]["error"]) == (503, "log_unavailable")
    assert len(rows) == 1


def test_commit_refuses_at_once_when_max_pending_rows_wait(tmp_path, monkeypatch):
    fsync = GatedFsync(monkeypatch)
    fsync.gate.clear()
    log = InferenceLog(tmp_path, flush_interval_s=0, max_batch=1, max_pending=2).start()

    async def main():
        first = asyncio.create_task(log.commit(log_row("in-flight")))
        while not fsync.entered.is_set():
            await asyncio.sleep(0.005)
        queued = [asyncio.create_task(log.commit(log_row(f"q{i}"))) for i in range(2)]
        await asyncio.sleep(0.01)
        row = log_row("over")
        with pytest.raises(LogUnavailable):
            await log.commit(row)
        assert (row.status, row.error, log.dropped) == (503, "log_unavailable", 1)
        fsync.gate.set()
        await asyncio.gather(first, *queued)

    asyncio.run(main())
    log.close()
    assert [r["request_id"] for r in read_rows(tmp_path)[0]] == ["in-flight", "q0", "q1"]


def test_a_cancelled_commit_still_writes_its_row(tmp_path, monkeypatch, caplog):
    fsync = GatedFsync(monkeypatch)
    fsync.gate.clear()

    async def main(log):
        task = asyncio.create_task(log.commit(log_row("left")))
        while not fsync.entered.is_set():
            await asyncio.sleep(0.005)
        task.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await task
        fsync.gate.set()
        await log.commit(log_row("next"))

    with InferenceLog(tmp_path) as log:
        asyncio.run(main(log))
    assert [r["request_id"] for r in read_rows(tmp_path)[0]] == ["left", "next"]
    assert "exception was never retrieved" not in caplog.text


def test_commit_validates_and_needs_a_running_log(tmp_path):
    log = InferenceLog(tmp_path)
    with pytest.raises(RuntimeError, match="not started"):
        asyncio.run(log.commit(log_row("a")))
    log.start()
    with pytest.raises(ValueError, match="'status' must be int"):
        asyncio.run(log.commit(make_row(status="x")))
    asyncio.run(log.commit(make_row("dict")))  # a dict is taken too
    log.close()
    assert [r["request_id"] for r in read_rows(tmp_path)[0]] == ["dict"]


# -- reading --------------------------------------------------------------------------------------


def write_lines(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_torn_last_line_is_skipped_and_counted(tmp_path):
    good = [json.dumps(make_row(f"r{i}")) for i in range(3)]
    torn = json.dumps(make_row("r3"))[:40]
    write_lines(tmp_path / "2025-03-01T10" / "h-1-1.jsonl", "\n".join(good) + "\n" + torn)
    write_lines(tmp_path / "2025-03-01T10" / "h-2-2.jsonl", good[0] + "\n")
    rows, skipped = read_rows(tmp_path)
    assert [r["request_id"] for r in rows] == ["r0", "r1", "r2", "r0"]
    assert skipped == 1


def test_complete_json_without_newline_counts_as_torn(tmp_path):
    """The newline is part of the write: a line without it was cut short, even if it parses."""
    write_lines(tmp_path / "2025-03-01T10" / "h.jsonl", json.dumps(make_row("a")) + "\n" + '{"x": 1}')
    rows, skipped = read_rows(tmp_path)
    assert [r["request_id"] for r in rows] == ["a"] and skipped == 1


def test_garbage_lines_and_blank_lines(tmp_path, caplog):
    write_lines(tmp_path / "2025-03-01T10" / "h.jsonl", '{"request_id": "a"}\n\n{garbage\n{"request_id": "b"}\n')
    rows, skipped = read_rows(tmp_path)
    assert [r["request_id"] for r in rows] == ["a", "b"] and skipped == 1
    assert "unparsable line 3" in caplog.text


def test_read_rows_ignores_foreign_entries(tmp_path):
    write_lines(tmp_path / "2025-03-01T10" / "h.jsonl", '{"request_id": "a"}\n')
    write_lines(tmp_path / "2025-03-01T10" / "notes.txt", "not a log\n")
    write_lines(tmp_path / "tmp" / "h.jsonl", '{"request_id": "x"}\n')
    (tmp_path / "README").write_text("hi")
    assert read_rows(tmp_path) == ([{"request_id": "a"}], 0)
    assert read_rows(tmp_path / "missing") == ([], 0)


def test_read_while_writing_sees_only_complete_lines(tmp_path):
    """A reader racing the writer never gets a partial row, only (at worst) a skipped torn tail."""
    with InferenceLog(tmp_path, flush_interval_s=0.001, max_batch=16) as log:
        stop = threading.Event()

        def produce():
            i = 0
            while not stop.is_set() and i < 5000:
                log.append(make_row(f"r{i}", prompt="x" * 2000))
                i += 1

        t = threading.Thread(target=produce)
        t.start()
        seen = 0
        for _ in range(20):
            rows, skipped = read_rows(tmp_path)
            assert skipped <= 1
            assert all(set(r) == set(LOG_FIELDS) for r in rows)
            assert len(rows) >= seen
            seen = len(rows)
        stop.set()
        t.join()


# -- durability across a crash -----------------------------------------------------------------------

CHILD = r"""
import sys
from crawl2serve.serving.gateway.logstore import InferenceLog

def row(i):
    return {"request_id": f"r{i}", "ts": "2025-03-01T10:00:00.000000+00:00", "tenant": "t", "key_id": "k",
            "endpoint": "completions", "model": "m", "served_model": "m", "model_version": "1", "adapter": "",
            "engine": "e", "route": "stable", "stream": False, "status": 200, "error": None, "prompt": "p" * 500,
            "output": "o", "prompt_tokens": 1, "completion_tokens": 1, "cost_usd": 0.0, "latency_ms": 1.0, "ttft_ms": None,
            "input_verdict": "allow", "output_verdict": "allow", "verdict_reasons": "", "finish_reason": "stop",
            "role": "primary", "experiment": "", "arm": "", "rating": None, "response_format": "", "tool_calls": "",
            "cache": "", "routing_rule": "", "batch_id": "", "retrieval_version": "", "retrieval_ms": None,
            "retrieval_hits": None, "retrieval_top_score": None, "retrieval_urls": "", "semantic_cache_similarity": None}

log = InferenceLog(sys.argv[1], flush_interval_s=60, max_batch=64).start()
for i in range(300):
    log.append(row(i))
log.flush()
print("flushed", flush=True)
i = 300
while True:  # keep the writer busy until killed
    log.append(row(i))
    i += 1
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_flushed_rows_survive_sigkill(tmp_path):
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "flushed", child.stderr.read()
        time.sleep(0.05)  # let it get some batches in flight
        child.send_signal(signal.SIGKILL)
        assert child.wait(5) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    rows, skipped = read_rows(tmp_path)
    ids = [r["request_id"] for r in rows]
    assert ids[:300] == [f"r{i}" for i in range(300)]  # everything flushed is there, in order
    assert len(ids) == len(set(ids)) and ids == [f"r{i}" for i in range(len(ids))]
    assert skipped <= 1  # at most the line being written when the kill landed
