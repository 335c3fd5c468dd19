"""A parent process that keeps one engine running (framework-free): ``python -m crawl2serve.serving supervise ... -- CMD``.

The serving asset starts the supervisor, detached, instead of the engine; the supervisor starts the engine as
its child, so ``waitpid`` says at once when it dies. A dead engine is started again after the delay of a
:class:`~serving.backoff.Backoff`; once healthy, it is restored (``Engine.restore``: SGLang loads again the
adapters its handle lists) before the supervisor calls it healthy. The supervisor also restarts an engine
whose resident memory passes its limit (``Engine.memory_limit_mb``) or that stops answering ``/health``.
An engine that never became healthy is not restarted: that is a configuration error, and the supervisor
exits so that whoever started it sees the log.

Stopping the supervisor (SIGTERM, which ``python -m crawl2serve.serving stop`` sends) stops its engine: SIGTERM to the
engine's process group, SIGKILL after ``STOP_GRACE_S``; and an engine whose supervisor is killed outright
gets SIGKILL from the kernel (``PR_SET_PDEATHSIG``), so no engine outlives its supervisor.

What it does is written, whole, to a state file (``python -m crawl2serve.serving status`` shows it)::

    {"state": "healthy", "engine_pid": 4242, "restarts": 1, "last_exit": {"code": null, "signal": 9,
     "reason": "exited", "uptime_s": 12.3, "at": "..."}, "last_restart_at": "...", ...}

and, beside it (``<engine>.json`` → ``<engine>.prom``), its restart count in Prometheus' text format, for
node_exporter's textfile collector (``--collector.textfile.directory`` = the state files' folder)::

    c2s_supervisor_engine_restarts_total{engine="primary",backend="cpu"} 1
"""

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from crawl2serve.serving.backoff import Backoff, RestartPolicy

from .atomic import write_text
from .engines import Engine, EngineConfig, EngineError, engine_for, load_handles, tree_rss_mb

STOP_GRACE_S = 15.0  # below stop_process's 20 s, so the engine is gone before its supervisor is SIGKILLed
PR_SET_PDEATHSIG = 1


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:  # elsewhere, stopping the supervisor still stops the engine
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _how(returncode: int) -> str:
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"signal {-returncode} ({signal.Signals(-returncode).name})"
    except ValueError:
        return f"signal {-returncode}"


def metrics_text(state: dict) -> str:
    """``state``'s restart count as Prometheus text (a counter: it starts at 0 with each supervisor)."""

    def esc(value) -> str:
        return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    name = "c2s_supervisor_engine_restarts_total"
    return (
        f"# HELP {name} Engine restarts by its supervisor, since the supervisor started\n# TYPE {name} counter\n"
        f'{name}{{engine="{esc(state["name"])}",backend="{esc(state["backend"])}"}} {state["restarts"]}\n'
    )


def read_state(path: str | os.PathLike) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


