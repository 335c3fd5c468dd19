"""Rolling a registry version out to the engines and the gateway (framework-free; the Dagster asset is thin).

State lives in one folder (``{data_root}/sglang_deployment/_``)::

    engines.json     EngineHandle per engine (pid, url, what it serves)
    gateway.json     the gateway process (pid, url, config hash)
    gateway.yaml     its configuration;  routing.json  its routing table;  api_keys.json  hashed keys
    models/          merged folders (CPU engine, SGLang anchor) and delta adapters (SGLang)
    logs/            engine and gateway logs

Blue/green: a new version is loaded *beside* the running ones (SGLang: ``/load_lora_adapter`` of its delta
against the anchor; CPU engine: its merged folder), smoke-tested, and only then does the routing table move
traffic to it: all of it, or ``canary_share`` of it while the previous version stays stable. Every version
stays loaded, so a rollback is a routing change.
"""

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_text
from .bundle import build_merged, delta_adapter
from .engines import (EngineHandle, alive, complete, cpu_command, engine_version, healthy, load_adapter,
                      load_handles, save_handles, sglang_command, start_process, stop_process, update_weights,
                      wait_healthy)
from .gateway.routing import read_routing, write_routing
from .gateway.settings import GatewaySettings

SMOKE_PROMPT = "The module"


@dataclass(frozen=True)
class Release:
    """A registry version to serve: its adapter, and the base model it was trained on."""

    version: str
    adapter_dir: str
    base_model: str


