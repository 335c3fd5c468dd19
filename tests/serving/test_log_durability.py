"""The gateway is SIGKILLed under load: every request a client got a complete answer for (a JSON completion, a
stream through ``data: [DONE]``, an error response) has its row in the inference log.

Real processes: the CPU engine on the tiny model, the gateway as its own process, clients in threads.
"""

import os
import signal
import threading
import time

import httpx

from serving.gateway.logstore import read_rows
from tests.serving.helpers import start_gateway

CLIENTS = 8
KILL_AFTER = 600  # acknowledged requests before the kill


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
                    if r.status_code == 200 and lines and lines[-1] == "data: [DONE]" \
                            and not any('"error"' in line for line in lines):
                        acked.append(r.headers["x-request-id"])
                else:  # rejected by validation: an answer, and a row
                    r = http.post("/v1/completions", json={**body, "max_tokens": 10**6})
                    if r.status_code == 400 and r.json()["error"]["code"] == "max_tokens_too_large":
                        acked.append(r.headers["x-request-id"])
            except httpx.TransportError:  # the gateway is gone: this request was not answered
                if not stop.is_set():
                    time.sleep(0.01)
            except Exception as exc:  # noqa: BLE001 — reported by the test
                errors.append(repr(exc))
                return


def test_sigkill_under_load_loses_no_acknowledged_row(tmp_path, cpu_engine, tiny_model):
    gw = start_gateway(tmp_path / "gw", [("primary", cpu_engine.url)], tiny_model,
                       tiers={"pro": {"requests_per_minute": 1e9, "tokens_per_minute": 1e12}})
    acked: list[str] = []
    errors: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=client, args=(gw.url, gw.key, n, acked, stop, errors), daemon=True)
               for n in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 40
        while len(acked) < KILL_AFTER and time.monotonic() < deadline and not errors:
            time.sleep(0.01)
        os.killpg(gw.pid, signal.SIGKILL)  # a crash under load, not a shutdown
        time.sleep(0.5)  # answers already on their way are still read
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        gw.stop()
    assert not errors, errors[:3]
    assert len(acked) >= KILL_AFTER, f"only {len(acked)} answers before the deadline"
    rows, skipped = read_rows(gw.settings.log_dir)
    logged = {r["request_id"] for r in rows}
    lost = [rid for rid in acked if rid not in logged]
    print(f"acknowledged {len(acked)}, rows {len(rows)}, torn {skipped}, lost {len(lost)}")
    assert not lost, f"{len(lost)} of {len(acked)} answered requests have no row"
    assert skipped <= 1
