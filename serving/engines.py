"""Inference engines as processes: how each starts, how we know it is up, how it is stopped (framework-free).

Two engines speak the OpenAI API and are started the same way, each as its own process (its own venv or image):

- ``sglang``: ``python -m sglang.launch_server`` with LoRA enabled, for GPUs. Its python is SGLang's own
  environment (SGLang pins its own torch). Adapters are loaded into the running server with
  ``/load_lora_adapter``; a request picks one with ``"model": "<served name>:<adapter name>"``.
- ``cpu``: ``transformers serve`` (Hugging Face's maintained OpenAI-compatible server), for machines without a
  GPU. It loads any local model folder named in a request's ``model`` field, so each version is served from
  its merged folder (``serving.bundle.build_merged``).

A started engine is described by an :class:`EngineHandle` (JSON-able), which the serving asset keeps under the
data root so a later materialization, the gateway and ``python -m serving stop`` find it again.
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from .atomic import write_text

ENGINE_KINDS = ("cpu", "sglang")
# Engines never reach the Hub or telemetry endpoints: models come from local folders.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "DO_NOT_TRACK": "true", "SGLANG_IS_FLASHINFER_AVAILABLE": os.environ.get(
                   "SGLANG_IS_FLASHINFER_AVAILABLE", "true")}


class EngineError(RuntimeError):
    """An engine did not start, did not become healthy, or refused an admin call."""


@dataclass
class EngineHandle:
    """A running engine: where it answers and what it serves.

    ``models`` maps a version label (``"3"``, ``"base"``) to the ``model`` value a request must send to get it.
    """

    name: str
    kind: str
    url: str
    pid: int | None
    command: list[str]
    log: str
    base_model: str
    anchor: str
    models: dict[str, str] = field(default_factory=dict)
    lora: bool = True
    version: str = "unknown"
    started: float = field(default_factory=time.time)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "EngineHandle":
        return cls(**data)


def sglang_command(*, python: str, model_path: str, host: str, port: int, served_name: str,
                   adapters: dict[str, str] | None = None, max_lora_rank: int = 64, max_loras_per_batch: int = 4,
                   lora: bool = True, extra_args: list[str] | None = None) -> list[str]:
    """``python -m sglang.launch_server`` serving ``model_path`` as ``served_name`` with LoRA slots for the
    adapters (``{name: path}``, loadable later too). ``max_lora_rank`` must cover delta adapters (the sum of
    two adapters' ranks, see :mod:`serving.bundle`). ``lora=False``: plain weights only, at full speed (an
    SGLang server with LoRA enabled runs every batch through the LoRA kernels; bench_serving.py measured it)."""
    cmd = [python, "-m", "sglang.launch_server", "--model-path", model_path, "--host", host, "--port", str(port),
           "--served-model-name", served_name]
    if not lora:
        return cmd + list(extra_args or [])
    cmd += ["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras-per-batch", str(max_loras_per_batch),
            "--lora-target-modules", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    if adapters:
        cmd += ["--lora-paths", *[f"{name}={path}" for name, path in adapters.items()]]
    return cmd + list(extra_args or [])


def cpu_command(*, python: str, host: str, port: int, extra_args: list[str] | None = None) -> list[str]:
    """``transformers serve`` on ``host:port`` (models are loaded per request from local folders)."""
    return [python, "-m", "transformers.cli.transformers", "serve", "--host", host, "--port", str(port),
            "--device", "cpu", "--model-timeout", "86400", *(extra_args or [])]


def start_process(command: list[str], log_path: str, env: dict[str, str] | None = None) -> int:
    """Start ``command`` detached (its own session, so it outlives the Dagster run that started it) with
    stdout and stderr appended to ``log_path``; return its pid."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **OFFLINE_ENV, **(env or {})}, start_new_session=True)
    return proc.pid


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by us) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_process(pid: int | None, timeout_s: float = 20.0) -> bool:
    """SIGTERM the process group, then SIGKILL after ``timeout_s``; True if something was stopped."""
    if not alive(pid):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            _reap(pid)
            if not alive(pid):
                return True
            time.sleep(0.1)
    return True


