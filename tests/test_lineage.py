"""The whole lineage in one in-process run of the ``main`` job: crawl → … → registered model → served behind
the gateway; then real OpenAI-client traffic with a tenant tier from Feast and usage pushed back to Feast."""

import random
import string
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import openai
import pandas as pd
import polars as pl
import pytest

from crawl2serve.assets.metadata import GPU_POOL, OWNERS, code_version, readable
from crawl2serve.assets.monitoring.assets import drift_report, inference_log
from crawl2serve.assets.monitoring.drift import corpus_snippets
from crawl2serve.assets.monitoring.logs import read_spool
from crawl2serve.definitions import defs as loaded
from crawl2serve.pipelines.jobs import main_job
from crawl2serve.pipelines.sensors import drift_retraining, new_champion
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.resources.training import TrainingLauncher
from crawl2serve.serving.gateway.auth import KeyStore
from crawl2serve.serving.gateway.hours import hour_dirs
from crawl2serve.serving.gateway.routing import read_routing, write_routing
from tests.serving.helpers import free_port
from tests.support import (
    EMBEDDED_LORA,
    PARTITION,
    SEQ_LEN,
    UNDERTRAINED_DEGENERATE_SHARE,
    all_resources,
    assert_column_schemas,
    records,
    run_config,
)


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
        lora_adapter={"config": {**EMBEDDED_LORA, "max_steps": 10, "eval_every": 10, "checkpoint_every": 100}},
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
    (engine,) = records(meta["engines"])
    assert engine["kind"] == "cpu" and engine["engine_version"].startswith("transformers ") and engine["pid"] > 0
    versions = {r["version"]: r for r in records(meta["versions"])}
    assert versions["1"]["role"] == "stable" and versions["1"]["traffic_share"] == 1.0
    assert meta["model_version_page"].value == "http://127.0.0.1:5000/#/models/crawl2serve-lora/versions/1"


def test_every_materialization_carries_owners_code_version_and_column_schemas(whole):
    root, _, result, instance = whole
    specs = {s.key: s for a in loaded.assets for s in a.specs}
    events = result.get_asset_materialization_events()
    assert len(events) == 16
    for event in events:
        spec = specs[event.asset_key]
        assert event.materialization.tags["dagster/code_version"] == code_version(spec.group_name)
        assert spec.owners == OWNERS[spec.group_name]
    assert assert_column_schemas(root, result) == {
        "raw_crawl",
        "extracted_pages",
        "clean_documents",
        "document_rejections",
        "deduplicated_documents",
        "duplicate_clusters",
    }
    steps = {e.step_key: e for e in result.all_events if e.is_step_start}
    assert {k for k, op in ((k, loaded.resolve_assets_def(k).op) for k in steps) if op.pool == GPU_POOL} == {
        "lora_adapter",
        "model_evaluation",
        "sglang_deployment",
    }


def _send(client, prompts):
    for prompt in prompts:
        client.completions.create(model="crawl2serve", prompt=prompt, max_tokens=2)


def _monitor(res, instance, partition):
    result = dg.materialize(
        loaded.assets,  # with the upstream assets whose outputs drift_report loads (corpus, tokenizer)
        resources=res,
        instance=instance,
        partition_key=partition,
        selection=[inference_log, drift_report],
    )
    assert result.success
    assert assert_column_schemas(res["data_root"].local_path(res["data_root"].root), result) == {"inference_log"}
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
    rows, _ = read_spool(engine.gateway_settings().log_dir, hour_dirs(engine.gateway_settings().log_dir))
    partition = rows["ts"].max().strftime("%Y-%m-%d-%H:00")
    calm = _monitor(res, instance, partition)
    assert calm["requests"].value >= 60 and calm["dataset_drift"].value is False, records(calm["per_column"])
    assert (root / "drift_report" / partition / "report.html").stat().st_size > 100_000
    # the report opens over HTTP from the UI: the link is the gateway's read-only route, never file://
    url = calm["report_url"].value
    assert url == f"http://127.0.0.1:{engine.gateway_port}/reports/drift/{partition}"
    page = httpx.get(url, timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.content == (root / "drift_report" / partition / "report.html").read_bytes()
    assert not any(str(getattr(v, "value", v)).startswith("file://") for v in calm.values())
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
    reference = {r["source"]: r["values"] for r in records(with_baseline["reference"])}
    assert reference["baseline_requests"] == drifted["requests"].value
    per_column = {r["column"]: r for r in records(with_baseline["per_column"])}
    assert {"latency_ms", "prompt_words", "output_chars"} <= set(per_column)
    assert all(r["p"] is None or r["p"] == readable(r["p"]) for r in per_column.values()), "p rounded for reading"


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


def test_the_first_run_summary_reads_the_instance_and_the_data_root(whole):
    """`./dev.sh main` ends with this summary: what ran (from the run's events), the drift verdict, a completion
    the gateway served (from the inference log), what runs and where to look (from the resources)."""
    from crawl2serve.pipelines.summary import summary

    root, res, result, instance = whole
    hours = sorted(instance.get_materialized_partitions(dg.AssetKey("drift_report")))
    assert hours, "runs after test_drift_from_shifted_traffic_requests_one_retraining_run"
    hour = hours[-1]
    text = summary(instance, res, PARTITION, hour)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    passed = [e for e in result.get_asset_check_evaluations() if e.passed]
    assert f"main [{PARTITION}]: SUCCESS, {len(materialized)} assets materialized; {len(passed)} checks passed" in text
    drift = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("drift_report"), asset_partitions=[hour]), limit=1
    ).records[0]
    verdict = drift.event_log_entry.asset_materialization.metadata["verdict"].value
    assert f"drift report [{hour}]: {verdict} (" in text
    answered = pl.read_parquet(root / "inference_log" / hour / "data.parquet").filter(pl.col("status") == 200)
    visible = answered.filter(pl.col("output").str.strip_chars() != "")
    shown = visible if visible.height else answered  # the first answered request, one with visible text if any
    first = " ".join(shown["prompt"][0].split())[:30]  # clipped as the summary clips it
    assert repr(first)[1:-1] in text
    engine = res["serving_engine"]
    assert f"gateway   http://127.0.0.1:{engine.gateway_port} healthy" in text
    assert f"--keys-file {engine.gateway_settings().keys_file} --tenant me" in text
    assert f"--backend-store-uri {res['mlflow_tracking'].uri}" in text
