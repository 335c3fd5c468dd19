"""The whole lineage in one in-process run of the ``main`` job: crawl → … → registered model → served behind
the gateway; then real OpenAI-client traffic with a tenant tier from Feast and usage pushed back to Feast."""

import json
import random
import string
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import openai
import pandas as pd
import polars as pl
import pytest

from crawl2serve.assets.monitoring.assets import drift_report, inference_log
from crawl2serve.assets.monitoring.drift import corpus_snippets
from crawl2serve.assets.monitoring.logs import hour_partitions, read_spool
from crawl2serve.definitions import defs as loaded
from crawl2serve.pipelines.jobs import main_job
from crawl2serve.pipelines.sensors import drift_retraining, new_champion
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.resources.training import TrainingLauncher
from crawl2serve.serving.gateway.auth import KeyStore
from crawl2serve.serving.gateway.routing import read_routing, write_routing
from tests.serving.helpers import free_port
from tests.support import PARTITION, SEQ_LEN, UNDERTRAINED_DEGENERATE_SHARE, all_resources, run_config


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    res = all_resources(root)
    res.update(
        training_launcher=TrainingLauncher(mode="local", nproc_per_node=1),
        mlflow_tracking=MlflowTracking(data_root=res["data_root"]),
        serving_engine=ServingEngine(
            data_root=res["data_root"],
            feast_store=res["feast_store"],
            backend="cpu",
            engine_port=free_port(),
            gateway_port=free_port(),
            usage_push_interval_s=1.0,
        ),
    )
    job = dg.Definitions(assets=loaded.assets, jobs=[main_job], resources=res).resolve_job_def("main")
    config = run_config(120)
    config["ops"].update(
        training_dataset={"config": {"seq_len": SEQ_LEN}},
        lora_adapter={"config": {"max_steps": 10, "eval_every": 10, "checkpoint_every": 100}},
        model_evaluation={"config": {"max_sequences": 16, "max_degenerate_share": UNDERTRAINED_DEGENERATE_SHARE}},
    )
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(partition_key=PARTITION, run_config=config, raise_on_error=False, instance=instance)
    yield root, res, result, instance
    res["serving_engine"].deployment().stop_all()


