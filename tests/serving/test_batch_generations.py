"""The ``batch_generations`` asset materialized in process against the real CPU engine."""

import json

import dagster as dg
import polars as pl
import pytest

from crawl2serve.assets.release.evaluate import FIXED_PROMPTS
from crawl2serve.assets.release.registry import adapter_sha256
from crawl2serve.assets.serving.batch import batch_generations
from crawl2serve.resources.feast_store import FeastStore
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.storage import DataRoot
from crawl2serve.serving.gateway.routing import write_routing
from tests.serving.conftest import make_adapter


@pytest.fixture
def served(tmp_path, cpu_engine, tiny_model, tiny_base):
    """A data root whose serving state routes version 1 to the CPU engine (as sglang_deployment leaves it)."""
    data_root = DataRoot(url=str(tmp_path / "data"))
    engine = ServingEngine(
        data_root=data_root,
        feast_store=FeastStore(data_root=data_root),
        backend="cpu",
        engine_port=cpu_engine.port,
        feast_tiers=False,
    )
    state = engine.state_dir()
    table = {"model": "crawl2serve", "stable": "1", "canary": None, "canary_share": 0.0}
    write_routing(f"{state}/routing.json", {**table, "versions": {"1": {"primary": tiny_model}}})
    adapter = make_adapter(tiny_base, tmp_path / "adapter", seed=3)
    with open(f"{state}/adapters.json", "w") as f:
        json.dump({"1": adapter}, f)
    return data_root, engine, adapter


def materialize(data_root, engine, config: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [batch_generations],
        resources={"data_root": data_root, "serving_engine": engine},
        run_config={"ops": {"batch_generations": {"config": config}}},
    )


def test_batch_generations_writes_outputs_with_lineage_and_resumes(served, tmp_path, cpu_engine, tiny_model):
    data_root, engine, adapter = served
    prompts = tmp_path / "prompts.parquet"
    pl.DataFrame(
        {"id": [f"q{i}" for i in range(10)], "prompt": [f"The committee {i}" for i in range(10)]}
    ).write_parquet(prompts)
    config = {"prompts_path": str(prompts), "max_tokens": 5, "concurrency": 4, "chunk_size": 3}
    result = materialize(data_root, engine, config)
    assert result.success
    meta = result.asset_materializations_for_node("batch_generations")[0].metadata
    assert meta["rows"].value == 10 and meta["sent"].value == 10 and meta["resumed_rows"].value == 0
    assert meta["requests_per_s"].value > 0 and meta["output_tokens_per_s"].value > 0
    out = pl.read_parquet(data_root.path("batch_generations", None, "generations.parquet"))
    assert out["id"].to_list() == [f"q{i}" for i in range(10)]
    assert (out["status"] == 200).all() and (out["completion_tokens"] == 5).all()
    assert out["model_version"].unique().to_list() == ["1"]
    assert out["adapter_sha256"].unique().to_list() == [adapter_sha256(adapter)]
    assert json.loads(out["sampling"][0]) == {"max_tokens": 5, "temperature": 0.0, "top_p": 1.0}
    assert out["engine_url"][0] == cpu_engine.url and out["served_model"][0] == tiny_model
    import httpx

    direct = httpx.post(
        cpu_engine.url + "/v1/completions",
        json={"model": tiny_model, "prompt": "The committee 7", "max_tokens": 5, "temperature": 0},
        timeout=60,
    ).json()
    assert out.filter(pl.col("id") == "q7")["output"][0] == direct["choices"][0]["text"]
    again = materialize(data_root, engine, config)  # the same run key: everything is answered already
    meta = again.asset_materializations_for_node("batch_generations")[0].metadata
    assert (meta["resumed_rows"].value, meta["sent"].value, meta["rows"].value) == (10, 0, 10)


def test_the_default_prompt_set_is_the_evaluations(served):
    data_root, engine, _ = served
    assert materialize(data_root, engine, {"max_tokens": 3, "chat": True}).success
    out = pl.read_parquet(data_root.path("batch_generations", None, "generations.parquet"))
    assert out["prompt"].to_list() == list(FIXED_PROMPTS) and (out["completion_tokens"] == 3).all()


def test_a_prompt_set_without_the_prompt_column_fails_clearly(served, tmp_path):
    data_root, engine, _ = served
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "a"}\n')
    with pytest.raises(dg.Failure, match="has no column 'prompt'"):
        materialize(data_root, engine, {"prompts_path": str(path)})
