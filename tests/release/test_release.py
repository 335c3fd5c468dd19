"""Evaluation, the validation gate and the MLflow registry on the embedded default (CPU)."""

import shutil

import dagster as dg
import pytest

from crawl2serve.assets.metadata import readable
from crawl2serve.assets.release.assets import model_evaluation, registered_model, rollback_model
from crawl2serve.assets.release.registry import CHAMPION, MODEL_NAME, PREVIOUS_TAG
from crawl2serve.assets.training.lora import lora_adapter
from crawl2serve.resources.folders import FolderIOManager
from crawl2serve.resources.io_manager import ParquetIOManager
from crawl2serve.resources.storage import DataRoot
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.resources.training import TrainingLauncher
from tests.support import CORPUS, DOWNSTREAM, EMBEDDED_LORA, UNDERTRAINED_DEGENERATE_SHARE, records

RELEASE = [lora_adapter, model_evaluation, registered_model]
ASSETS = [*CORPUS, *DOWNSTREAM, *RELEASE]  # the release assets with the inputs they load
GATE = {"max_sequences": 16, "max_degenerate_share": UNDERTRAINED_DEGENERATE_SHARE}


def release(resources, instance, **lora) -> dg.ExecuteInProcessResult:
    config = {**EMBEDDED_LORA, "max_steps": 30, "eval_every": 30, "checkpoint_every": 100, "fresh": True, **lora}
    return dg.materialize(
        ASSETS,
        selection=RELEASE,
        resources=resources,
        raise_on_error=False,
        instance=instance,
        run_config={"ops": {"lora_adapter": {"config": config}, "model_evaluation": {"config": GATE}}},
    )


def gate(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@pytest.fixture(scope="module")
def registry(lineage, tmp_path_factory):
    """A copy of the session's lineage with an empty registry, and a first champion released into it."""
    src, res, _ = lineage
    root = tmp_path_factory.mktemp("release")
    for name in ("base_model", "tokenizer", "training_dataset"):
        shutil.copytree(src / name, root / name)
    data_root = DataRoot(url=str(root))
    resources = {
        **res,
        "data_root": data_root,
        "io_manager": ParquetIOManager(data_root=data_root),
        "folder_io_manager": FolderIOManager(data_root=data_root),
        "training_launcher": TrainingLauncher(mode="local", nproc_per_node=1),
        "mlflow_tracking": MlflowTracking(data_root=data_root),
    }
    instance = dg.DagsterInstance.ephemeral()
    return resources, instance, release(resources, instance, max_steps=10)


def _client(resources):
    return resources["mlflow_tracking"].client().MlflowClient()


def test_lora_adapter_through_registered_model_on_the_embedded_default(registry):
    resources, _, first = registry
    assert first.success
    assert all(gate(first).values()) and set(gate(first)) == {
        "perplexity_improvement",
        "generation_smoke",
        "latency_p99_budget",
        "peak_memory_budget",
        "unsafe_rate",
        "shadow_test",
    }
    assert materialized(first) == {"lora_adapter", "model_evaluation", "registered_model"}
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in first.get_asset_materialization_events()}
    assert meta["model_evaluation"]["reference"].value == "base"  # no champion yet
    comparison = {r["metric"]: r for r in records(meta["model_evaluation"]["comparison"])}
    assert {"perplexity", "unsafe_rate", "bits_per_byte", "degenerate_share"} <= set(comparison)
    assert set(comparison["perplexity"]) == {"metric", "candidate", "base"}
    assert len(comparison["perplexity"]["candidate"].replace(".", "").lstrip("0")) <= 4, "rounded for reading"
    assert 0 < meta["model_evaluation"]["candidate_bits_per_byte"].value < 10
    samples = records(meta["model_evaluation"]["samples"])
    assert set(samples[0]) == {"prompt", "candidate", "base"}
    assert any("The json module provides functions to" in s["prompt"] for s in samples)
    champion = _client(resources).get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert str(champion.version) == "1"
    run = _client(resources).get_run(champion.tags["training_run_id"])
    run_url = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert meta["lora_adapter"]["mlflow_run"].value == run_url
    assert meta["model_evaluation"]["candidate_run"].value == run_url
    assert meta["registered_model"]["training_run"].value == run_url
    assert meta["registered_model"]["model_version"].value == f"http://127.0.0.1:5000/#/models/{MODEL_NAME}/versions/1"
    lineage = {r["tag"]: r["value"] for r in records(meta["registered_model"]["lineage"])}
    assert lineage["training_run_id"] == run.info.run_id and lineage["evaluated_against"] == "base"
    metrics = {r["metric"]: r["value"] for r in records(meta["registered_model"]["metrics"])}
    assert metrics["perplexity"] == readable(float(champion.tags["eval.perplexity"]))
    assert champion.tags["training_run_id"] != "unknown" and champion.tags["git_commit"]
    assert float(champion.tags["eval.perplexity"]) > 0
    model = resources["mlflow_tracking"].client().pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION}")
    out = model.predict({"prompt": ["The json module"]}, params={"max_new_tokens": 4})
    assert len(out) == 1 and isinstance(out[0], str)