def test_the_serving_asset_materializes_last_after_registered_model(whole):
    _, _, result, _ = whole
    assert result.success
    order = [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
    assert order[-1] == "sglang_deployment" and order.index("registered_model") < order.index("sglang_deployment")
    assert {"raw_crawl", "training_dataset", "lora_adapter", "model_evaluation"} <= set(order)
    meta = result.asset_materializations_for_node("sglang_deployment")[0].metadata
    assert meta["backend"].value == "cpu" and meta["model_version"].value == "1"
    assert meta["engine_version"].value.startswith("transformers ")
    assert meta["routing"].value["stable"] == "1"


def _send(client, prompts):
    for prompt in prompts:
        client.completions.create(model="crawl2serve", prompt=prompt, max_tokens=2)


def _monitor(res, instance, partition):
    result = dg.materialize(
        [inference_log, drift_report],
        resources=res,
        instance=instance,
        partition_key=partition,
        selection=[inference_log, drift_report],
    )
    assert result.success
    return result.asset_materializations_for_node("drift_report")[0].metadata


def test_drift_from_shifted_traffic_requests_one_retraining_run(whole):
    """Runs before any other test sends traffic through this gateway: the hour holds only what it sends."""
    root, res, _, instance = whole
    if datetime.now(UTC).minute >= 58:  # keep all of this test's traffic in one hourly partition
        time.sleep(150)
    engine = res["serving_engine"]
    key, _ = KeyStore.load(engine.gateway_settings().keys_file).add("drift-test", "enterprise")
    time.sleep(1.1)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{engine.gateway_port}/v1", api_key=key, max_retries=0)
    corpus = pl.read_parquet(root / "deduplicated_documents" / PARTITION / "data.parquet")
    _send(client, corpus_snippets(corpus, 60, seed=7)["text"].to_list())  # traffic like the training data
    time.sleep(0.3)
    rows, _ = read_spool(engine.gateway_settings().log_dir, hour_partitions(engine.gateway_settings().log_dir))
    partition = rows["ts"].max().strftime("%Y-%m-%d-%H:00")
    calm = _monitor(res, instance, partition)
    assert calm["requests"].value >= 60 and calm["dataset_drift"].value is False, calm["per_column"].value
    assert (root / "drift_report" / partition / "report.html").stat().st_size > 100_000
    sensor_ctx = dg.build_sensor_context(instance=instance)
    assert isinstance(drift_retraining(sensor_ctx), dg.SkipReason)

    rng = random.Random(3)  # clearly shifted: long runs of random letters and another language
    shifted = [
        "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(40, 120)))
        if i % 2
        else "Der Ausschuss prüfte den Jahresbericht und beschloss, die Öffnungszeiten der "
        f"Bibliothek zu verlängern, Nummer {i}."
        for i in range(120)
    ]
    _send(client, shifted)
    drifted = _monitor(res, instance, partition)
    assert drifted["dataset_drift"].value is True and "prompt_unk_share" in drifted["drifted_columns"].value
    drift_ctx = dg.build_sensor_context(instance=instance, cursor=sensor_ctx.cursor)
    request = drift_retraining(drift_ctx)
    assert isinstance(request, dg.RunRequest) and request.run_key == f"drift-{partition}"
    assert request.partition_key == PARTITION and request.job_name in (None, "retrain")
    # evaluated again from the stored cursor (as the daemon does, also after a restart): the episode is handled
    assert isinstance(
        drift_retraining(dg.build_sensor_context(instance=instance, cursor=drift_ctx.cursor)), dg.SkipReason
    )

    # with an earlier hour of traffic, prompt shape, outputs, latency and verdicts are tested against it too
    earlier = (datetime.strptime(partition, "%Y-%m-%d-%H:%M") - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")
    (root / "inference_log" / earlier).mkdir(parents=True, exist_ok=True)
    pl.read_parquet(root / "inference_log" / partition / "data.parquet").write_parquet(
        root / "inference_log" / earlier / "data.parquet"
    )
    with_baseline = _monitor(res, instance, partition)
    assert json.loads(with_baseline["reference"].value)["baseline_requests"] == drifted["requests"].value
    assert all(f"| {c} |" in with_baseline["per_column"].value for c in ("latency_ms", "prompt_words", "output_chars"))


def test_new_champion_sensor_serves_a_moved_alias_once(whole):
    _, res, _, instance = whole
    resources = {"mlflow_tracking": res["mlflow_tracking"], "serving_engine": res["serving_engine"]}
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        assert isinstance(new_champion(ctx), dg.SkipReason), "v1 is served already"
    routing_file = f"{res['serving_engine'].state_dir()}/routing.json"
    table = read_routing(routing_file)
    write_routing(routing_file, {**table, "stable": "base"})  # as if the alias had moved away from what is served
    try:
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            request = new_champion(ctx)
            cursor = ctx.cursor
        assert isinstance(request, dg.RunRequest) and request.tags["crawl2serve/champion"] == "1"
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as again:
            assert isinstance(new_champion(again), dg.SkipReason)
    finally:
        write_routing(routing_file, table)


def test_openai_traffic_uses_the_feast_tier_and_pushes_usage_back(whole):
    _, res, _, _ = whole
    engine = res["serving_engine"]
    store = res["feast_store"].store()
    from feast.data_source import PushMode  # after the store: importing feast is slow, keep it to this test

    # an operator (or billing) sets the tenant's tier in the feature store
    store.push(
        "tenant_stats_push",
        pd.DataFrame(
            [
                {
                    "tenant_id": "acme",
                    "tier": "enterprise",
                    "requests_last_hour": 0,
                    "tokens_last_hour": 0,
                    "event_timestamp": datetime.now(UTC),
                }
            ]
        ),
        to=PushMode.ONLINE,
    )
    key, _ = KeyStore.load(engine.gateway_settings().keys_file).add("acme", "free")
    time.sleep(1.1)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{engine.gateway_port}/v1", api_key=key, max_retries=0)
    raw = client.completions.with_raw_response.create(model="crawl2serve", prompt="The module", max_tokens=4)
    assert raw.headers["x-crawl2serve-tier"] == "enterprise", "the tier comes from Feast, not from the key"
    for _ in range(4):
        client.chat.completions.create(model="crawl2serve", messages=[{"role": "user", "content": "The"}], max_tokens=4)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = store.get_online_features(
            features=["tenant_stats:requests_last_hour", "tenant_stats:tokens_last_hour"],
            entity_rows=[{"tenant_id": "acme"}],
        ).to_dict()
        if (row["requests_last_hour"][0] or 0) >= 5:
            break
        time.sleep(0.5)
    assert row["requests_last_hour"][0] == 5 and row["tokens_last_hour"][0] > 20
