"""What every engine backend is: one :class:`Engine` subclass per backend (framework-free).

An engine is a process speaking the OpenAI API on ``url``. Its class knows how to start it (``command``), how to
tell it is up (``health``), which weights and adapters it starts with for a champion (``launch``), how a new
registry version becomes servable on it (``add_version``: load an adapter, swap weights, or name a folder),
what to re-do after a restart (``restore``), and what it honours beyond plain text (``features``: constrained
JSON, tools; the gateway routes by them). Nothing outside these classes looks at a backend's name: adding one
(vLLM, say) is a new module registering a new subclass (see :mod:`serving.engines`).

A started engine is described by an :class:`EngineHandle` (JSON-able), kept under the data root so a later
materialization, the gateway, the engine's supervisor and ``python -m crawl2serve.serving stop`` find it again.
"""

import json
import os
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Protocol

import httpx

from ..atomic import write_text
from .process import OFFLINE_ENV, EngineError, start_process, stop_process, wait_healthy

#: What a request may ask of an engine beyond plain text, by name. An engine declares the ones it honours
#: (:meth:`Engine.features`); the serving resource writes them into the gateway's configuration
#: (``EngineSettings.features``), and the gateway sends a request that needs one only to engines that have it
#: (a 400 ``unsupported_parameter`` when none of the routed version's engines has it).
JSON_OBJECT = "response_format.json_object"  # output constrained to a JSON object
JSON_SCHEMA = "response_format.json_schema"  # output constrained to a given JSON Schema
TOOLS = "tools"  # function definitions rendered into the prompt and tool calls parsed out of the output
TOOL_CHOICE = "tool_choice"  # "none", "required" or one named function honoured (not only "auto")
STRICT_TOOLS = "tools.strict"  # a strict function's arguments constrained to its parameters' JSON Schema
FEATURES = (JSON_OBJECT, JSON_SCHEMA, TOOLS, TOOL_CHOICE, STRICT_TOOLS)


class NotSupported(EngineError):
    """The backend has no such operation (e.g. loading a LoRA adapter into ``transformers serve``)."""


@dataclass(frozen=True)
class Release:
    """A registry version to serve: its adapter, and the base model it was trained on."""

    version: str
    adapter_dir: str
    base_model: str


@dataclass
class EngineConfig:
    """How to run one engine; the same fields for every backend (each reads the ones it needs)."""

    name: str
    backend: str  # a key of serving.engines.BACKENDS
    python: str = sys.executable
    host: str = "127.0.0.1"
    port: int = 30000
    extra_args: list[str] = field(default_factory=list)
    startup_timeout_s: float = 900.0
    max_lora_rank: int = 64
    lora: bool = True  # False: the champion's merged weights alone (backends that serve adapters only)
    memory_budget_mb: int | None = None  # host memory the engine may use (backends running on the CPU)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class EngineHandle:
    """A running engine: where it answers and what it serves.

    ``models`` maps a version label (``"3"``, ``"base"``) to the ``model`` value a request must send to get it.
    ``pid`` is the engine's supervisor locally (stopping it stops the engine), None when something else runs
    the engine (Kubernetes). ``adapters`` (name -> path) and ``weights`` are what was loaded into the running
    engine after it started: what a restarted engine must load again.
    """

    name: str
    kind: str  # the backend
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
    adapters: dict[str, str] = field(default_factory=dict)
    weights: str | None = None
    supervised: bool = False  # handles written before engines had supervisors read as unsupervised

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "EngineHandle":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Launch:
    """What an engine starts with: its weights, the adapters it loads at start (name -> path), and the
    ``model`` value of each version it then serves; ``anchor`` is the version whose weights it runs."""

    model_path: str
    adapters: dict[str, str]
    models: dict[str, str]
    anchor: str


class ModelFolders(Protocol):
    """The servable folders a deployment builds for an engine (:class:`serving.deploy.Deployment`)."""

    model_name: str

    def merged(self, release: Release) -> str:
        """``release``'s adapter merged into its base model (built once per version)."""

    def base(self, release: Release) -> str:
        """``release``'s base model alone, servable (tokenizer with a chat template)."""

    def delta(self, target: Release | None, anchor: str) -> str:
        """A LoRA adapter turning the merged ``anchor`` version into ``target`` (None: into the base model)."""

    def remember(self, release: Release) -> None:
        """Record ``release``'s adapter, so a later delta can be built against it."""