@dataclass
class EngineConfig:
    name: str
    backend: str  # "cpu" | "sglang"
    python: str = sys.executable
    host: str = "127.0.0.1"
    port: int = 30000
    extra_args: list[str] = field(default_factory=list)
    startup_timeout_s: float = 900.0
    max_lora_rank: int = 64
    lora: bool = True  # sglang only; False: the champion's merged weights alone, at the bare model's speed

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Deployment:
    def __init__(self, state_dir: str, model_name: str = "crawl2serve", log: Callable[[str], None] = print):
        self.dir = Path(state_dir)
        self.model_name, self.log = model_name, log

    # -- paths ----------------------------------------------------------------------------------------------
    @property
    def engines_file(self) -> str:
        return str(self.dir / "engines.json")

    @property
    def routing_file(self) -> str:
        return str(self.dir / "routing.json")

    def models_dir(self, name: str) -> Path:
        return self.dir / "models" / name

    def handles(self) -> dict[str, EngineHandle]:
        return load_handles(self.engines_file)

    def _save(self, handle: EngineHandle) -> None:
        handles = self.handles()
        handles[handle.name] = handle
        save_handles(self.engines_file, handles)

    # -- engines --------------------------------------------------------------------------------------------
    def ensure_engine(self, cfg: EngineConfig, champion: Release,
                      remote: Callable[[str, str, dict[str, str]], str] | None = None
                      ) -> tuple[EngineHandle, float | None]:
        """The running engine ``cfg.name`` if it serves the same base model at the same address, else a new one
        started with the champion as its anchor. Returns ``(handle, seconds to healthy or None if reused)``.

        ``remote(engine name, model_path, adapters) -> url`` runs the engine elsewhere (a Kubernetes Deployment)
        instead of as a local process; everything else (anchor, deltas, smoke, routing) is the same."""
        handle = self.handles().get(cfg.name)
        url = handle.url if (remote and handle) else cfg.url
        if handle and handle.kind == cfg.backend and handle.url == url and handle.base_model == champion.base_model \
                and handle.lora == cfg.lora and (handle.pid is None or alive(handle.pid)) and healthy(handle.url):
            self.log(f"engine {cfg.name} ({handle.kind}, pid {handle.pid}) is up at {handle.url}: reusing it")
            return handle, None
        if handle and handle.pid and alive(handle.pid):
            self.log(f"engine {cfg.name}: stopping pid {handle.pid} (configuration changed)")
            stop_process(handle.pid)
        adapters: dict[str, str] = {}
        if cfg.backend == "sglang":
            anchor = self._merged(champion)
            models = {champion.version: self.model_name}
            if cfg.lora:
                adapters = {"base": str(delta_adapter(None, champion.adapter_dir, str(self.models_dir(
                    f"delta-base-from-v{champion.version}"))))}
                models["base"] = f"{self.model_name}:base"
            command = sglang_command(python=cfg.python, model_path=anchor, host=cfg.host, port=cfg.port,
                                     served_name=self.model_name, adapters=adapters, lora=cfg.lora,
                                     max_lora_rank=cfg.max_lora_rank, extra_args=cfg.extra_args)
            self._remember_adapter(champion)
        else:
            anchor = None
            command = cpu_command(python=cfg.python, host=cfg.host, port=cfg.port, extra_args=cfg.extra_args)
            models = {"base": str(build_merged(champion.base_model, None, str(self.models_dir("base"))))}
        log_path = str(self.dir / "logs" / f"{cfg.name}.log")
        if remote is not None:
            if anchor is None:
                raise ValueError(f"engine {cfg.name}: only SGLang engines run remotely")
            url, pid = remote(cfg.name, anchor, adapters), None
            self.log(f"engine {cfg.name}: deployed remotely, waiting for {url}/health")
        else:
            url = cfg.url
            self.log(f"engine {cfg.name}: starting {' '.join(command)}")
            pid = start_process(command, log_path)
        seconds = wait_healthy(url, pid=pid, log_path=log_path, timeout_s=cfg.startup_timeout_s,
                               progress=lambda s: self.log(f"engine {cfg.name}: waiting for /health ({s:.0f} s)"))
        self.log(f"engine {cfg.name}: healthy after {seconds:.1f} s")
        handle = EngineHandle(name=cfg.name, kind=cfg.backend, url=url, pid=pid, command=command, log=log_path,
                              base_model=champion.base_model, anchor=champion.version, models=models,
                              version=engine_version(cfg.backend, cfg.python), lora=cfg.lora)
        self._save(handle)
        return handle, seconds

    def add_version(self, handle: EngineHandle, release: Release, promote: bool = True) -> str | None:
        """Load ``release`` into the running engine (if not loaded yet); returns the engine's model value.

        A LoRA-free SGLang engine serves one version, the champion: it takes ``release`` only when ``promote``,
        by swapping in its merged weights (``/update_weights_from_disk``); until then (and while a canary runs)
        the LoRA engine serves the new version. Returns None when the engine does not serve ``release``."""
        if release.version in handle.models:
            return handle.models[release.version]
        if handle.kind == "sglang" and not handle.lora:
            if not promote:
                return None
            update_weights(handle.url, self._merged(release))
            handle.models, handle.anchor = {release.version: self.model_name}, release.version
            self._save(handle)
            self._remember_adapter(release)
            return self.model_name
        if handle.kind == "sglang":
            anchor_adapter = self._adapters().get(handle.anchor)
            name = f"v{release.version}"
            delta = delta_adapter(release.adapter_dir, anchor_adapter,
                                  str(self.models_dir(f"delta-v{release.version}-from-v{handle.anchor}")))
            load_adapter(handle.url, name, str(delta))
            model = f"{self.model_name}:{name}"
        else:
            model = self._merged(release)
        handle.models[release.version] = model
        self._save(handle)
        self._remember_adapter(release)
        return model

    def _merged(self, release: Release) -> str:
        """The folder of ``release`` merged into its base model, built once per version (a registry version
        never changes; the folder appears whole, by rename, or not at all)."""
        folder = self.models_dir(f"v{release.version}-merged")
        if not (folder / "config.json").is_file():
            build_merged(release.base_model, release.adapter_dir, str(folder), dtype="auto")
        return str(folder)

    def _adapters(self) -> dict[str, str]:
        try:
            return json.loads((self.dir / "adapters.json").read_text())
        except FileNotFoundError:
            return {}

    def _remember_adapter(self, release: Release) -> None:
        adapters = {**self._adapters(), release.version: release.adapter_dir}
        write_text(self.dir / "adapters.json", json.dumps(adapters, indent=2))

    def smoke(self, handle: EngineHandle, versions: list[str], max_tokens: int = 8) -> dict[str, dict]:
        """A greedy completion per version the engine serves (the champion with its adapter, and the base
        model without)."""
        results = {}
        for version in [v for v in versions if v in handle.models]:
            results[version] = complete(handle.url, handle.models[version], SMOKE_PROMPT, max_tokens=max_tokens)
            self.log(f"smoke {handle.name} v{version}: {results[version]['text']!r} "
                     f"({results[version]['latency_s']} s)")
        return results

    # -- routing --------------------------------------------------------------------------------------------
    def route(self, version: str, handles: list[EngineHandle], canary_share: float) -> dict:
        """Move traffic to ``version``: all of it, or ``canary_share`` beside the previous stable version."""
        previous = read_routing(self.routing_file) or {}
        versions, tokenizers = {}, {}
        for h in handles:
            for v, model in h.models.items():
                versions.setdefault(v, {})[h.name] = model
                # the folder the engine reads its tokenizer from: a model folder (CPU engine), else the anchor
                # SGLang serves (its adapters do not change the tokenizer); the gateway counts prompts with it
                folder = Path(model) if Path(model).is_dir() else self.models_dir(f"v{h.anchor}-merged")
                if v not in tokenizers and (folder / "tokenizer.json").is_file():
                    tokenizers[v] = str(folder)
        before = previous.get("stable")
        if canary_share > 0 and before and before != version and before in versions:
            stable, canary, share = before, version, canary_share
        else:
            stable, canary, share = version, None, 0.0
        table = {"model": self.model_name, "stable": stable, "canary": canary, "canary_share": share,
                 "previous": before if before != stable else previous.get("previous"), "versions": versions,
                 "tokenizers": tokenizers, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_routing(self.routing_file, table)
        return table

    # -- gateway --------------------------------------------------------------------------------------------
    def ensure_gateway(self, settings: GatewaySettings, python: str = sys.executable,
                       timeout_s: float = 120.0) -> tuple[dict, bool]:
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
        pid = start_process([python, "-m", "serving", "gateway", "--config", str(config)], log_path)
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
        """``name -> {"pid", "url"}`` of every engine and of the gateway this deployment started."""
        found = {name: {"pid": h.pid, "url": h.url} for name, h in self.handles().items()}
        if self.gateway_state():
            found["gateway"] = self.gateway_state()
        return found

    def stop_all(self) -> list[str]:
        """Stop every process of :meth:`processes`; returns the names stopped."""
        return [name for name, proc in self.processes().items() if stop_process(proc.get("pid"))]
