"""Rolling a registry version out to the engines and the gateway (framework-free; the Dagster asset is thin).

State lives in one folder (``{data_root}/sglang_deployment/_``)::

    engines.json     EngineHandle per engine (its supervisor's pid, url, what it serves)
    supervisors/     per engine, what its supervisor writes: state, engine pid, restarts, last exit
    gateway.json     the gateway process (pid, url, config hash)
    gateway.yaml     its configuration;  routing.json  its routing table;  api_keys.json  hashed keys
    models/          merged folders (CPU engine, SGLang anchor) and delta adapters (SGLang)
    logs/            engine and gateway logs

Blue/green: a new version is loaded *beside* the running ones (SGLang: ``/load_lora_adapter`` of its delta
against the anchor; CPU engine: its merged folder), smoke-tested, and only then does the routing table move
traffic to it: all of it, or ``canary_share`` of it while the previous version stays stable; with a rollout
policy, that canary is progressive (:mod:`serving.canary`: the ``canary_rollout`` sensor advances its share stage
by stage, promotes it, or rolls it back through :meth:`Deployment.apply_decision`). Every version stays loaded,
so a rollback is a routing change.
"""

import contextlib
import fcntl
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from crawl2serve.serving.backoff import RestartPolicy

from .atomic import write_text
from .bundle import build_merged, delta_adapter
from .engines import (
    Engine,
    EngineConfig,
    EngineError,
    EngineHandle,
    Release,
    alive,
    attach,
    complete,
    engine_for,
    healthy,
    load_handles,
    save_handles,
    start_process,
    stop_process,
    wait_healthy,
)
from .gateway.logstore import utc_now_iso
from .gateway.routing import read_routing, write_routing
from .gateway.settings import GatewaySettings
from .supervisor import read_state, supervisor_command

SMOKE_PROMPT = "The module"

__all__ = ["Deployment", "EngineConfig", "Release"]


