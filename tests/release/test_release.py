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
