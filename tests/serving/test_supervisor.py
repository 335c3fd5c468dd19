"""Engine supervisors as real processes: a supervised CPU engine SIGKILLed under load behind the gateway comes
back with nobody acting; fake engines that crash, never start, or outgrow their memory limit."""

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from crawl2serve.serving.backoff import RestartPolicy
from crawl2serve.serving.deploy import Deployment, EngineConfig, Release
from crawl2serve.serving.engines import EngineHandle, alive, tree_rss_mb
from crawl2serve.serving.supervisor import read_state
from tests.serving.helpers import fake_engine_script, free_port, start_gateway

RESUME_WITHIN_S = 30.0  # restart delay 0.5 s + the engine's start (~3 s here) + the breaker's reset (1 s)


@pytest.fixture
def supervised(tmp_path, tiny_base):
    deployment = Deployment(
        str(tmp_path / "state"), log=lambda m: None, restart_policy=RestartPolicy(base_delay_s=0.5, reset_after_s=60.0)
    )
    cfg = EngineConfig(
        name="primary",
        backend="cpu",
        python=sys.executable,
        port=free_port(),
        startup_timeout_s=120,
        extra_args=[],
        memory_budget_mb=2048,
    )  # the resource's defaults
    handle, _ = deployment.ensure_engine(cfg, Release("1", "", tiny_base))
    gateways = []
    yield deployment, handle, gateways
    for gw in gateways:
        gw.stop()
    deployment.stop_all()


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)
    return predicate()


def load(url: str, key: str, stop: threading.Event, outcomes: list) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            try:
                r = client.post(
                    url + "/v1/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "crawl2serve", "prompt": "The module", "max_tokens": 8},
                )
                outcomes.append((time.monotonic(), r.status_code))
            except httpx.HTTPError:
                outcomes.append((time.monotonic(), 0))
            stop.wait(0.05)


