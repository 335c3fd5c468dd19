"""Issue 14's observed case through the ``drift_report`` asset and the drift sensor: 120 in-distribution requests
an hour after the 6 requests of the first run's demo must not be flagged."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import dagster as dg
import polars as pl
import pytest
from monitoring_traffic import ENGLISH, english, log_frame
from transformers import PreTrainedTokenizerFast

from crawl2serve.assets.monitoring.assets import drift_report, monitoring_partitions
from crawl2serve.assets.monitoring.drift import OUTPUT_COLUMNS, PROMPT_COLUMNS, SERVING_COLUMNS, corpus_snippets
from crawl2serve.assets.partitions import crawl_partitions
from crawl2serve.resources.feast_store import FeastStore
from crawl2serve.resources.io_manager import ParquetIOManager
from crawl2serve.resources.serving import ServingEngine

DEMO_PROMPTS = [
    "The itertools module provides",
    "To open a file for reading, use",
    "The json module can serialize",
    "A dictionary maps keys to",
    "The subprocess module lets you",
    "Regular expressions in Python are handled by",
]  # what `python -m crawl2serve.serving demo` sent until it drew corpus snippets


@pytest.fixture(scope="module")
def corpus_texts():
    rng = random.Random(11)
    return pl.DataFrame({"text": [english(rng) for _ in range(400)]})


def _write(root, asset, partition, df: pl.DataFrame):
    path = root / asset / partition / "data.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path)


def test_observed_case_in_distribution_traffic_against_a_6_request_baseline_is_not_flagged(
    tokenizer, corpus_texts, tmp_path
):
    """Issue 14: 120 corpus-snippet requests (2-token answers) an hour after the 6 demo requests (16-token answers,
    so slower): main compared prompt/output lengths, latency and completion tokens with those 6 requests and
    flagged 6 of 15 columns at p ~ 0 (share 0.40 against a threshold of 0.50)."""
    from crawl2serve.pipelines.sensors import drift_retraining
    from crawl2serve.resources.folders import FolderIOManager, TokenizerFolder
    from crawl2serve.resources.storage import DataRoot

    data_root = DataRoot(url=str(tmp_path))
    folders = FolderIOManager(data_root=data_root)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>").save_pretrained(tmp_path / "tokenizer" / "_")
    folders.record(dg.AssetKey("tokenizer"), None, TokenizerFolder(path=data_root.path("tokenizer"), version="bpe"))
    _write(tmp_path, "deduplicated_documents", "2026-11-20", corpus_texts)
    partition = "2026-11-23-07:00"
    earlier = (datetime.strptime(partition, "%Y-%m-%d-%H:%M") - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")
    rng = random.Random(12)
    demo = log_frame(
        DEMO_PROMPTS,
        seed=13,
        latency_scale=3.0,
        completion_tokens=[16] * 6,
        output=[" ".join(rng.choice(ENGLISH) for _ in range(12)) for _ in range(6)],
    )
    _write(tmp_path, "inference_log", earlier, demo)
    snippets = corpus_snippets(corpus_texts, 120, seed=7)["text"].to_list()
    current = log_frame(
        snippets,
        seed=14,
        completion_tokens=[2] * 120,
        output=[" ".join(rng.choice(ENGLISH) for _ in range(2)) for _ in range(120)],
    )
    _write(tmp_path, "inference_log", partition, current)

    instance = dg.DagsterInstance.ephemeral()
    result = materialize_drift_report(data_root, folders, partition, instance)
    assert result.success
    meta = result.asset_materializations_for_node("drift_report")[0].metadata
    records = {r.data["column"]: r.data for r in meta["per_column"].value.records}
    assert meta["drifted_columns"].value == [], records
    assert meta["dataset_drift"].value is False and meta["verdict"].value == "no drift"
    assert records["latency_ms"]["verdict"] == "no verdict (baseline n=6 < 200)"
    assert (records["latency_ms"]["n_ref"], records["latency_ms"]["n_cur"], records["latency_ms"]["p"]) == (
        6,
        120,
        None,
    )
    assert records["prompt_chars"]["reference"] == "corpus (baseline n=6 < 200)"
    assert records["prompt_chars"]["test"] == "K-S"
    assert set(records) == set(PROMPT_COLUMNS + OUTPUT_COLUMNS + SERVING_COLUMNS)
    assert records["prompt_language"]["verdict"] == "no drift" and 0 <= records["prompt_language"]["p"] <= 1
    assert records["prompt_language"]["n_cur"] == 120 and records["prompt_language"]["psi"] >= 0
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "drift_share_below_threshold")
    assert check.passed
    skip = drift_retraining(dg.build_sensor_context(instance=instance))
    assert isinstance(skip, dg.SkipReason) and "no drift" in skip.skip_message


def materialize_drift_report(data_root, folders, partition: str, instance=None) -> dg.ExecuteInProcessResult:
    """``drift_report`` for ``partition`` in process, its inputs (log hours, corpus, tokenizer) read from
    ``data_root`` by the real IO managers."""
    inputs = [  # read by the IO managers
        dg.SourceAsset("inference_log", partitions_def=monitoring_partitions),
        dg.SourceAsset("deduplicated_documents", partitions_def=crawl_partitions),
        dg.SourceAsset("tokenizer", io_manager_key="folder_io_manager"),
    ]
    return dg.materialize(
        [*inputs, drift_report],
        partition_key=partition,
        resources={
            "data_root": data_root,
            "io_manager": ParquetIOManager(data_root=data_root),
            "folder_io_manager": folders,
            "serving_engine": ServingEngine(data_root=data_root, feast_store=FeastStore(data_root=data_root)),
        },
        instance=instance or dg.DagsterInstance.ephemeral(),
    )