class Supervisor:
    """Runs ``command`` (the engine ``engine`` describes) until told to stop; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        command: list[str],
        state_file: str,
        handles_file: str | None = None,
        policy: RestartPolicy = RestartPolicy(),
        startup_timeout_s: float = 900.0,
        max_rss_mb: float | None = None,
        liveness_period_s: float = 10.0,
        liveness_failures: int = 6,
        log=None,
    ):
        self.engine, self.command, self.state_file, self.handles_file = engine, command, state_file, handles_file
        self.policy, self.backoff = policy, Backoff(policy)
        self.startup_timeout_s, self.max_rss_mb = startup_timeout_s, max_rss_mb
        self.liveness_period_s, self.liveness_failures = liveness_period_s, liveness_failures
        self._log = log or (lambda m: print(f"{_now()} [supervisor {engine.name}] {m}", flush=True))
        self.stopping = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.kill_reason: str | None = None
        self.state = {
            "name": engine.name,
            "backend": engine.backend,
            "url": engine.url,
            "supervisor_pid": os.getpid(),
            "engine_pid": None,
            "state": "starting",
            "since": _now(),
            "restarts": 0,
            "last_exit": None,
            "last_restart_at": None,
            "policy": policy.to_json(),
            "max_rss_mb": max_rss_mb,
            "command": command,
        }

    # -- state --------------------------------------------------------------------------------------------------
    def _set(self, state: str, **fields) -> None:
        self.state.update(fields, state=state, since=_now())
        write_text(self.state_file, json.dumps(self.state, indent=2))
        write_text(Path(self.state_file).with_suffix(".prom"), metrics_text(self.state))  # temp name: not *.prom

    # -- the engine process -------------------------------------------------------------------------------------
    def _spawn(self) -> subprocess.Popen:
        self.kill_reason = None
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.engine.env},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return self.proc

    def _kill(self, reason: str) -> None:
        """SIGKILL the engine's process group (from the watchdog thread or a failed restore)."""
        self.kill_reason = reason
        if self.proc is not None:
            _kill_group(self.proc.pid, signal.SIGKILL)

    def _wait_healthy(self, proc: subprocess.Popen) -> bool:
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.stopping.is_set() and time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if self.engine.health(timeout_s=2.0):
                return True
            self.stopping.wait(0.25)
        if not self.stopping.is_set():
            self._kill(f"not healthy after {self.startup_timeout_s:.0f} s")
        return False

    def _watchdog(self, proc: subprocess.Popen, done: threading.Event) -> None:
        """Kills the engine when its RSS passes ``max_rss_mb`` or ``liveness_failures`` probes of ``/health``
        in a row fail; the main thread, in ``waitpid``, then sees it die like any other death."""
        failures, last_probe = 0, time.monotonic()
        while not done.wait(1.0):
            if self.max_rss_mb:
                rss = tree_rss_mb(proc.pid)
                if rss > self.max_rss_mb:
                    self._log(
                        f"engine pid {proc.pid} resident memory {rss:.0f} MB > limit {self.max_rss_mb:.0f} "
                        "MB: killing it"
                    )
                    return self._kill(f"rss {rss:.0f} MB > {self.max_rss_mb:.0f} MB")
            if self.liveness_period_s and time.monotonic() - last_probe >= self.liveness_period_s:
                last_probe = time.monotonic()
                failures = 0 if self.engine.health(timeout_s=min(5.0, self.liveness_period_s)) else failures + 1
                if failures >= self.liveness_failures:
                    self._log(f"engine pid {proc.pid}: {failures} /health probes failed in a row: killing it")
                    return self._kill(f"unhealthy: {failures} failed /health probes")

    def _restore(self) -> None:
        handle = load_handles(self.handles_file).get(self.engine.name) if self.handles_file else None
        if handle is not None and handle.url == self.engine.url:
            self.engine.restore(handle)

    # -- the loop -----------------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self.stopping.set()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            _kill_group(proc.pid, signal.SIGTERM)
            timer = threading.Timer(STOP_GRACE_S, _kill_group, (proc.pid, signal.SIGKILL))
            timer.daemon = True
            timer.start()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        ever_healthy = False
        while not self.stopping.is_set():
            proc = self._spawn()
            started = time.monotonic()
            self._log(f"engine pid {proc.pid} started: {' '.join(self.command)}")
            self._set("starting", engine_pid=proc.pid)
            if self._wait_healthy(proc):
                try:
                    if ever_healthy:
                        self._set("restoring")
                        self._restore()
                    self._set("healthy")
                    self._log(
                        f"engine pid {proc.pid} healthy at {self.engine.url} after {time.monotonic() - started:.1f} s"
                    )
                    ever_healthy = True
                except (EngineError, httpx.HTTPError) as exc:
                    self._log(f"engine pid {proc.pid}: restoring what it served failed: {exc}")
                    self._kill(f"restore failed: {exc}")
                done = threading.Event()
                watchdog = threading.Thread(target=self._watchdog, args=(proc, done), daemon=True)
                watchdog.start()
                proc.wait()
                done.set()
            elif proc.poll() is None:
                proc.wait()  # stopping, or killed for not becoming healthy
            uptime = time.monotonic() - started
            _kill_group(proc.pid, signal.SIGKILL)  # whatever it left behind in its group
            if self.stopping.is_set():
                break
            rc = proc.returncode
            exit_ = {
                "code": rc if rc >= 0 else None,
                "signal": -rc if rc < 0 else None,
                "reason": self.kill_reason or "exited",
                "uptime_s": round(uptime, 1),
                "at": _now(),
            }
            how = _how(rc)
            if not ever_healthy:
                self._log(
                    f"engine pid {proc.pid} ended ({how}, {exit_['reason']}) before it was ever healthy: "
                    "not restarting (check the command and the log above)"
                )
                self._set("failed", last_exit=exit_, engine_pid=None)
                return 1
            delay = self.backoff.next_delay(uptime)
            if delay is None:
                self._log(
                    f"engine pid {proc.pid} ended ({how}, {exit_['reason']}) after {uptime:.1f} s: "
                    f"{self.backoff.fast_crashes} crashes in a row within {self.policy.reset_after_s:.0f} s "
                    "of starting; giving up. Fix the cause in the log above, then start it again "
                    "(materialize sglang_deployment)"
                )
                self._set("gave_up", last_exit=exit_, engine_pid=None)
                return 1
            self._log(
                f"engine pid {proc.pid} ended ({how}, {exit_['reason']}) after {uptime:.1f} s; "
                f"restarting in {delay:.1f} s"
            )
            self._set("backoff", last_exit=exit_, engine_pid=None)
            if self.stopping.wait(delay):
                break
            self.state["restarts"] += 1
            self.state["last_restart_at"] = _now()
        self._set("stopped", engine_pid=None)
        self._log("stopped")
        return 0


