"""The whole lineage in one in-process run of the ``main`` job: crawl → … → registered model → served behind
the gateway; then real OpenAI-client traffic with a tenant tier from Feast and usage pushed back to Feast."""

import time
from datetime import datetime, timezone

import dagster as dg
import openai
import pandas as pd
import pytest

from pipelines.definitions import ASSETS
from pipelines.jobs import main_job
from resources.serving import ServingEngine
from resources.tracking import MlflowTracking
from resources.training import TrainingLauncher
from serving.gateway.auth import KeyStore
from tests.serving.helpers import free_port
from tests.support import PARTITION, SEQ_LEN, all_resources, run_config


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    res = all_resources(root)
    res.update(training_launcher=TrainingLauncher(mode="local", nproc_per_node=1),
               mlflow_tracking=MlflowTracking(data_root=res["data_root"]),
               serving_engine=ServingEngine(data_root=res["data_root"], feast_store=res["feast_store"], backend="cpu",
                                            engine_port=free_port(), gateway_port=free_port(),
                                            usage_push_interval_s=1.0))
    job = dg.Definitions(assets=ASSETS, jobs=[main_job], resources=res).resolve_job_def("main")
    config = run_config(120)
    config["ops"].update(training_dataset={"config": {"seq_len": SEQ_LEN}},
                         lora_adapter={"config": {"max_steps": 10, "eval_every": 10, "checkpoint_every": 100}},
                         model_evaluation={"config": {"max_sequences": 16}})
    result = job.execute_in_process(partition_key=PARTITION, run_config=config, raise_on_error=False,
                                    instance=dg.DagsterInstance.ephemeral())
    yield root, res, result
    res["serving_engine"].deployment().stop_all()


def test_the_serving_asset_materializes_last_after_registered_model(whole):
    _, _, result = whole
    assert result.success
    order = [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
    assert order[-1] == "sglang_deployment" and order.index("registered_model") < order.index("sglang_deployment")
    assert {"raw_crawl", "training_dataset", "lora_adapter", "model_evaluation"} <= set(order)
    meta = result.asset_materializations_for_node("sglang_deployment")[0].metadata
    assert meta["backend"].value == "cpu" and meta["model_version"].value == "1"
    assert meta["engine_version"].value.startswith("transformers ")
    assert meta["routing"].value["stable"] == "1"


def test_openai_traffic_uses_the_feast_tier_and_pushes_usage_back(whole):
    _, res, _ = whole
    engine = res["serving_engine"]
    store = res["feast_store"].store()
    from feast.data_source import PushMode  # after the store: importing feast is slow, keep it to this test

    # an operator (or billing) sets the tenant's tier in the feature store
    store.push("tenant_stats_push", pd.DataFrame([{"tenant_id": "acme", "tier": "enterprise", "requests_last_hour": 0,
                                                   "tokens_last_hour": 0,
                                                   "event_timestamp": datetime.now(timezone.utc)}]),
               to=PushMode.ONLINE)
    key, _ = KeyStore.load(engine.gateway_settings().keys_file).add("acme", "free")
    time.sleep(1.1)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{engine.gateway_port}/v1", api_key=key, max_retries=0)
    raw = client.completions.with_raw_response.create(model="crawl2serve", prompt="The module", max_tokens=4)
    assert raw.headers["x-crawl2serve-tier"] == "enterprise", "the tier comes from Feast, not from the key"
    for _ in range(4):
        client.chat.completions.create(model="crawl2serve", messages=[{"role": "user", "content": "The"}],
                                       max_tokens=4)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = store.get_online_features(features=["tenant_stats:requests_last_hour", "tenant_stats:tokens_last_hour"],
                                        entity_rows=[{"tenant_id": "acme"}]).to_dict()
        if (row["requests_last_hour"][0] or 0) >= 5:
            break
        time.sleep(0.5)
    assert row["requests_last_hour"][0] == 5 and row["tokens_last_hour"][0] > 20