def arg_value(args: list[str], name: str) -> str | None:
    """The value of option ``name`` in a command line (``--name value`` or ``--name=value``), else None."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


class Engine(ABC):
    """One backend. Subclasses set ``backend`` (the registry key) and ``package`` (the distribution whose
    version names the engine) and implement :meth:`launch`, :meth:`command` and :meth:`add_version`."""

    backend: ClassVar[str]
    package: ClassVar[str]
    #: Loads LoRA adapters into the running process (else each version is its own folder or weights).
    serves_adapters: ClassVar[bool] = False
    #: Swaps its weights in place (a LoRA-free engine can then follow the champion without a restart).
    swaps_weights: ClassVar[bool] = False
    #: Can run as a Kubernetes Deployment (serving/k8s.py renders it); else only as a local process.
    runs_on_kubernetes: ClassVar[bool] = False
    health_path: ClassVar[str] = "/health"

    def __init__(self, config: EngineConfig, served_name: str = "crawl2serve", url: str | None = None):
        self.config = config
        self.served_name = served_name  # the ``model`` name requests use for the engine's own weights
        self._url = url  # where it answers when not at the config's host:port (a Kubernetes Service)

    @classmethod
    def usable_here(cls) -> bool:
        """Whether this host can run the backend (``backend="auto"`` picks the first one that can)."""
        return True

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def url(self) -> str:
        return self._url or self.config.url

    @property
    def env(self) -> dict[str, str]:
        """Environment of the engine process, beside the caller's."""
        return dict(OFFLINE_ENV)

    def memory_limit_mb(self) -> float | None:
        """Resident memory above which the supervisor restarts the engine (None: no limit)."""
        return None

    def features(self) -> frozenset[str]:
        """The request features of :data:`FEATURES` this engine, so configured, honours (none: plain text)."""
        return frozenset()

    # -- lifecycle ----------------------------------------------------------------------------------------------
    @abstractmethod
    def launch(self, champion: Release, folders: ModelFolders) -> Launch:
        """The weights, start-up adapters and served models of a new engine whose champion is ``champion``."""

    @abstractmethod
    def command(self, launch: Launch, host: str | None = None) -> list[str]:
        """The command line serving ``launch`` (``host``: the address to bind, default the config's)."""

    def start(self, launch: Launch, log_path: str, supervisor: list[str] | None = None) -> int:
        """Start the engine detached, logging to ``log_path``; returns the pid to stop it by.
        ``supervisor``: a command prefix (``python -m crawl2serve.serving supervise ... --``) that owns the engine."""
        return start_process([*(supervisor or []), *self.command(launch)], log_path, env=self.env)

    def health(self, timeout_s: float = 3.0) -> bool:
        """Whether ``url + health_path`` answers 200 within ``timeout_s``."""
        try:
            return httpx.get(self.url + self.health_path, timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(
        self, *, pid: int | None, log_path: str, timeout_s: float | None = None, progress=None, url: str | None = None
    ) -> float:
        return wait_healthy(
            url or self.url,
            pid=pid,
            log_path=log_path,
            path=self.health_path,
            timeout_s=self.config.startup_timeout_s if timeout_s is None else timeout_s,
            progress=progress,
        )

    def stop(self, pid: int | None) -> bool:
        return stop_process(pid)

    def version(self) -> str:
        """``"<package> <version>"``, asked of the engine's own interpreter."""
        package = self.package
        try:
            out = subprocess.run(
                [self.config.python, "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, **self.env},
            )
            return f"{package} {out.stdout.strip()}" if out.returncode == 0 else f"{package} (unknown)"
        except (OSError, subprocess.TimeoutExpired):
            return f"{package} (unknown)"

    def reusable(self, handle: EngineHandle, champion: Release, url: str) -> bool:
        """Whether the engine ``handle`` describes serves what this configuration would start."""
        return (
            handle.kind == self.backend
            and handle.url == url
            and handle.base_model == champion.base_model
            and handle.lora == self.config.lora
        )

    # -- versions -----------------------------------------------------------------------------------------------
    @abstractmethod
    def add_version(
        self, handle: EngineHandle, release: Release, folders: ModelFolders, promote: bool = True
    ) -> str | None:
        """Make ``release`` servable on the running engine (updating ``handle``); returns its ``model`` value,
        or None when this engine does not serve it."""

    def restore(self, handle: EngineHandle) -> None:
        """After a restart: load again what was loaded into the engine while it ran (``handle.adapters``,
        ``handle.weights``), so it serves every version ``handle.models`` lists."""
        if handle.weights:
            self.update_weights(handle.weights)
        for name, path in handle.adapters.items():
            self.load_adapter(name, path)

    # -- admin calls (backends that have them override) ---------------------------------------------------------
    def load_adapter(self, name: str, path: str) -> None:
        raise NotSupported(f"{self.backend} engine {self.name}: cannot load LoRA adapters")

    def unload_adapter(self, name: str) -> None:
        raise NotSupported(f"{self.backend} engine {self.name}: cannot unload LoRA adapters")

    def update_weights(self, model_path: str) -> dict:
        raise NotSupported(f"{self.backend} engine {self.name}: cannot swap its weights in place")


def save_handles(path: str, handles: dict[str, EngineHandle]) -> None:
    write_text(path, json.dumps({name: h.to_json() for name, h in handles.items()}, indent=2))


def load_handles(path: str) -> dict[str, EngineHandle]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    return {name: EngineHandle.from_json(h) for name, h in data.items()}