def supervisor_command(
    engine: Engine,
    *,
    state_file: str,
    handles_file: str,
    policy: RestartPolicy,
    startup_timeout_s: float,
    python: str = sys.executable,
) -> list[str]:
    """The prefix that runs an engine command under a supervisor (``[...prefix, "--", *engine command]``)."""
    limit = engine.memory_limit_mb()
    return [
        python,
        "-m",
        "crawl2serve.serving",
        "supervise",
        "--name",
        engine.name,
        "--backend",
        engine.backend,
        "--url",
        engine.url,
        "--state-file",
        state_file,
        "--handles-file",
        handles_file,
        "--startup-timeout-s",
        str(startup_timeout_s),
        "--base-delay-s",
        str(policy.base_delay_s),
        "--factor",
        str(policy.factor),
        "--max-delay-s",
        str(policy.max_delay_s),
        "--reset-after-s",
        str(policy.reset_after_s),
        "--max-fast-crashes",
        str(policy.max_fast_crashes),
        *(["--max-rss-mb", str(limit)] if limit else []),
        "--",
    ]


def add_arguments(p) -> None:
    p.add_argument("--name", required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--url", required=True, help="where the engine answers (its /health is probed)")
    p.add_argument("--state-file", required=True)
    p.add_argument("--handles-file", help="engines.json: what to restore after a restart")
    p.add_argument("--startup-timeout-s", type=float, default=900.0)
    defaults = RestartPolicy()
    for name in ("base_delay_s", "factor", "max_delay_s", "reset_after_s"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    p.add_argument("--max-fast-crashes", type=int, default=defaults.max_fast_crashes)
    p.add_argument("--max-rss-mb", type=float)
    p.add_argument("--liveness-period-s", type=float, default=10.0, help="0: no /health probes once up")
    p.add_argument("command", nargs="+", help="the engine command, after --")


def main(args) -> int:
    config = EngineConfig(name=args.name, backend=args.backend)
    policy = RestartPolicy(
        base_delay_s=args.base_delay_s,
        factor=args.factor,
        max_delay_s=args.max_delay_s,
        reset_after_s=args.reset_after_s,
        max_fast_crashes=args.max_fast_crashes,
    )
    supervisor = Supervisor(
        engine_for(config, url=args.url),
        args.command,
        args.state_file,
        args.handles_file,
        policy=policy,
        startup_timeout_s=args.startup_timeout_s,
        max_rss_mb=args.max_rss_mb,
        liveness_period_s=args.liveness_period_s,
    )
    return supervisor.run()
