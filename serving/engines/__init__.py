"""Inference engines: one :class:`~serving.engines.base.Engine` subclass per backend, found by name here.

- ``sglang`` (:mod:`.sglang`): SGLang ``launch_server`` with LoRA, for GPUs;
- ``cpu`` (:mod:`.transformers_cpu`): ``transformers serve``, its memory bounded by a budget.

Adding a backend is a module with an ``Engine`` subclass and one line in ``BACKENDS``; the deployment, the
serving resource and the supervisor only call the interface. Process helpers (start, health, stop) are in
:mod:`.process`.
"""

from .base import (
    FEATURES,
    Engine,
    EngineConfig,
    EngineHandle,
    Launch,
    ModelFolders,
    NotSupported,
    Release,
    load_handles,
    save_handles,
)
from .process import (
    OFFLINE_ENV,
    EngineError,
    alive,
    complete,
    healthy,
    log_tail,
    start_process,
    stop_process,
    tree_rss_mb,
    wait_healthy,
)
from .sglang import SGLangEngine, gpu_visible, sglang_command
from .transformers_cpu import TransformersCpuEngine, cache_plan, cpu_command

#: backend name -> class, in the order ``backend="auto"`` tries them (the first usable on this host wins)
BACKENDS: dict[str, type[Engine]] = {cls.backend: cls for cls in (SGLangEngine, TransformersCpuEngine)}


def engine_class(backend: str) -> type[Engine]:
    try:
        return BACKENDS[backend]
    except KeyError:
        raise ValueError(f"engine backend {backend!r} is unknown: expected one of {', '.join(BACKENDS)}") from None


def resolve_backend(backend: str) -> str:
    """``backend``, or for ``"auto"`` the first backend of ``BACKENDS`` this host can run."""
    if backend != "auto":
        return engine_class(backend).backend
    return next(name for name, cls in BACKENDS.items() if cls.usable_here())  # the CPU engine always is


def engine_for(config: EngineConfig, served_name: str = "crawl2serve", url: str | None = None) -> Engine:
    """The engine object of ``config.backend`` (answering at ``url``, default the config's host and port)."""
    return engine_class(config.backend)(config, served_name=served_name, url=url)


def attach(handle: EngineHandle, served_name: str = "crawl2serve") -> Engine:
    """The engine object of a running engine, for admin calls (load an adapter, swap weights, restore)."""
    config = EngineConfig(name=handle.name, backend=handle.kind, lora=handle.lora)
    return engine_for(config, served_name=served_name, url=handle.url)


__all__ = [
    "BACKENDS",
    "FEATURES",
    "OFFLINE_ENV",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineHandle",
    "Launch",
    "ModelFolders",
    "NotSupported",
    "Release",
    "SGLangEngine",
    "TransformersCpuEngine",
    "alive",
    "attach",
    "cache_plan",
    "complete",
    "cpu_command",
    "engine_class",
    "engine_for",
    "gpu_visible",
    "healthy",
    "load_handles",
    "log_tail",
    "resolve_backend",
    "save_handles",
    "sglang_command",
    "start_process",
    "stop_process",
    "tree_rss_mb",
    "wait_healthy",
]
