"""Cross-day deduplication: ``deduplicated_documents`` against every page kept on the days before, through the
persistent LSH band index (assets/corpus/lsh_index.py), materialized in process on real pages.

* Two crawl days of real pydoc pages: day 1 ingests 36 pages of a pydoc crawl; day 2 ingests mirrors of 18 of
  them (another host, a sentence added), 9 of them again at their own URLs (a re-crawl) and 24 pages day 1 did
  not have. Day 2's copies of day 1's kept pages are removed and point at them.
* Pairs at controlled Jaccard similarity, built from the real documentation pages of
  ``fixtures/fineweb_datatrove.jsonl.gz``: never merged below the threshold, always above it.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from crawl2serve.assets.corpus.cleaned import KEPT_SCHEMA
from crawl2serve.assets.corpus.dedup import MinHashLSH, jaccard, shingle_sets
from crawl2serve.assets.corpus.deduplicated import INDEX_FOLDER, deduplicated_documents
from crawl2serve.assets.corpus.extract import content_hash, doc_id
from crawl2serve.assets.corpus.lsh_index import LSHIndex
from crawl2serve.assets.crawl.assets import raw_crawl
from crawl2serve.assets.crawl.warc import iter_records
from crawl2serve.assets.partitions import crawl_partitions
from crawl2serve.resources.storage import DataRoot
from tests.support import CORPUS, PARTITION, checks, facts, resources, warc_bytes

DAY1, DAY2 = PARTITION, "2026-11-21"
FINEWEB = Path(__file__).parent / "fixtures" / "fineweb_datatrove.jsonl.gz"
CLEAN_SOURCE = dg.SourceAsset("clean_documents", partitions_def=crawl_partitions)


def _ingest_config(path: Path) -> dict:
    return {
        "ops": {
            "raw_crawl": {"config": {"ingest_paths": [str(path)]}},
            "clean_documents": {"config": {"profile": "documentation"}},
        }
    }


def _table(root: Path, asset: str, day: str) -> pl.DataFrame:
    return pl.read_parquet(root / asset / day / "data.parquet")


def _materialize_dedup(root: Path, day: str, raise_on_error: bool = True, **config) -> dg.ExecuteInProcessResult:
    """``deduplicated_documents`` alone, its ``clean_documents`` read from the data root by the IO manager."""
    return dg.materialize(
        [CLEAN_SOURCE, deduplicated_documents],
        resources=resources(root),
        partition_key=day,
        run_config={"ops": {"deduplicated_documents": {"config": config}}},
        raise_on_error=raise_on_error,
    )


def _metadata(result, asset: str) -> dict:
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == asset
    )


def _index(root: Path) -> LSHIndex:
    data_root = DataRoot(url=str(root))
    return LSHIndex(data_root, data_root.path("deduplicated_documents", None, INDEX_FOLDER))


def _index_files(root: Path, day: str) -> list[Path]:
    return sorted((root / "deduplicated_documents" / "_" / INDEX_FOLDER).rglob(f"{day}.*.parquet"))


@pytest.fixture(scope="module")
def two_days(tmp_path_factory):
    """(root, day 1 records, mirrored, re-served, new) after materializing the corpus for both days."""
    src, root = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("days")
    crawl = dg.materialize(
        [raw_crawl],
        resources=resources(src),
        partition_key=DAY1,
        run_config={"ops": {"raw_crawl": {"config": {"max_pages": 60}}}},
    )
    assert crawl.success
    manifest = _table(src, "raw_crawl", DAY1)
    records = []
    for path in sorted(set(manifest["warc_file"].drop_nulls())):
        with open(path, "rb") as f:
            records += [(r.url, r.body) for r in iter_records(f) if r.kind == "response" and r.status == 200]
    assert len(records) >= 55
    day1, mirrored, reserved, new = records[:36], records[:18], records[18:27], records[36:]
    host = re.match(r"https?://[^/]+", records[0][0]).group(0)
    mirrors = [
        (u.replace(host, "http://mirror.example.org"), b.replace(b"</body>", b"<p>A mirror of this page.</p></body>"))
        for u, b in mirrored
    ]
    (src / f"{DAY1}.warc.gz").write_bytes(warc_bytes([(u, "response", b) for u, b in day1]))
    (src / f"{DAY2}.warc.gz").write_bytes(warc_bytes([(u, "response", b) for u, b in mirrors + reserved + new]))
    results = {}
    for day in (DAY1, DAY2):
        config = _ingest_config(src / f"{day}.warc.gz")
        results[day] = dg.materialize(CORPUS, resources=resources(root), partition_key=day, run_config=config)
    return root, results, dict(zip([u for u, _ in mirrors], [u for u, _ in mirrored])), reserved, new


def test_pages_of_an_earlier_day_are_removed_from_the_later_day(two_days):
    root, results, mirror_of, reserved, new = two_days
    assert all(r.success for r in results.values())
    failed = {k: v for r in results.values() for k, v in checks(r).items() if not v}
    assert not failed, failed
    kept1 = _table(root, "deduplicated_documents", DAY1)
    c2 = _table(root, "duplicate_clusters", DAY2)
    kept2 = _table(root, "deduplicated_documents", DAY2)
    assert _table(root, "duplicate_clusters", DAY1)["earlier_partition"].is_null().all()  # nothing before day 1
    kept1_urls = set(kept1["url"])
    rows = {r["url"]: r for r in c2.iter_rows(named=True)}

    mirrors = [(m, o) for m, o in mirror_of.items() if m in rows and o in kept1_urls]
    assert len(mirrors) >= 5, "the mirrors of day 1's kept pages pass cleaning"
    for mirror, original in mirrors:  # another URL, nearly the same text: the day 1 page stays the kept one
        row = rows[mirror]
        assert (row["kept"], row["duplicate_kind"], row["earlier_partition"]) == (False, "earlier", DAY1), mirror
        assert row["cluster_id"] == doc_id(original) and row["similarity"] >= 0.8
    recrawled = [u for u, _ in reserved if u in rows and u in kept1_urls]
    assert len(recrawled) >= 3
    for url in recrawled:  # the same URL again: its own doc_id, kept on day 1
        assert (rows[url]["kept"], rows[url]["cluster_id"], rows[url]["earlier_partition"]) == (
            False,
            doc_id(url),
            DAY1,
        )
        assert rows[url]["similarity"] == 1.0

    # Against a brute force over day 1's kept texts: every close copy is found, and every removal is justified.
    cfg = MinHashLSH()
    earlier_sets = shingle_sets(kept1["text"].to_list(), cfg)
    clean2 = _table(root, "clean_documents", DAY2).join(c2, on="doc_id")
    best = [max(jaccard(s, e) for e in earlier_sets) for s in shingle_sets(clean2["text"].to_list(), cfg)]
    clean2 = clean2.with_columns(best=pl.Series(best))
    assert clean2.filter((pl.col("best") >= 0.9) & (pl.col("duplicate_kind") != "earlier")).is_empty()
    removed = clean2.filter(pl.col("duplicate_kind") == "earlier")
    justified = removed.group_by("cluster_id").agg(pl.col("best").max())
    assert (justified["best"] >= cfg.threshold).all()  # each removed cluster holds a verified copy of a day 1 page
    new_urls = {u for u, _ in new}
    assert set(kept2["url"]) & new_urls, "pages day 1 did not have are kept"

    meta = _metadata(results[DAY2], "deduplicated_documents")
    assert meta["earlier_day_duplicates_removed"].value == removed.height >= len(mirrors) + len(recrawled)
    earlier = facts(meta["earlier_days"].value)
    assert earlier["earlier_days_queried"] == 1 and earlier["index_documents"] == kept1.height
    assert earlier[f"removed_as_duplicates_of_{DAY1}"] == removed.height
    written = _metadata(results[DAY2], "duplicate_clusters")
    index = facts(written["lsh_index"].value)
    assert (index["partitions"], index["documents"], index["shards"]) == (2, kept1.height + kept2.height, 16)
    assert index["entries"] == 14 * index["documents"] and 100 < index["bytes_per_document"] < 5000
    assert written["lsh_index_this_day"].value == "written"
    assert written["lsh_index_path"].value.endswith("deduplicated_documents/_/lsh_index")


def test_rematerializing_a_day_replaces_its_entries_whatever_the_row_order(two_days):
    root = two_days[0]
    index = _index(root)
    before = index.stats()
    entry = index.partitions()[DAY2]
    clusters = _table(root, "duplicate_clusters", DAY2).sort("doc_id")
    clean = root / "clean_documents" / DAY2 / "data.parquet"
    original = pl.read_parquet(clean)
    try:
        for seed in (1, 2):  # the same day again, its clean rows shuffled
            shuffled = original.sample(fraction=1.0, shuffle=True, seed=seed)
            assert shuffled["doc_id"].to_list() != original["doc_id"].to_list()
            shuffled.write_parquet(clean)
            assert _materialize_dedup(root, DAY2).success
            assert _table(root, "duplicate_clusters", DAY2).sort("doc_id").equals(clusters)
            after = index.stats()
            assert {k: after[k] for k in ("partitions", "documents", "entries")} == {
                k: before[k] for k in ("partitions", "documents", "entries")
            }
            again = index.partitions()[DAY2]
            assert again.token != entry.token and (again.documents, again.entries) == (entry.documents, entry.entries)
            files = _index_files(root, DAY2)
            assert {f.name.split(".")[1] for f in files} == {again.token}, "the old token's files are gone"
            assert len(files) == 1 + len(again.shards)
            assert not list((root / "deduplicated_documents").rglob(".tmp-*"))
    finally:
        original.write_parquet(clean)


def test_without_the_index_a_day_is_deduped_alone_and_the_index_untouched(two_days):
    root = two_days[0]
    index = _index(root)
    before = index.partitions()
    try:
        result = _materialize_dedup(root, DAY2, global_index=False)
        assert result.success
        c2 = _table(root, "duplicate_clusters", DAY2)
        assert c2["earlier_partition"].is_null().all() and "earlier" not in set(c2["duplicate_kind"].drop_nulls())
        assert facts(_metadata(result, "deduplicated_documents")["earlier_days"].value) == {
            "global_index": "off (deduped within the day only)"
        }
        assert index.partitions() == before
    finally:
        assert _materialize_dedup(root, DAY2).success


def test_index_settings_other_than_the_stored_ones_are_an_error_naming_them(two_days):
    root = two_days[0]
    result = _materialize_dedup(root, DAY2, raise_on_error=False, index_shards=8)
    assert not result.success
    message = str(result.failure_data_for_node("deduplicated_documents").error)
    assert "shards: index 16 vs config 8" in message and INDEX_FOLDER in message


# ---------------------------------------------------------------- pairs at controlled Jaccard similarity


def _real_word_runs(min_words: int) -> list[list[str]]:
    rows = [json.loads(line) for line in gzip.decompress(FINEWEB.read_bytes()).splitlines()]
    runs = [re.findall(r"\w+", r["text"].lower()) for r in rows]
    runs = [w for w in runs if len(w) >= min_words]
    random.Random(0).shuffle(runs)
    return runs


def _pair_at(target: float, shared: list[str], tail_a: list[str], tail_b: list[str], cfg: MinHashLSH):
    """Texts A = S + X and B = S + Y (a shared run of real words, then two different real tails of length t)
    whose exact shingle Jaccard is the closest to ``target`` on its side of it (below it under 0.5, else at or
    above it). J falls as t grows (the shared shingles stay, the union grows): bisect for the first t below."""

    def texts(t: int) -> tuple[str, str, float]:
        a, b = " ".join(shared + tail_a[:t]), " ".join(shared + tail_b[:t])
        return a, b, jaccard(*shingle_sets([a, b], cfg))

    lo, hi = 0, min(len(tail_a), len(tail_b))  # J(lo) = 1 >= target > J(hi)
    assert texts(hi)[2] < target
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if texts(mid)[2] >= target else (lo, mid)
    return texts(hi if target < 0.5 else lo)


def _clean_frame(texts: dict[str, str]) -> pl.DataFrame:
    """A clean_documents partition of these {url: text} (the columns dedup does not read are plain values)."""
    n = len(texts)
    frame = pl.DataFrame(
        {
            "doc_id": [doc_id(u) for u in texts],
            "url": list(texts),
            "canonical_url": [None] * n,
            "host": [u.split("/")[2] for u in texts],
            "title": [""] * n,
            "text": list(texts.values()),
            "language": ["en"] * n,
            "language_score": [1.0] * n,
            "quality_score": [0.5] * n,
            "word_count": [len(t.split()) for t in texts.values()],
            "char_count": [len(t) for t in texts.values()],
            "content_hash": [content_hash(t) for t in texts.values()],
            "c4_lines_removed": [0] * n,
            "language_mix": [None] * n,
            "pii_emails": [0] * n,
            "pii_ip_addresses": [0] * n,
            "pii_phones": [0] * n,
            "fetch_time": [datetime(2026, 11, 20, tzinfo=UTC)] * n,
        }
    )
    return frame.cast(KEPT_SCHEMA).select(list(KEPT_SCHEMA))


BELOW = (0.2, 0.3, 0.4, 0.45, 0.49)
ABOVE = (0.51, 0.6, 0.8, 0.9, 0.97)


@pytest.mark.parametrize(
    ("config", "threshold"),
    [
        # 40 one-row bands: every pair at J >= 0.2 is an LSH candidate (P > 0.9998), so verification decides
        ({"bands": 40, "rows": 1, "threshold": 0.5}, 0.5),
        ({}, 0.8),  # the defaults: 14 x 8, verified at 0.8
    ],
)
def test_no_false_merges_across_days_below_the_threshold(tmp_path, config, threshold):
    cfg = MinHashLSH(**{k: v for k, v in config.items() if k in ("bands", "rows", "threshold")})
    runs = _real_word_runs(min_words=700)
    targets = BELOW + ABOVE
    assert len(runs) >= 3 * len(targets)
    pairs = [_pair_at(j, runs[3 * i][:200], runs[3 * i + 1], runs[3 * i + 2], cfg) for i, j in enumerate(targets)]
    jac = [j for _, _, j in pairs]
    assert all(j < 0.5 for j in jac[: len(BELOW)]) and all(j >= 0.5 for j in jac[len(BELOW) :]), jac
    days = {
        DAY1: {f"https://one.example.org/p{i}": a for i, (a, _, _) in enumerate(pairs)},
        DAY2: {f"https://two.example.org/p{i}": b for i, (_, b, _) in enumerate(pairs)},
    }
    data_root = DataRoot(url=str(tmp_path))
    for day, texts in days.items():
        data_root.write_parquet(_clean_frame(texts), data_root.path("clean_documents", day, "data.parquet"))
        result = _materialize_dedup(tmp_path, day, **config)
        assert result.success and all(checks(result).values())
    c2 = {r["url"]: r for r in _table(tmp_path, "duplicate_clusters", DAY2).iter_rows(named=True)}
    for i, j in enumerate(jac):
        row = c2[f"https://two.example.org/p{i}"]
        merged = row["duplicate_kind"] == "earlier"
        if j < 0.5:
            assert not merged and row["kept"], (i, j)  # 0 false merges
        if threshold == 0.5:
            assert merged == (j >= threshold), (i, j)  # every pair is a candidate: merged exactly at the threshold
        elif j >= 0.9:
            assert merged, (i, j)
        if merged:
            assert row["cluster_id"] == doc_id(f"https://one.example.org/p{i}")
            assert row["similarity"] == pytest.approx(j)
    assert np.isclose(sorted(jac)[0], 0.2, atol=0.02)


def test_a_day_failing_a_blocking_check_is_taken_out_of_the_index(tmp_path):
    runs = _real_word_runs(min_words=300)
    data_root = DataRoot(url=str(tmp_path))
    texts = {f"https://three.example.org/p{i}": " ".join(w[:300]) for i, w in enumerate(runs[:6])}
    clean = _clean_frame(texts)
    path = data_root.path("clean_documents", DAY1, "data.parquet")
    data_root.write_parquet(clean, path)
    assert _materialize_dedup(tmp_path, DAY1).success
    assert list(_index(tmp_path).partitions()) == [DAY1]
    data_root.write_parquet(clean.with_columns(quality_score=pl.lit(1.5)), path)  # out of [0, 1]: blocking
    result = _materialize_dedup(tmp_path, DAY1, raise_on_error=False)
    assert not result.success and checks(result)["deduplicated_documents:value_ranges"] is False
    assert _metadata(result, "duplicate_clusters")["lsh_index_this_day"].value == "left out (a blocking check failed)"
    assert _index(tmp_path).partitions() == {} and not _index_files(tmp_path, DAY1)
