"""The batch runner (serving/batch.py) against the real CPU engine: a run SIGKILLed mid-way resumes from its
chunks with no line answered twice and none missing; a transient failure is sent again by the next run."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

from crawl2serve.serving.batch import BatchLine, ChunkStore, HttpSend, run_batch
from tests.serving.helpers import free_port


def lines(model: str, n: int, max_tokens: int) -> list[dict]:
    return [
        {
            "custom_id": f"p{i}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": model, "prompt": f"The library {i}", "max_tokens": max_tokens, "temperature": 0},
        }
        for i in range(n)
    ]


def test_a_killed_run_resumes_with_no_duplicate_and_no_missing_line(tmp_path, cpu_engine, tiny_model):
    n = 12
    source = tmp_path / "lines.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines(tiny_model, n, max_tokens=6)))
    out = tmp_path / "chunks"
    command = [sys.executable, "-m", "crawl2serve.serving", "batch", "--input", str(source), "--out", str(out)]
    command += ["--base-url", cpu_engine.url, "--concurrency", "2", "--chunk-size", "2"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.glob("chunk-*.jsonl")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    written = [r["custom_id"] for r in ChunkStore(out).results()]
    assert 2 <= len(written) < n  # killed mid-run: a chunk written, most lines not
    (out / ".chunk-000099.jsonl.tmp").write_text('{"custom_id": "p0", "half')  # a chunk cut off mid-write
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    report = json.loads(second.stdout)
    assert report["resumed"] == len(written) and report["completed"] == n - len(written)
    answered = [r["custom_id"] for r in ChunkStore(out).results()]
    assert len(answered) == len(set(answered)) == n  # no duplicate, no missing line
    assert set(answered) == {f"p{i}" for i in range(n)}
    assert not list(out.glob(".chunk-*"))
    results = ChunkStore(out).latest()
    assert all(r["status"] == 200 and r["body"]["usage"]["completion_tokens"] == 6 for r in results.values())


def test_a_transient_failure_is_sent_again_by_the_next_run(tmp_path, cpu_engine, tiny_model):
    batch = [BatchLine(x["custom_id"], x["url"], x["body"]) for x in lines(tiny_model, 3, max_tokens=4)]
    store = ChunkStore(tmp_path / "chunks")

    async def run(url: str, retry: bool):
        send = HttpSend(url, attempts=1)
        try:
            return await run_batch(batch, send, store, concurrency=2, chunk_size=2, retry_transient=retry)
        finally:
            await send.aclose()

    down = asyncio.run(run(f"http://127.0.0.1:{free_port()}", retry=False))  # nothing listens there
    assert (down.completed, down.failed) == (0, 3)
    assert {r["status"] for r in store.latest().values()} == {0}
    assert asyncio.run(run(cpu_engine.url, retry=False)).sent == 0  # without retry_transient: answered is answered
    again = asyncio.run(run(cpu_engine.url, retry=True))
    assert (again.resumed, again.completed) == (0, 3)
    assert {r["status"] for r in store.latest().values()} == {200}
