"""Helpers of the serving tests: engines and the gateway as real processes on loopback."""

import contextlib
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

from crawl2serve.serving.engines import (
    EngineConfig,
    TransformersCpuEngine,
    cpu_command,
    start_process,
    stop_process,
    wait_healthy,
)
from crawl2serve.serving.gateway.auth import KeyStore
from crawl2serve.serving.gateway.routing import write_routing
from crawl2serve.serving.gateway.settings import EngineSettings, GatewaySettings

#: What the tests' engines (``transformers serve``) honour beyond plain text, as the serving resource declares it.
CPU_FEATURES = sorted(TransformersCpuEngine(EngineConfig(name="cpu", backend="cpu")).features())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Engine:
    url: str
    port: int
    pid: int
    log: str

    def start(self) -> "Engine":
        self.pid = start_process(cpu_command(python=sys.executable, host="127.0.0.1", port=self.port), self.log)
        wait_healthy(self.url, pid=self.pid, log_path=self.log, timeout_s=120)
        return self

    def kill(self) -> None:
        stop_process(self.pid, timeout_s=5)


def start_engine(tmp: Path, name: str) -> Engine:
    port = free_port()
    return Engine(f"http://127.0.0.1:{port}", port, 0, str(tmp / f"{name}.log")).start()


@dataclass
class Gateway:
    url: str
    key: str
    settings: GatewaySettings
    pid: int
    log: str
    keys: KeyStore

    def stop(self) -> None:
        stop_process(self.pid, timeout_s=15)


def start_gateway(
    tmp: Path,
    engines: list[tuple[str, str]],
    model_dir: str,
    versions: dict[str, str] | None = None,
    served_by: dict[str, list[str]] | None = None,
    features: dict[str, list[str]] | None = None,
    **overrides,
) -> Gateway:
    """The gateway as its own process; ``engines``: ``[(name, url), ...]`` in fallback order, each serving
    ``model_dir`` as version "1" (and each of ``versions``: label -> model folder), unless ``served_by`` names
    a version's engines (label -> engine names). Every engine is configured as what it is, a CPU engine
    (``transformers serve``: its backend and features), unless ``features`` says otherwise (name -> list)."""
    tmp.mkdir(parents=True, exist_ok=True)
    routing = tmp / "routing.json"
    write_routing(
        str(routing),
        {
            "model": "crawl2serve",
            "stable": "1",
            "canary": None,
            "canary_share": 0.0,
            "versions": {
                v: {name: folder for name, _ in engines if name in (served_by or {}).get(v, [name])}
                for v, folder in {"1": model_dir, **(versions or {})}.items()
            },
        },
    )
    keys = KeyStore.load(tmp / "api_keys.json")
    key, _ = keys.add("acme", "pro")
    port = free_port()
    settings = GatewaySettings(
        **{
            "port": port,
            "routing_file": str(routing),
            "keys_file": str(tmp / "api_keys.json"),
            "log_dir": str(tmp / "spool"),
            "engines": [
                EngineSettings(
                    name=n,
                    url=u,
                    timeout_s=60,
                    read_timeout_s=20,
                    backend="cpu",
                    features=(features or {}).get(n, CPU_FEATURES),
                )
                for n, u in engines
            ],
            **overrides,
        }
    )
    settings.dump(str(tmp / "gateway.yaml"))
    log = str(tmp / "gateway.log")
    pid = start_process(
        [sys.executable, "-m", "crawl2serve.serving", "gateway", "--config", str(tmp / "gateway.yaml")], log
    )
    wait_healthy(f"http://127.0.0.1:{port}", pid=pid, log_path=log, timeout_s=60)
    return Gateway(f"http://127.0.0.1:{port}", key, settings, pid, log, keys)


def metric(url: str, name: str, **labels) -> float:
    """The value of one Prometheus sample of the gateway (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + ("{" + want + "}" if want else " ")) or (
            want and line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@contextlib.contextmanager
def silent_server():
    """``redis://`` URL of a TCP server that accepts connections and never answers (a hung Redis)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


async def longest_loop_stall(work, interval_s: float = 0.005) -> tuple[object, float]:
    """``(result of awaiting work, longest gap in seconds between ticks of a task on the same loop)``: what a
    blocking call inside ``work`` would show as a stall as long as itself."""
    import asyncio
    import time

    gaps, stop = [0.0], asyncio.Event()

    async def ticker():
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(interval_s)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(interval_s * 2)
    try:
        result = await work
    finally:
        stop.set()
        await task
    return result, max(gaps)


FAKE_HEALTH_SERVER = """import http.server, sys, threading, time
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Health)
threading.Thread(target=server.serve_forever, daemon=True).start()
"""


def fake_engine_script(then: str) -> str:
    """A stand-in engine process: answers ``/health`` on the port of its first argument, then runs ``then``
    (e.g. exits, or holds memory), for supervisor tests."""
    return FAKE_HEALTH_SERVER + then
