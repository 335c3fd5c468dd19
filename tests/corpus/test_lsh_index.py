"""Unit tests for assets/corpus/lsh_index.py: the persistent band index, its shard queries, verification and
the streamed union-find (the asset's cross-day behaviour on real pages: test_global_dedup.py)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from crawl2serve.assets.corpus.dedup import MinHashLSH, lsh_band_keys, union_into
from crawl2serve.assets.corpus.lsh_index import (
    EarlierBatch,
    LSHIndex,
    QueryFacts,
    cross_day_links,
    index_keys,
    link_earlier,
    query_earlier,
    query_shard,
)
from crawl2serve.resources.storage import DataRoot

CFG = MinHashLSH()
DAYS = ("2026-11-20", "2026-11-21", "2026-11-22")


@pytest.fixture
def root(tmp_path) -> DataRoot:
    return DataRoot(url=str(tmp_path))


def _index(data_root: DataRoot, **kw) -> LSHIndex:
    return LSHIndex(data_root, data_root.path("deduplicated_documents", None, "lsh_index"), **kw)


def _keys(n: int, seed: int, bands: int = CFG.bands) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**63, size=(n, bands), dtype=np.uint64)


def _files(data_root: DataRoot) -> list[str]:
    return sorted(p.rsplit("lsh_index/", 1)[1] for p in data_root.glob(f"{data_root.root}/**/lsh_index/**/*.*"))


def test_a_partition_rewritten_replaces_its_entries_and_removing_it_leaves_nothing(root):
    index = _index(root)
    ids = [f"d{i:03d}" for i in range(50)]
    first = index.write_partition(DAYS[0], ids, _keys(50, 1), "texts.parquet")
    other = index.write_partition(DAYS[1], ids[:10], _keys(10, 2), "other.parquet")
    assert (first.documents, first.entries) == (50, 50 * CFG.bands)
    rows = {s: root.read_parquet(index.shard_path(s, DAYS[0], first.token)) for s in first.shards}
    again = index.write_partition(DAYS[0], ids[::-1], _keys(50, 1)[::-1], "texts.parquet")  # same rows, reversed
    assert again.token != first.token
    assert (again.documents, again.entries, again.shards) == (first.documents, first.entries, first.shards)
    assert index.stats()["documents"] == 60 and index.stats()["entries"] == 60 * CFG.bands
    files = [f for f in _files(root) if DAYS[0] in f and f.endswith(".parquet")]
    assert {f.rsplit("/", 1)[1].split(".")[1] for f in files} == {again.token}  # the old token's files are gone
    assert len(files) == 1 + len(again.shards)
    assert not [f for f in _files(root) if ".tmp-" in f]
    # numbered in doc_id order: the same documents in another order store the same rows
    assert index.doc_ids(again) == ids
    assert all(root.read_parquet(index.shard_path(s, DAYS[0], again.token)).equals(rows[s]) for s in again.shards)
    smaller = index.write_partition(DAYS[0], ids[:5], _keys(5, 3), "texts.parquet")
    assert index.partitions()[DAYS[0]] == smaller and index.stats()["documents"] == 15
    assert index.remove_partition(DAYS[0]) and not index.remove_partition(DAYS[0])
    assert list(index.partitions()) == [DAYS[1]] and index.partitions()[DAYS[1]] == other
    assert not [f for f in _files(root) if DAYS[0] in f]


def test_bad_input_is_an_error_naming_the_field(root):
    index = _index(root)
    with pytest.raises(ValueError, match="partition '../x'"):
        index.write_partition("../x", ["a"], _keys(1, 0), "t")
    with pytest.raises(ValueError, match="partition '2026.11'"):
        index.write_partition("2026.11", ["a"], _keys(1, 0), "t")
    with pytest.raises(ValueError, match=r"band_keys: expected shape \(2, 14\)"):
        index.write_partition(DAYS[0], ["a", "b"], _keys(2, 0, bands=3), "t")
    with pytest.raises(ValueError, match="doc_ids: 1 repeated"):
        index.write_partition(DAYS[0], ["a", "a"], _keys(2, 0), "t")
    with pytest.raises(ValueError, match="index shards must be in"):
        _index(root, shards=0)
    index.write_partition(DAYS[0], ["a"], _keys(1, 0), "t")
    with pytest.raises(ValueError, match=r"bands: index 14 vs config 20.*shards: index 16 vs config 4"):
        query_earlier(_index(root, cfg=MinHashLSH(bands=20), shards=4), DAYS[1], _keys(1, 0, 20), np.ones(1, bool))


def test_the_shard_by_shard_query_finds_every_shared_band_and_caps_large_buckets(root):
    index = _index(root, shards=8)
    rng = np.random.default_rng(5)
    stored = {day: _keys(30, 10 + i) for i, day in enumerate(DAYS[:2])}
    ids = {day: [f"{day[-2:]}-{i:02d}" for i in range(30)] for day in DAYS[:2]}
    query = _keys(12, 99)
    for q in range(12):  # each query document copies one to three bands of random earlier documents
        for b in rng.choice(CFG.bands, size=int(rng.integers(1, 4)), replace=False):
            day = DAYS[int(rng.integers(0, 2))]
            query[q, b] = stored[day][int(rng.integers(0, 30)), b]
    query[11, 5] = stored[DAYS[0]][3, 6]  # the same key value in another band is no match
    for day in DAYS[:2]:
        index.write_partition(day, ids[day], stored[day], f"{day}.parquet")
    valid = np.ones(12, dtype=bool)
    valid[7] = False  # an empty document is never queried
    facts = QueryFacts()
    earlier, pairs = query_earlier(index, DAYS[2], query, valid, facts)
    assert [e.partition for e in earlier] == list(DAYS[:2])
    found = {(int(q), earlier[p].partition, index.doc_ids(earlier[p])[d]) for q, p, d in pairs}
    expected = {
        (q, day, ids[day][d])
        for q in np.flatnonzero(valid)
        for day in DAYS[:2]
        for d in range(30)
        if (stored[day][d] == query[q]).any()
    }
    assert found == expected and len(pairs) == facts.candidate_pairs
    assert facts.entries_read == 60 * CFG.bands  # every entry of the two days is read once

    # A key behind 40 earlier documents: the first 16 (full_pairs_max_bucket) by day, then doc_id.
    crowd = _keys(40, 7)
    crowd[:, 0] = 12345
    index.write_partition(DAYS[0], [f"c{i:02d}" for i in range(40)], crowd, "crowd.parquet")
    one = _keys(1, 8)
    one[0, 0] = 12345
    facts = QueryFacts()
    earlier, pairs = query_earlier(index, DAYS[2], one, np.ones(1, bool), facts)
    assert facts.largest_bucket == 40
    assert [index.doc_ids(earlier[p])[d] for _, p, d in pairs] == [f"c{i:02d}" for i in range(16)]


def test_only_the_days_before_are_queried(root):
    index = _index(root)
    keys = _keys(3, 1)
    for day in DAYS:
        index.write_partition(day, ["a", "b", "c"], keys, f"{day}.parquet")
    facts = QueryFacts()
    earlier, pairs = query_earlier(index, DAYS[1], keys, np.ones(3, bool), facts)
    assert [e.partition for e in earlier] == [DAYS[0]] and facts.later_partitions == [DAYS[2]]
    assert {earlier[p].partition for _, p, _ in pairs} == {DAYS[0]} and len(pairs) == 3
    assert query_earlier(index, DAYS[0], keys, np.ones(3, bool))[1].size == 0  # nothing before the first day


def test_query_shard_reads_each_file_once_in_order():
    files = {"p0": pl.DataFrame({"key": np.array([1, 5, 9], np.uint64), "doc_no": np.array([0, 1, 2], np.uint32)})}
    files["p1"] = pl.DataFrame({"key": np.array([5, 5, 7], np.uint64), "doc_no": np.array([0, 1, 2], np.uint32)})
    seen = []

    def read(path):
        seen.append(path)
        return files[path]

    cand = query_shard(read, ["p0", "p1"], np.array([5, 7, 5], np.uint64), np.array([0, 0, 3]), cap=2)
    assert seen == ["p0", "p1"]
    got = sorted(zip(cand.query.tolist(), cand.file.tolist(), cand.doc_no.tolist()))
    # key 5: p0 doc 1 then p1 doc 0 (the cap of 2 drops p1 doc 1); key 7: p1 doc 2
    assert got == [(0, 0, 1), (0, 1, 0), (0, 1, 2), (3, 0, 1), (3, 1, 0)]
    assert (cand.entries_read, cand.largest_bucket) == (6, 3)


def test_the_streamed_union_find_joins_days_and_keeps_the_earliest_page():
    # query documents 0 and 1 are one cluster of their day; 2 and 3 are alone
    root = np.array([0, 0, 2, 3])
    batches = [
        EarlierBatch(DAYS[0], ["y", "x"], np.array([[2, 1], [3, 1], [0, 0]]), np.array([0.9, 0.85, 0.95])),
        EarlierBatch(DAYS[1], ["w"], np.array([[1, 0]]), np.array([1.0])),
    ]
    links = link_earlier(root, batches)
    # 2 and 3 meet through x; 0 and 1 touch y (day 1) and w (day 2): the day 1 page is theirs
    assert links.partition.tolist() == [DAYS[0]] * 4
    assert links.doc_id.tolist() == ["y", "y", "x", "x"]
    assert links.earlier_members.tolist() == [2, 2, 1, 1]
    assert links.similarity.tolist() == [0.95, 1.0, 0.9, 0.85]
    assert links.root[0] == links.root[1] != links.root[2] == links.root[3]
    alone = link_earlier(np.arange(3), [])
    assert alone.partition.tolist() == [None] * 3 and alone.earlier_members.tolist() == [0] * 3

    rng = np.random.default_rng(0)  # union_into gives the same components whatever the batches
    edges = rng.integers(0, 200, size=(150, 2))
    whole = union_into(np.arange(200), edges)
    parent = np.arange(200)
    for chunk in np.array_split(edges[rng.permutation(150)], 7):
        parent = union_into(parent, chunk)
    assert np.array_equal(parent, whole)


def test_verification_reads_the_earlier_texts_and_a_missing_file_never_merges(root):
    index = _index(root)
    words = " ".join(f"w{i}" for i in range(300))
    texts = [words, words + " one more sentence here", "completely other words " * 20]
    keys, empty = lsh_band_keys(texts, CFG)
    path = root.path("deduplicated_documents", DAYS[0], "data.parquet")
    root.write_parquet(pl.DataFrame({"doc_id": ["a", "b", "c"], "text": texts}), path)
    index.write_partition(DAYS[0], ["a"], keys[:1], path)
    links, facts = cross_day_links(index, DAYS[1], keys[1:], ~empty[1:], texts[1:], np.arange(2), CFG)
    assert links.doc_id.tolist() == ["a", None] and links.similarity[0] > 0.95
    assert (facts.candidate_pairs, facts.verified_pairs, facts.texts_read, facts.texts_missing) == (1, 1, 1, 0)
    root.remove(path)
    links, facts = cross_day_links(index, DAYS[1], keys[1:], ~empty[1:], texts[1:], np.arange(2), CFG)
    assert links.doc_id.tolist() == [None, None] and (facts.candidate_pairs, facts.texts_missing) == (1, 1)


def test_index_keys_fold_the_band_number():
    keys = np.full((1, 4), 7, dtype=np.uint64)
    folded = index_keys(keys)
    assert len(set(folded[0].tolist())) == 4  # one value in four bands: four different index keys
    assert np.array_equal(index_keys(keys), folded) and keys[0, 0] == 7  # deterministic, input untouched


def test_the_index_works_on_an_object_store_data_root():
    """Any fsspec URL: fsspec's in-memory file system stands in for an object store (no local paths)."""
    data_root = DataRoot(url="memory://lsh-index-test")
    index = _index(data_root)
    words = " ".join(f"v{i}" for i in range(200))
    texts = [words, words + " and a tail", "other words entirely " * 15]
    keys, empty = lsh_band_keys(texts, CFG)
    path = data_root.path("deduplicated_documents", DAYS[0], "data.parquet")
    data_root.write_parquet(pl.DataFrame({"doc_id": ["a", "b", "c"], "text": texts, "other": [1, 2, 3]}), path)
    for _ in range(2):  # idempotent there too
        index.write_partition(DAYS[0], ["a", "c"], keys[[0, 2]], path)
    assert index.stats()["documents"] == 2
    links, facts = cross_day_links(index, DAYS[1], keys[1:2], ~empty[1:2], texts[1:2], np.arange(1), CFG)
    assert links.doc_id.tolist() == ["a"] and facts.texts_read == 1
    only = data_root.read_parquet(path, columns=["text"], where=pl.col("doc_id") == "c")
    assert only.columns == ["text"] and only["text"].to_list() == [texts[2]]
    data_root.remove(data_root.root)


def test_an_unreadable_shard_file_costs_only_its_own_entries(root):
    index = _index(root, shards=4)
    keys = _keys(40, 3)
    entry = index.write_partition(DAYS[0], [f"d{i:02d}" for i in range(40)], keys, "t")
    lost = entry.shards[0]
    root.remove(index.shard_path(lost, DAYS[0], entry.token))
    corrupt = index.shard_path(entry.shards[1], DAYS[0], entry.token)
    root.write_bytes(b"not parquet", corrupt)
    facts = QueryFacts()
    _, pairs = query_earlier(index, DAYS[1], keys, np.ones(40, bool), facts)
    shard_of = index_keys(keys) % np.uint64(4)
    alive = [d for d in range(40) if (~np.isin(shard_of[d], [lost, entry.shards[1]])).any()]
    # doc_ids sort as their numbers: query document q is stored as doc_no q; each is still found through the others
    assert sorted({int(q) for q, _, d in pairs if q == d}) == alive and len(alive) == 40
    assert len(facts.problems) == 2 and all("shard file unreadable" in p for p in facts.problems)
