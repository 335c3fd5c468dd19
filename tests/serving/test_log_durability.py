"""No answer without its row: the gateway SIGKILLed under load loses no row of a request a client got a complete
answer for (a JSON completion, a stream through ``data: [DONE]``, an error response); a row that cannot be
committed turns its request into a 503 log_unavailable.

Real processes: the CPU engine on the tiny model, the gateway as its own process, clients in threads.
"""

import json
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from crawl2serve.serving.gateway.hours import HOUR_FORMAT
from crawl2serve.serving.gateway.logstore import read_rows
from tests.serving.helpers import start_gateway

CLIENTS = 8
KILL_AFTER = 600  # acknowledged requests before the kill (or 40 s: a loaded machine answers fewer)
MIN_ACKED = 100  # what the assertions need to mean something: many answers in flight from 8 clients


def client(url: str, key: str, n: int, acked: list[str], stop: threading.Event, errors: list[str]) -> None:
    """Sends requests in turn (a completion, a stream, a rejected request) until ``stop``; records the request id
    of every answer received whole."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        i = 0
        while not stop.is_set():
            kind = (n + i) % 3
            i += 1
            body = {"model": "crawl2serve", "prompt": f"The committee {n} {i}", "max_tokens": 2}
            try:
                if kind == 0:
                    r = http.post("/v1/completions", json=body)
                    if r.status_code == 200 and r.json()["id"] == r.headers["x-request-id"]:
                        acked.append(r.headers["x-request-id"])
                elif kind == 1:
                    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
                        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
                    if (
                        r.status_code == 200
                        and lines
                        and lines[-1] == "data: [DONE]"
                        and not any('"error"' in line for line in lines)
                    ):
                        acked.append(r.headers["x-request-id"])
                else:  # rejected by validation: an answer, and a row
                    r = http.post("/v1/completions", json={**body, "max_tokens": 10**6})
                    if r.status_code == 400 and r.json()["error"]["code"] == "max_tokens_too_large":
                        acked.append(r.headers["x-request-id"])
            except httpx.TransportError:  # the gateway is gone: this request was not answered
                if not stop.is_set():
                    time.sleep(0.01)
            except Exception as exc:
                errors.append(repr(exc))
                return


def test_sigkill_under_load_loses_no_acknowledged_row(tmp_path, cpu_engine, tiny_model):
    gw = start_gateway(
        tmp_path / "gw",
        [("primary", cpu_engine.url)],
        tiny_model,
        tiers={"pro": {"requests_per_minute": 1e9, "tokens_per_minute": 1e12}},
    )
    acked: list[str] = []
    errors: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=client, args=(gw.url, gw.key, n, acked, stop, errors), daemon=True)
        for n in range(CLIENTS)
    ]
    try:
        for t in threads:
            t.start()
        started = time.monotonic()
        deadline = started + 40
        while len(acked) < KILL_AFTER and time.monotonic() < deadline and not errors:
            time.sleep(0.01)
        os.killpg(gw.pid, signal.SIGKILL)  # a crash under load, not a shutdown
        load_s = time.monotonic() - started
        time.sleep(0.5)  # answers already on their way are still read
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        gw.stop()
    assert not errors, errors[:3]
    assert len(acked) >= MIN_ACKED, f"only {len(acked)} answers in 40 s"  # a count of answers, not a speed
    rows, skipped = read_rows(gw.settings.log_dir)
    logged = {r["request_id"] for r in rows}
    lost = [rid for rid in acked if rid not in logged]
    print(f"acknowledged {len(acked)} in {load_s:.1f} s, rows {len(rows)}, torn {skipped}, lost {len(lost)}")
    assert not lost, f"{len(lost)} of {len(acked)} answered requests have no row"
    assert skipped <= 1


def test_a_row_that_cannot_be_committed_is_a_503_not_an_answer(tmp_path, cpu_engine, tiny_model):
    """The spool's hour folder cannot be created (a file is in its way): requests wait ``log_commit_timeout_s``,
    then get 503 log_unavailable (a stream: that error and no [DONE]); /ready says the log fails. Once the
    folder can be made, the rows are written, saying 503 log_unavailable."""
    gw = start_gateway(tmp_path / "gw", [("primary", cpu_engine.url)], tiny_model, log_commit_timeout_s=0.5)
    spool = Path(gw.settings.log_dir)
    now = datetime.now(UTC)
    blockers = [spool / (now + timedelta(hours=h)).strftime(HOUR_FORMAT) for h in (0, 1)]
    spool.mkdir(parents=True, exist_ok=True)
    for path in blockers:
        path.write_text("not a folder")
    headers = {"Authorization": f"Bearer {gw.key}"}
    body = {"model": "crawl2serve", "prompt": "The committee", "max_tokens": 2}
    try:
        with httpx.Client(base_url=gw.url, headers=headers, timeout=30) as http:
            start = time.monotonic()
            r = http.post("/v1/completions", json=body)
            assert 0.5 <= time.monotonic() - start < 10
            assert r.status_code == 503 and r.json()["error"]["code"] == "log_unavailable", r.text
            assert r.headers["retry-after"] == "5"
            ids = [r.headers["x-request-id"]]
            with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
                lines = [line for line in s.iter_lines() if line.startswith("data: ")]
            assert json.loads(lines[-1][6:])["error"]["code"] == "log_unavailable"
            assert "data: [DONE]" not in lines
            ids.append(s.headers["x-request-id"])
            r = http.post("/v1/completions", json={**body, "max_tokens": 10**6})  # an error answer waits too
            assert r.status_code == 503 and r.json()["error"]["code"] == "log_unavailable"
            ids.append(r.headers["x-request-id"])
            ready = http.get("/ready")
            assert ready.status_code == 503 and ready.json()["log"] == "failing"

            for path in blockers:  # the disk is back
                path.unlink()
            r = http.post("/v1/completions", json=body)
            assert r.status_code == 200
            assert http.get("/ready").json()["log"] == "ok"
        rows = {row["request_id"]: row for row in read_rows(spool)[0]}
        assert [(rows[i]["status"], rows[i]["error"]) for i in ids] == [(503, "log_unavailable")] * 3
        assert rows[r.headers["x-request-id"]]["status"] == 200
    finally:
        gw.stop()
