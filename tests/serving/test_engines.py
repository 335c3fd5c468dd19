"""The engine interface: backends by name, what each can do, handles written before supervisors, and the
serving resource's engines built from the registry (no processes)."""

import pytest

from crawl2serve.resources.feast_store import FeastStore
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.storage import DataRoot
from crawl2serve.serving.engines import (
    BACKENDS,
    EngineConfig,
    EngineHandle,
    NotSupported,
    SGLangEngine,
    TransformersCpuEngine,
    attach,
    engine_class,
    resolve_backend,
)


def test_backends_by_name_and_what_each_can_do():
    assert {"sglang": SGLangEngine, "cpu": TransformersCpuEngine} == BACKENDS
    assert (SGLangEngine.serves_adapters, SGLangEngine.swaps_weights, SGLangEngine.runs_on_kubernetes) == (True,) * 3
    assert (TransformersCpuEngine.serves_adapters, TransformersCpuEngine.runs_on_kubernetes) == (False, False)
    with pytest.raises(ValueError, match="engine backend 'vllm' is unknown: expected one of sglang, cpu"):
        engine_class("vllm")
    cpu = engine_class("cpu")(EngineConfig(name="fallback", backend="cpu", port=30002))
    assert cpu.url == "http://127.0.0.1:30002" and cpu.health_path == "/health"
    for call in (
        lambda: cpu.load_adapter("v2", "/x"),
        lambda: cpu.unload_adapter("v2"),
        lambda: cpu.update_weights("/x"),
    ):
        with pytest.raises(NotSupported, match="cpu engine fallback: cannot"):
            call()


def test_auto_is_the_first_backend_this_host_can_run(monkeypatch):
    monkeypatch.setattr(SGLangEngine, "usable_here", classmethod(lambda cls: False))
    assert resolve_backend("auto") == "cpu"
    monkeypatch.setattr(SGLangEngine, "usable_here", classmethod(lambda cls: True))
    assert resolve_backend("auto") == "sglang" and resolve_backend("cpu") == "cpu"


def test_a_handle_written_before_supervisors_reads_as_unsupervised():
    old = {
        "name": "primary",
        "kind": "cpu",
        "url": "http://127.0.0.1:30000",
        "pid": 42,
        "command": ["x"],
        "log": "l",
        "base_model": "/b",
        "anchor": "1",
        "models": {"base": "/m"},
        "lora": True,
        "version": "transformers 5.24.0",
        "started": 1.0,
    }
    handle = EngineHandle.from_json(old)
    assert (handle.supervised, handle.adapters, handle.weights) == (False, {}, None)
    assert EngineHandle.from_json(handle.to_json()) == handle
    engine = attach(EngineHandle.from_json({**old, "kind": "sglang", "url": "http://10.0.0.7:30000"}))
    assert isinstance(engine, SGLangEngine) and engine.url == "http://10.0.0.7:30000"


def _resource(tmp_path, **kwargs) -> ServingEngine:
    data_root = DataRoot(url=str(tmp_path))
    return ServingEngine(data_root=data_root, feast_store=FeastStore(data_root=data_root), **kwargs)


def test_the_resource_builds_its_engines_from_the_registry(tmp_path):
    sglang = _resource(
        tmp_path,
        backend="sglang",
        sglang_python="/sg/bin/python",
        sglang_args=["--tp-size", "2"],
        champion_engine_port=30001,
        fallback_cpu_port=30002,
    )
    champion, primary, fallback = sglang.engine_configs()
    assert (champion.name, champion.backend, champion.lora, champion.python) == (
        "champion",
        "sglang",
        False,
        "/sg/bin/python",
    )
    assert (primary.backend, primary.extra_args, primary.memory_budget_mb) == ("sglang", ["--tp-size", "2"], None)
    assert (fallback.name, fallback.backend, fallback.port) == ("fallback", "cpu", 30002)
    assert (fallback.extra_args, fallback.memory_budget_mb) == ([], 2048)
    cpu = _resource(tmp_path, backend="cpu", champion_engine_port=30001, fallback_cpu_port=30002)
    (only,) = cpu.engine_configs()  # the CPU engine swaps no weights, and is its own fallback
    assert (only.name, only.backend, only.memory_budget_mb) == ("primary", "cpu", 2048)
    with pytest.raises(ValueError, match="serving_engine.backend='gpu': expected auto, sglang, cpu"):
        _resource(tmp_path, backend="gpu").engine_configs()