class Deployment:
    """The serving state folder, and what reads and writes it. Also the :class:`~serving.engines.ModelFolders`
    engines ask for merged folders and delta adapters."""

    def __init__(
        self,
        state_dir: str,
        model_name: str = "crawl2serve",
        log: Callable[[str], None] = print,
        restart_policy: RestartPolicy = RestartPolicy(),
    ):
        self.dir = Path(state_dir)
        self.model_name, self.log, self.restart_policy = model_name, log, restart_policy

    # -- paths ----------------------------------------------------------------------------------------------
    @property
    def engines_file(self) -> str:
        return str(self.dir / "engines.json")

    @property
    def routing_file(self) -> str:
        return str(self.dir / "routing.json")

    def models_dir(self, name: str) -> Path:
        return self.dir / "models" / name

    def supervisor_file(self, name: str) -> str:
        """What the supervisor of engine ``name`` writes: its state, the engine's pid, restarts, last exit."""
        return str(self.dir / "supervisors" / f"{name}.json")

    def supervision(self, name: str) -> dict:
        return read_state(self.supervisor_file(name))

    def handles(self) -> dict[str, EngineHandle]:
        return load_handles(self.engines_file)

    def _save(self, handle: EngineHandle) -> None:
        handles = self.handles()
        handles[handle.name] = handle
        save_handles(self.engines_file, handles)

    # -- engines --------------------------------------------------------------------------------------------
    def ensure_engine(
        self, cfg: EngineConfig, champion: Release, remote: Callable[[str, str, dict[str, str]], str] | None = None
    ) -> tuple[EngineHandle, float | None]:
        """The running engine ``cfg.name`` if it serves the same base model at the same address, else a new one
        started with the champion as its anchor. Returns ``(handle, seconds to healthy or None if reused)``.

        Locally the engine runs under a supervisor (:mod:`serving.supervisor`) that restarts it when it dies;
        ``remote(engine name, model_path, adapters) -> url`` runs it elsewhere instead (a Kubernetes Deployment,
        whose controller restarts it); everything else (anchor, deltas, smoke, routing) is the same."""
        handle = self.handles().get(cfg.name)
        url = handle.url if (remote and handle) else cfg.url
        engine = engine_for(cfg, served_name=self.model_name, url=url)
        if (
            handle
            and engine.reusable(handle, champion, url)
            and handle.supervised == (remote is None)
            and (handle.pid is None or alive(handle.pid))
            and self._up(engine, handle, cfg)
        ):
            self.log(f"engine {cfg.name} ({handle.kind}, pid {handle.pid}) is up at {handle.url}: reusing it")
            return handle, None
        if handle and handle.pid and alive(handle.pid):
            self.log(f"engine {cfg.name}: stopping pid {handle.pid} (configuration changed)")
            stop_process(handle.pid)
        launch = engine.launch(champion, self)
        log_path = str(self.dir / "logs" / f"{cfg.name}.log")
        if remote is not None:
            if not engine.runs_on_kubernetes:
                raise ValueError(f"engine {cfg.name}: {engine.backend} engines run only as local processes")
            url, pid = remote(cfg.name, launch.model_path, launch.adapters), None
            self.log(f"engine {cfg.name}: deployed remotely, waiting for {url}{engine.health_path}")
        else:
            url = cfg.url
            self.log(f"engine {cfg.name}: starting {' '.join(engine.command(launch))} (supervised)")
            pid = engine.start(
                launch,
                log_path,
                supervisor=supervisor_command(
                    engine,
                    state_file=self.supervisor_file(cfg.name),
                    handles_file=self.engines_file,
                    policy=self.restart_policy,
                    startup_timeout_s=cfg.startup_timeout_s,
                ),
            )
        seconds = engine.wait_healthy(
            url=url,
            pid=pid,
            log_path=log_path,
            progress=lambda s: self.log(f"engine {cfg.name}: waiting for {engine.health_path} ({s:.0f} s)"),
        )
        self.log(f"engine {cfg.name}: healthy after {seconds:.1f} s")
        handle = EngineHandle(
            name=cfg.name,
            kind=engine.backend,
            url=url,
            pid=pid,
            command=engine.command(launch),
            log=log_path,
            base_model=champion.base_model,
            anchor=launch.anchor,
            models=launch.models,
            version=engine.version(),
            lora=cfg.lora,
            supervised=remote is None,
        )
        self._save(handle)
        return handle, seconds

    def _up(self, engine: Engine, handle: EngineHandle, cfg: EngineConfig) -> bool:
        """Healthy, or (while its supervisor restarts it) healthy again within the startup timeout."""
        if engine.health():
            return True
        if not handle.supervised or self.supervision(cfg.name).get("state") not in ("starting", "restoring", "backoff"):
            return False
        self.log(f"engine {cfg.name}: its supervisor is restarting it; waiting")
        try:
            engine.wait_healthy(pid=handle.pid, log_path=handle.log)
        except EngineError:
            return False
        return True

    def add_version(self, handle: EngineHandle, release: Release, promote: bool = True) -> str | None:
        """Load ``release`` into the running engine (if not loaded yet); returns the engine's model value, or
        None when the engine does not serve ``release`` (a LoRA-free engine before ``promote``; see
        ``Engine.add_version``)."""
        if release.version in handle.models:
            return handle.models[release.version]
        model = attach(handle, served_name=self.model_name).add_version(handle, release, self, promote=promote)
        if model is not None:
            self._save(handle)
        return model

    # -- model folders (serving.engines.ModelFolders) -------------------------------------------------------
    def merged(self, release: Release) -> str:
        """The folder of ``release`` merged into its base model, built once per version (a registry version
        never changes; the folder appears whole, by rename, or not at all)."""
        folder = self.models_dir(f"v{release.version}-merged")
        if not (folder / "config.json").is_file():
            build_merged(release.base_model, release.adapter_dir, str(folder), dtype="auto")
        return str(folder)

    def base(self, release: Release) -> str:
        """``release``'s base model alone, as a servable folder."""
        return str(build_merged(release.base_model, None, str(self.models_dir("base"))))

    def delta(self, target: Release | None, anchor: str) -> str:
        """The delta adapter from the merged ``anchor`` version to ``target`` (None: to the base model)."""
        name = f"delta-{'base' if target is None else 'v' + target.version}-from-v{anchor}"
        return str(
            delta_adapter(
                target.adapter_dir if target else None, self._adapters().get(anchor), str(self.models_dir(name))
            )
        )

    def remember(self, release: Release) -> None:
        adapters = {**self._adapters(), release.version: release.adapter_dir}
        write_text(self.dir / "adapters.json", json.dumps(adapters, indent=2))

    def _adapters(self) -> dict[str, str]:
        try:
            return json.loads((self.dir / "adapters.json").read_text())
        except FileNotFoundError:
            return {}

    def smoke(self, handle: EngineHandle, versions: list[str], max_tokens: int = 8) -> dict[str, dict]:
        """A greedy completion per version the engine serves (the champion with its adapter, and the base
        model without)."""
        results = {}
        for version in [v for v in versions if v in handle.models]:
            results[version] = complete(handle.url, handle.models[version], SMOKE_PROMPT, max_tokens=max_tokens)
            self.log(
                f"smoke {handle.name} v{version}: {results[version]['text']!r} ({results[version]['latency_s']} s)"
            )
        return results

    # -- routing --------------------------------------------------------------------------------------------
    def route(
        self, version: str, handles: list[EngineHandle], canary_share: float, rollout: dict | None = None
    ) -> dict:
        """Move traffic to ``version``: all of it, or ``canary_share`` beside the previous stable version. With
        ``rollout`` (a :class:`serving.canary.Policy` as JSON), that canary is a progressive rollout: the
        ``canary_rollout`` sensor moves it through the policy's stages (:meth:`apply_decision`)."""
        with self.routing_lock():
            previous = read_routing(self.routing_file) or {}
            versions, tokenizers = {}, {}
            for h in handles:
                for v, model in h.models.items():
                    versions.setdefault(v, {})[h.name] = model
                    # the folder the engine reads its tokenizer from: a model folder (CPU engine), else the anchor
                    # SGLang serves (its adapters do not change the tokenizer); the gateway counts prompts with
                    # it. Only an absolute path is a folder: a served name such as "crawl2serve" may also be a
                    # folder relative to wherever the process happens to run.
                    is_folder = Path(model).is_absolute() and Path(model).is_dir()
                    folder = Path(model) if is_folder else self.models_dir(f"v{h.anchor}-merged")
                    if v not in tokenizers and (folder / "tokenizer.json").is_file():
                        tokenizers[v] = str(folder)
            before = previous.get("stable")
            if 0 < canary_share < 1 and before and before != version and before in versions:
                stable, canary, share = before, version, canary_share
            else:
                stable, canary, share = version, None, 0.0
            now = utc_now_iso()
            table = {
                "model": self.model_name,
                "stable": stable,
                "canary": canary,
                "canary_share": share,
                "previous": before if before != stable else previous.get("previous"),
                "versions": versions,
                "tokenizers": tokenizers,
                "rollout": {"policy": rollout, "started": now, "stage_started": now} if canary and rollout else None,
                "last_rollout": previous.get("last_rollout"),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            write_routing(self.routing_file, table)
        return table

    @contextlib.contextmanager
    def routing_lock(self):
        """Held while the routing table is read, changed and written (the serving asset and the canary sensor
        may write it at the same time; readers, the gateway among them, need no lock: writes are atomic)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "routing.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def apply_decision(self, canary: str, verdict: str, next_share: float, reason: str) -> dict | None:
        """Carry out a :class:`serving.canary.Decision` on the rollout of ``canary``: ``advance`` sets its next
        share (a new stage, whose window starts now), ``promote`` makes it the stable version (the old one is
        ``previous``, the rollback target), ``rollback`` sends all traffic back to the stable version (every
        version stays loaded: the change is the routing table's alone); ``wait`` changes nothing. Returns the
        table written, or None when ``canary`` is no longer the table's canary under a rollout (another
        champion took its place meanwhile): the decision is stale and nothing is written."""
        with self.routing_lock():
            table = read_routing(self.routing_file) or {}
            if table.get("canary") != canary or not table.get("rollout"):
                return None
            if verdict == "wait":
                return table
            now = utc_now_iso()
            if verdict == "advance":
                table.update(canary_share=next_share, rollout={**table["rollout"], "stage_started": now})
            elif verdict in ("promote", "rollback"):
                promoted = verdict == "promote"
                table.update(
                    stable=canary if promoted else table["stable"],
                    previous=table["stable"] if promoted else table.get("previous"),
                    canary=None,
                    canary_share=0.0,
                    rollout=None,
                    last_rollout={
                        "version": canary,
                        "verdict": verdict,
                        "reason": reason,
                        "started": table["rollout"].get("started"),
                        "ended": now,
                    },
                )
            else:
                raise ValueError(f"verdict {verdict!r}: expected wait, advance, promote or rollback")
            table["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            write_routing(self.routing_file, table)
        return table

    # -- gateway --------------------------------------------------------------------------------------------
    def ensure_gateway(
        self, settings: GatewaySettings, python: str = sys.executable, timeout_s: float = 120.0
    ) -> tuple[dict, bool]:
        """Run the gateway with ``settings`` (restarted only when they change; routing and keys are re-read
        live). Returns ``({"pid", "url", "config_sha256"}, reused)``."""
        config = self.dir / "gateway.yaml"
        settings.dump(str(config))
        digest = hashlib.sha256(config.read_bytes()).hexdigest()
        url = f"http://{settings.host}:{settings.port}"
        state = self.gateway_state()
        if state.get("config_sha256") == digest and alive(state.get("pid")) and healthy(url):
            return state, True
        if alive(state.get("pid")):
            self.log(f"gateway: restarting (pid {state['pid']}, configuration changed)")
            stop_process(state["pid"])
        log_path = str(self.dir / "logs" / "gateway.log")
        pid = start_process([python, "-m", "crawl2serve.serving", "gateway", "--config", str(config)], log_path)
        wait_healthy(url, pid=pid, log_path=log_path, timeout_s=timeout_s)
        state = {"pid": pid, "url": url, "config_sha256": digest, "log": log_path}
        write_text(self.dir / "gateway.json", json.dumps(state, indent=2))
        return state, False

    def gateway_state(self) -> dict:
        """What ``ensure_gateway`` recorded of the gateway process (``{}`` before the first one)."""
        try:
            return json.loads((self.dir / "gateway.json").read_text())
        except FileNotFoundError:
            return {}

    def processes(self) -> dict[str, dict]:
        """``name -> {"pid", "url"}`` of every engine (its supervisor's pid, and ``supervision``: what the
        supervisor wrote) and of the gateway this deployment started."""
        found = {
            name: {"pid": h.pid, "url": h.url, **({"supervision": self.supervision(name)} if h.supervised else {})}
            for name, h in self.handles().items()
        }
        if self.gateway_state():
            found["gateway"] = self.gateway_state()
        return found

    def stop_all(self) -> list[str]:
        """Stop every process of :meth:`processes`; returns the names stopped."""
        return [name for name, proc in self.processes().items() if stop_process(proc.get("pid"))]
