"""Engine processes, whatever the backend: start detached, know when one is up, stop it with its children
(framework-free).
"""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

# Engines never reach the Hub or telemetry endpoints: models come from local folders.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "true",
    "SGLANG_IS_FLASHINFER_AVAILABLE": os.environ.get("SGLANG_IS_FLASHINFER_AVAILABLE", "true"),
}


class EngineError(RuntimeError):
    """An engine did not start, did not become healthy, or refused an admin call."""


def start_process(command: list[str], log_path: str, env: dict[str, str] | None = None) -> int:
    """Start ``command`` detached (its own session, so it outlives the Dagster run that started it) with
    stdout and stderr appended to ``log_path``; return its pid."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **OFFLINE_ENV, **(env or {})},
            start_new_session=True,
        )
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
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


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


def wait_healthy(
    url: str, *, pid: int | None, log_path: str, timeout_s: float = 600.0, progress=None, path: str = "/health"
) -> float:
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
            raise EngineError(
                f"engine at {url} not healthy after {timeout_s:.0f} s; last log lines:\n{log_tail(log_path)}"
            )
        if progress and time.monotonic() - last_report > 10:
            progress(elapsed)
            last_report = time.monotonic()
        time.sleep(0.5)


def healthy(url: str, timeout_s: float = 3.0) -> bool:
    try:
        return httpx.get(url + "/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def complete(url: str, model: str, prompt: str, max_tokens: int = 16, timeout_s: float = 300.0) -> dict:
    """One greedy ``/v1/completions`` call; returns ``{"text", "completion_tokens", "latency_s"}``."""
    start = time.perf_counter()
    r = httpx.post(
        f"{url}/v1/completions",
        timeout=timeout_s,
        json={"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0},
    )
    if r.status_code != 200:
        raise EngineError(f"{url}: completion with model {model!r} failed ({r.status_code}): {r.text[:500]}")
    body = r.json()
    return {
        "text": body["choices"][0]["text"],
        "completion_tokens": body.get("usage", {}).get("completion_tokens"),
        "latency_s": round(time.perf_counter() - start, 3),
    }


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, in MiB (0 when it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20