def log_tail(log_path: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_healthy(url: str, *, pid: int | None, log_path: str, timeout_s: float = 600.0,
                 progress=None, path: str = "/health") -> float:
    """Poll ``url + path`` until it answers 200; raise :class:`EngineError` with the log's tail if the process
    exits or ``timeout_s`` passes. Returns the seconds it took. ``progress(seconds)`` is called every ~10 s."""
    start = time.monotonic()
    last_report = start
    while True:
        elapsed = time.monotonic() - start
        if pid is not None and not alive(pid):
            _reap(pid)
            raise EngineError(f"engine at {url} exited during startup; last log lines:\n{log_tail(log_path)}")
        try:
            if httpx.get(url + path, timeout=5.0).status_code == 200:
                return elapsed
        except httpx.HTTPError:
            pass
        if elapsed > timeout_s:
            raise EngineError(f"engine at {url} not healthy after {timeout_s:.0f} s; last log lines:\n"
                              f"{log_tail(log_path)}")
        if progress and time.monotonic() - last_report > 10:
            progress(elapsed)
            last_report = time.monotonic()
        time.sleep(0.5)


def healthy(url: str, timeout_s: float = 3.0) -> bool:
    try:
        return httpx.get(url + "/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def engine_version(kind: str, python: str) -> str:
    """The engine package's version, asked of the engine's own interpreter."""
    package = "sglang" if kind == "sglang" else "transformers"
    try:
        out = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, **OFFLINE_ENV})
        return f"{package} {out.stdout.strip()}" if out.returncode == 0 else f"{package} (unknown)"
    except (OSError, subprocess.TimeoutExpired):
        return f"{package} (unknown)"


def load_adapter(url: str, name: str, path: str, timeout_s: float = 300.0) -> None:
    """Load a LoRA adapter into a running SGLang server (``POST /load_lora_adapter``)."""
    r = httpx.post(f"{url}/load_lora_adapter", json={"lora_name": name, "lora_path": path}, timeout=timeout_s)
    body = r.text
    if r.status_code != 200 or '"success":false' in body.replace(" ", ""):
        raise EngineError(f"{url}: loading adapter {name!r} from {path} failed ({r.status_code}): {body[:500]}")


def update_weights(url: str, model_path: str, timeout_s: float = 600.0) -> dict:
    """Swap a running SGLang server's weights in place (``POST /update_weights_from_disk``); requests in
    flight are paused, not dropped."""
    r = httpx.post(f"{url}/update_weights_from_disk", json={"model_path": model_path}, timeout=timeout_s)
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {"message": r.text}
    if r.status_code != 200 or not body.get("success", False):
        raise EngineError(f"{url}: updating weights from {model_path} failed ({r.status_code}): {str(body)[:500]}")
    return body


def unload_adapter(url: str, name: str, timeout_s: float = 60.0) -> None:
    r = httpx.post(f"{url}/unload_lora_adapter", json={"lora_name": name}, timeout=timeout_s)
    if r.status_code != 200:
        raise EngineError(f"{url}: unloading adapter {name!r} failed ({r.status_code}): {r.text[:500]}")


def complete(url: str, model: str, prompt: str, max_tokens: int = 16, timeout_s: float = 300.0) -> dict:
    """One greedy ``/v1/completions`` call; returns ``{"text", "completion_tokens", "latency_s"}``."""
    start = time.perf_counter()
    r = httpx.post(f"{url}/v1/completions", timeout=timeout_s,
                   json={"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0})
    if r.status_code != 200:
        raise EngineError(f"{url}: completion with model {model!r} failed ({r.status_code}): {r.text[:500]}")
    body = r.json()
    return {"text": body["choices"][0]["text"], "completion_tokens": body.get("usage", {}).get("completion_tokens"),
            "latency_s": round(time.perf_counter() - start, 3)}


def save_handles(path: str, handles: dict[str, EngineHandle]) -> None:
    write_text(path, json.dumps({name: h.to_json() for name, h in handles.items()}, indent=2))


def load_handles(path: str) -> dict[str, EngineHandle]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    return {name: EngineHandle.from_json(h) for name, h in data.items()}


def default_python() -> str:
    return sys.executable