def test_engine_killed_under_load_is_restarted_and_traffic_resumes(tmp_path, supervised):
    deployment, handle, gateways = supervised
    supervisor_pid = handle.pid
    assert wait_for(lambda: deployment.supervision("primary").get("state") == "healthy", 10)
    before = deployment.supervision("primary")
    assert before["state"] == "healthy" and before["restarts"] == 0 and alive(before["engine_pid"])
    gw = start_gateway(
        tmp_path / "gw",
        [("primary", handle.url)],
        handle.models["base"],
        breaker={"failure_threshold": 2, "reset_timeout_s": 1.0},
        retry={"attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.05},
    )
    gateways.append(gw)
    key, _ = gw.keys.add("load", "enterprise")  # no rate limit in the way
    time.sleep(1.1)  # the gateway re-reads its keys within a second
    stop, outcomes = threading.Event(), []
    pool = ThreadPoolExecutor(4)
    try:
        for _ in range(4):
            pool.submit(load, gw.url, key, stop, outcomes)
        deadline = time.monotonic() + 30
        while sum(s == 200 for _, s in outcomes) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sum(s == 200 for _, s in outcomes) >= 20, outcomes[-5:]

        killed_at = time.monotonic()
        os.kill(before["engine_pid"], signal.SIGKILL)  # the engine, not its supervisor

        def resumed() -> bool:  # requests failed after the kill, and the latest ones succeed again
            after = [status for t, status in outcomes if t > killed_at]
            return any(status != 200 for status in after) and after[-3:] == [200] * 3

        assert wait_for(resumed, RESUME_WITHIN_S), (
            f"traffic did not resume within {RESUME_WITHIN_S} s of the kill: {outcomes[-5:]}"
        )
    finally:
        stop.set()
        pool.shutdown(wait=True)
    ready = httpx.get(gw.url + "/ready")
    assert ready.status_code == 200 and ready.json()["ready"], ready.text
    state = deployment.supervision("primary")
    assert state["state"] == "healthy" and state["restarts"] == 1 and state["last_restart_at"]
    assert state["last_exit"]["signal"] == signal.SIGKILL and state["last_exit"]["reason"] == "exited"
    assert state["supervisor_pid"] == supervisor_pid and alive(supervisor_pid), "the supervisor itself lived on"
    engine_pid = state["engine_pid"]
    assert engine_pid != before["engine_pid"] and alive(engine_pid)
    assert tree_rss_mb(engine_pid) < 2048, "the restarted engine is bounded too"
    gw.stop()
    deployment.stop_all()
    assert not alive(supervisor_pid) and not alive(engine_pid), "stopping the supervisor stops its engine"
    assert deployment.supervision("primary")["state"] == "stopped"


FAKE_ENGINE = fake_engine_script("""time.sleep(0.5)
ballast = bytearray(int(sys.argv[2]) * 2**20)  # touched: resident
time.sleep(float(sys.argv[3]))
sys.exit(3)
""")


def supervise(tmp_path, engine_args: list[str], *extra: str, script: str = FAKE_ENGINE) -> tuple[int, dict, str]:
    """``python -m crawl2serve.serving supervise`` of a fake engine (``/health``, then ``engine_args``: MB to hold and
    seconds to live before exiting 3) until the supervisor exits; returns (its exit code, its state, its log)."""
    (tmp_path / "engine.py").write_text(script)
    port = free_port()
    state = tmp_path / "state.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "crawl2serve.serving",
            "supervise",
            "--name",
            "fake",
            "--backend",
            "cpu",
            "--url",
            f"http://127.0.0.1:{port}",
            "--state-file",
            str(state),
            "--base-delay-s",
            "0.05",
            "--max-fast-crashes",
            "3",
            "--startup-timeout-s",
            "20",
            *extra,
            "--",
            sys.executable,
            str(tmp_path / "engine.py"),
            str(port),
            *engine_args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.returncode, read_state(state), out.stdout + out.stderr


def test_an_engine_that_keeps_crashing_is_given_up_and_said_so(tmp_path):
    code, state, log = supervise(tmp_path, ["0", "0.2"])
    assert code == 1 and state["state"] == "gave_up" and state["restarts"] == 2, log
    assert state["last_exit"] == {**state["last_exit"], "code": 3, "signal": None, "reason": "exited"}
    assert "3 crashes in a row within 120 s of starting; giving up" in log


def test_an_engine_that_never_becomes_healthy_is_not_restarted(tmp_path):
    code, state, log = supervise(tmp_path, [], script="raise SystemExit(3)")
    assert code == 1 and state["state"] == "failed" and state["restarts"] == 0, log
    assert state["last_exit"]["code"] == 3 and "before it was ever healthy: not restarting" in log


def test_an_engine_past_its_memory_limit_is_restarted(tmp_path):
    code, state, log = supervise(tmp_path, ["300", "30"], "--max-rss-mb", "200")
    assert code == 1 and state["state"] == "gave_up" and state["restarts"] == 2, log
    assert state["last_exit"]["signal"] == signal.SIGKILL and state["last_exit"]["reason"].startswith("rss "), state
    assert "MB > limit 200 MB: killing it" in log


FAKE_SGLANG = """
import http.server, json, sys
class Admin(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps({"path": self.path, **json.loads(body)}) + "\\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"success": true}')
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Admin).serve_forever()
"""


def test_a_restarted_sglang_engine_gets_back_the_adapters_its_handle_lists(tmp_path):
    """SGLang's admin API played by a double that records the calls: nothing is loaded at the first start
    (the command carries the start-up adapters); after a restart, what was loaded at run time is loaded again,
    before the supervisor calls the engine healthy."""
    import json

    from crawl2serve.serving.engines import save_handles

    port, calls = free_port(), tmp_path / "calls.jsonl"
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "sglang.py").write_text(FAKE_SGLANG)
    save_handles(
        str(tmp_path / "engines.json"),
        {
            "primary": EngineHandle(
                name="primary",
                kind="sglang",
                url=url,
                pid=None,
                command=[],
                log="",
                base_model="/b",
                anchor="1",
                models={"1": "crawl2serve", "base": "crawl2serve:base", "2": "crawl2serve:v2"},
                adapters={"v2": "/models/delta-v2-from-v1"},
                supervised=True,
            )
        },
    )
    state = tmp_path / "state.json"
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crawl2serve.serving",
            "supervise",
            "--name",
            "primary",
            "--backend",
            "sglang",
            "--url",
            url,
            "--state-file",
            str(state),
            "--handles-file",
            str(tmp_path / "engines.json"),
            "--base-delay-s",
            "0.05",
            "--",
            sys.executable,
            str(tmp_path / "sglang.py"),
            str(port),
            str(calls),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for(lambda: read_state(state).get("state") == "healthy", 20), read_state(state)
        assert not calls.exists(), "a first start loads nothing"
        first = read_state(state)["engine_pid"]
        os.kill(first, signal.SIGKILL)
        assert wait_for(
            lambda: read_state(state).get("restarts") == 1 and read_state(state)["state"] == "healthy", 20
        ), read_state(state)
        assert [json.loads(line) for line in calls.read_text().splitlines()] == [
            {"path": "/load_lora_adapter", "lora_name": "v2", "lora_path": "/models/delta-v2-from-v1"}
        ]
        engine = read_state(state)["engine_pid"]
    finally:
        supervisor.terminate()
        log = supervisor.communicate(timeout=30)[0]
    assert supervisor.returncode == 0 and read_state(state)["state"] == "stopped", log
    assert engine != first and not alive(engine)
