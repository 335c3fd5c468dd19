"""Retrieval health in the drift report: empty-retrieval share and context scores of crawl2serve-rag traffic,
this hour against the baseline hours; the figures alone, then through the ``drift_report`` asset."""

import random
from datetime import datetime, timedelta

import dagster as dg
import polars as pl
from monitoring_traffic import english, log_frame
from test_drift_observed_case import _write, materialize_drift_report
from transformers import PreTrainedTokenizerFast

from crawl2serve.assets.monitoring.retrieval_stats import retrieval_summary
from crawl2serve.resources.folders import FolderIOManager, TokenizerFolder
from crawl2serve.resources.storage import DataRoot
from tests.support import facts


def _rag_hour(n: int, empty: int, score: float, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    hits = [0] * empty + [4] * (n - empty)
    return log_frame(
        [english(rng) for _ in range(n)],
        seed=seed,
        model=["crawl2serve-rag"] * n,
        retrieval_version=["v1"] * n,
        retrieval_hits=hits,
        retrieval_ms=[rng.uniform(2, 6) for _ in range(n)],
        retrieval_top_score=[None if h == 0 else min(1.0, score + rng.uniform(-0.05, 0.05)) for h in hits],
    )


def test_summary_counts_empty_retrievals_and_compares_scores_with_the_baseline():
    plain = log_frame(["not a rag request"] * 5)
    now = pl.concat([_rag_hour(40, 10, 0.45, 1), plain])
    before = _rag_hour(40, 0, 0.8, 2)
    summary = retrieval_summary(now, before)
    assert summary["rag_requests"] == 40 and summary["empty_retrieval_share"] == 0.25
    assert summary["baseline_empty_retrieval_share"] == 0.0
    assert abs(summary["top_score_p50"] - 0.45) < 0.05 and abs(summary["baseline_top_score_p50"] - 0.8) < 0.05
    assert summary["top_score_ks_p"] < 1e-6
    alone = retrieval_summary(plain, None)
    assert alone["rag_requests"] == 0 and alone["empty_retrieval_share"] is None and alone["top_score_ks_p"] is None


def test_drift_report_metadata_has_the_hours_retrieval_figures(tokenizer, tmp_path):
    data_root = DataRoot(url=str(tmp_path))
    folders = FolderIOManager(data_root=data_root)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>").save_pretrained(tmp_path / "tokenizer" / "_")
    folders.record(dg.AssetKey("tokenizer"), None, TokenizerFolder(path=data_root.path("tokenizer"), version="bpe"))
    rng = random.Random(5)
    _write(tmp_path, "deduplicated_documents", "2026-11-20", pl.DataFrame({"text": [english(rng) for _ in range(200)]}))
    partition = "2026-11-23-07:00"
    earlier = (datetime.strptime(partition, "%Y-%m-%d-%H:%M") - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")
    _write(tmp_path, "inference_log", earlier, _rag_hour(30, 0, 0.8, 3))
    _write(tmp_path, "inference_log", partition, _rag_hour(30, 6, 0.5, 4))
    result = materialize_drift_report(data_root, folders, partition)
    assert result.success
    retrieval = facts(result.asset_materializations_for_node("drift_report")[0].metadata["retrieval"])
    assert retrieval["rag_requests"] == 30 and retrieval["empty_retrieval_share"] == 0.2
    assert retrieval["baseline_empty_retrieval_share"] == 0 and retrieval["top_score_ks_p"] < 0.001
