"""The retrieval stage materialized in process on the session's real pydoc corpus: a version built in full, an
incremental one after a new crawl (a changed page upserted, a gone page deleted, the rest reused), the switch
gated by retrieval_eval's blocking check."""

import json
import shutil

import dagster as dg
import polars as pl
from support import CORPUS, PARTITION, checks, resources

from crawl2serve.assets.retrieval.assets import retrieval_eval, retrieval_index, served_retrieval_index
from crawl2serve.assets.retrieval.index import RetrievalIndex

ASSETS = [*CORPUS, retrieval_index, retrieval_eval, served_retrieval_index]
SELECTION = [retrieval_index, retrieval_eval, served_retrieval_index]
NEXT_DAY = "2026-11-21"


def _run(root, min_recall=0.5, keep_versions=3, **index):
    return dg.materialize(
        ASSETS,
        selection=SELECTION,
        resources=resources(root),
        run_config={
            "ops": {
                "retrieval_index": {"config": index},
                "retrieval_eval": {"config": {"queries_per_kind": 15, "min_hybrid_recall_at_10": min_recall}},
                "served_retrieval_index": {"config": {"keep_versions": keep_versions}},
            }
        },
        raise_on_error=False,
    )


def _live(root) -> dict:
    return json.loads((root / "served_retrieval_index" / "_" / "live.json").read_text())


def _index_facts(result) -> dict:
    return result.output_for_node("retrieval_index").facts


def test_retrieval_index_incremental_and_gated_switch(lineage, tmp_path):
    source, _, _ = lineage
    day = tmp_path / "deduplicated_documents" / PARTITION
    day.mkdir(parents=True)
    shutil.copy(source / "deduplicated_documents" / PARTITION / "data.parquet", day / "data.parquet")
    docs = pl.read_parquet(day / "data.parquet")

    first = _run(tmp_path)
    assert first.success
    blocking = ("retrieval_eval:hybrid_recall_at_10", "retrieval_eval:queries_of_every_kind")
    assert all(checks(first)[c] for c in blocking), checks(first)
    # the default fusion (convex, BM25 weight 0.85): hybrid at least each list alone (RRF was below BM25 here)
    assert checks(first)["retrieval_eval:hybrid_not_below_either"], first.output_for_node("retrieval_eval").facts
    facts = _index_facts(first)
    assert facts["mode"] == "full" and facts["points"] == facts["chunks"] > docs.height
    assert (facts["hnsw_m"], facts["hnsw_ef_construct"]) == (16, 100)
    live = _live(tmp_path)
    assert live["version"] == facts["version"]
    index = RetrievalIndex.load(tmp_path / live["path"])
    try:
        sample = index.chunks.row(7, named=True)
        top = index.search(" ".join(sample["text"].split()[:12]), k=3)
        assert top[0].url == sample["url"] and top[0].bm25_rank is not None and top[0].dense_rank is not None
    finally:
        index.close()

    # A new crawl: one page changed (it is in the new day's partition), one page gone (dropped from the old day).
    gone, changed = docs.row(0, named=True), docs.row(1, named=True)
    docs.filter(pl.col("url") != gone["url"]).write_parquet(day / "data.parquet")
    (tmp_path / "deduplicated_documents" / NEXT_DAY).mkdir()
    docs.filter(pl.col("url") == changed["url"]).with_columns(
        text=pl.col("text") + "\n\nChangelog\n\nThe zebra parser was added in this release."
    ).write_parquet(tmp_path / "deduplicated_documents" / NEXT_DAY / "data.parquet")
    before = pl.read_parquet(tmp_path / live["path"] / "chunks.parquet")

    second = _run(tmp_path)
    assert second.success
    facts2 = _index_facts(second)
    after = pl.read_parquet(tmp_path / _live(tmp_path)["path"] / "chunks.parquet")
    assert facts2["mode"] == "incremental" and facts2["built_from"] == facts["version"]
    assert facts2["deleted"] == before.filter(pl.col("url") == gone["url"]).height > 0
    assert gone["url"] not in after["url"].to_list()
    changed_new = after.join(before, on=["chunk_id", "content_hash"], how="anti")
    assert facts2["upserted"] == changed_new.height > 0 and set(changed_new["url"]) == {changed["url"]}
    assert facts2["unchanged"] == after.height - changed_new.height
    assert _live(tmp_path)["version"] == facts2["version"] != facts["version"]

    # Keeping 1 version: the oldest (v1) goes, the one served until now (v2) stays beside the new one.
    third = _run(tmp_path, keep_versions=1)
    assert third.success
    versions = tmp_path / "retrieval_index" / "_" / "versions"
    assert sorted(p.name for p in versions.iterdir()) == sorted([facts2["version"], _index_facts(third)["version"]])

    # A threshold no index meets: the blocking check fails and the served version stays where it was.
    served = _live(tmp_path)["version"]
    blocked = _run(tmp_path, min_recall=1.01)
    assert not blocked.success
    assert checks(blocked)["retrieval_eval:hybrid_recall_at_10"] is False
    assert "served_retrieval_index" not in {
        e.asset_key.to_user_string() for e in blocked.get_asset_materialization_events()
    }
    assert _live(tmp_path)["version"] == served