def test_worse_candidate_is_blocked_better_one_promoted_and_rollback_restores(registry):
    resources, instance, _ = registry
    client = _client(resources)

    again = dg.materialize(
        ASSETS,
        selection=[model_evaluation, registered_model],
        resources=resources,
        instance=instance,
        run_config={"ops": {"model_evaluation": {"config": GATE}}},
    )  # the same adapter again: it is the champion, nothing to release
    assert again.success
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in again.get_asset_materialization_events()}
    assert meta["registered_model"]["unchanged"].value is True
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == 1

    worse = release(resources, instance, learning_rate=0.0)  # an adapter that learns nothing: no better than the base
    assert not worse.success
    assert gate(worse)["perplexity_improvement"] is False
    assert "registered_model" not in materialized(worse)
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "1"

    better = release(resources, instance, max_steps=60)
    assert better.success, gate(better)
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert str(champion.version) == "2" and champion.tags[PREVIOUS_TAG] == "1"
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in better.get_asset_materialization_events()}
    assert meta["model_evaluation"]["reference"].value == "champion"
    assert meta["model_evaluation"]["champion_model"].value.endswith(f"#/models/{MODEL_NAME}/versions/1")

    result = rollback_model.execute_in_process(resources={"mlflow_tracking": resources["mlflow_tracking"]})
    assert result.success
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "1"
    assert {str(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'")} == {"1", "2"}


def _shadow_hour(root, instance, hour: str, challenger: str, *, failing: bool) -> dict:
    """Log 24 requests of ``hour`` (``YYYY-MM-DD-HH:00``) answered by champion "1" and mirrored to
    ``challenger`` (its answers failed when ``failing``), as the gateway writes them, and materialize
    ``inference_log`` and ``shadow_report`` on that hour: the shadow test the gate reads."""
    from crawl2serve.assets.monitoring.assets import inference_log
    from crawl2serve.assets.monitoring.comparisons import shadow_report
    from crawl2serve.resources.feast_store import FeastStore
    from crawl2serve.resources.serving import ServingEngine
    from crawl2serve.serving.gateway.logrow import LogRow
    from crawl2serve.serving.gateway.logstore import InferenceLog

    data_root = DataRoot(url=str(root))
    serving = ServingEngine(data_root=data_root, feast_store=FeastStore(data_root=data_root), feast_tiers=False)
    ts = f"{hour[:10]}T{hour[11:13]}:30:00.000000+00:00"
    with InferenceLog(serving.gateway_settings().log_dir) as log:
        for i in range(24):
            common = {"request_id": f"req-{hour}-{i}", "ts": ts, "tenant": "acme", "prompt": f"The json module {i}"}
            log.append(LogRow(**common, model_version="1", output="provides functions", latency_ms=40.0))
            log.append(
                LogRow(
                    **common,
                    role="shadow",
                    route="shadow",
                    model_version=challenger,
                    status=502 if failing else 200,
                    error="engine_request_failed" if failing else None,
                    output="" if failing else "provides functions to",
                    latency_ms=45.0,
                )
            )
    result = dg.materialize(
        [inference_log, shadow_report],
        partition_key=hour,
        resources={"io_manager": ParquetIOManager(data_root=data_root), "serving_engine": serving},
        instance=instance,
        run_config={"ops": {"shadow_report": {"config": {"perplexity_outputs": 0}}}},
    )
    return {k: v.value for k, v in result.asset_materializations_for_node("shadow_report")[0].metadata.items()}


def test_a_failed_shadow_test_blocks_the_challenger_and_a_passed_one_promotes_it(registry, tmp_path):
    """Version 2 (the current lora_adapter, rolled back above) is shadowed: a failed shadow test on live traffic
    blocks it at the gate; once a later hour passes, the gate (require_shadow) lets it through and
    registered_model promotes version 2 itself, registering nothing new."""
    resources, instance, _ = registry
    client = _client(resources)
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "1"
    failed = _shadow_hour(tmp_path, instance, "2026-11-30-10:00", "2", failing=True)
    assert failed["verdict"] == "fail" and failed["shadow_error_rate"] == 1.0

    def evaluate(**config):
        return dg.materialize(
            ASSETS,
            selection=[model_evaluation, registered_model],
            resources=resources,
            instance=instance,
            raise_on_error=False,
            run_config={"ops": {"model_evaluation": {"config": {**GATE, **config}}}},
        )

    blocked = evaluate()
    assert not blocked.success and gate(blocked)["shadow_test"] is False
    assert all(passed for name, passed in gate(blocked).items() if name != "shadow_test"), gate(blocked)
    check = next(e for e in blocked.get_asset_check_evaluations() if e.check_name == "shadow_test")
    assert check.metadata["verdict"].value == "fail" and check.metadata["version"].value == "2"
    assert check.metadata["partition"].value == "2026-11-30-10:00"
    assert "registered_model" not in materialized(blocked)
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "1"

    passed = _shadow_hour(tmp_path, instance, "2026-11-30-11:00", "2", failing=False)
    assert passed["verdict"] == "pass"
    promoted = evaluate(require_shadow=True)
    assert promoted.success, gate(promoted)
    meta = {
        e.asset_key.to_user_string(): e.materialization.metadata for e in promoted.get_asset_materialization_events()
    }
    assert meta["model_evaluation"]["shadow_verdict"].value == "pass"
    assert meta["registered_model"]["version"].value == "2" and meta["registered_model"]["unchanged"].value is False
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert str(champion.version) == "2" and champion.tags[PREVIOUS_TAG] == "1"
    assert {str(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'")} == {"1", "2"}
