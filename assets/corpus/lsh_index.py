"""A persistent LSH band index of every document kept on earlier crawl days (plain numpy/polars, no Dagster).

``deduplicated_documents`` dedups each day against the days before it with this index: a page re-crawled or
mirrored on another day is found although the day's signatures never meet the earlier days' in memory.

**What is stored, per kept document**: its ``bands`` LSH band keys (:func:`assets.corpus.dedup.lsh_band_keys`,
each folded with its band number, so band ``b`` only meets band ``b``) pointing at a document number, and a
document table mapping the number to its ``doc_id``. Exact-Jaccard verification needs the shingle set of the
earlier page: the index keeps a *pointer* (partition, ``doc_id``) and verification re-reads the text from the
partition's own Parquet (``texts`` in its entry), for candidate pages only. Measured on the embedded corpus
(``bench/bench_global_dedup.py``, 907 pydoc pages of ~900 shingles): the pointer form costs 174 bytes a
document (14 keys of 8 bytes, document numbers, the doc-id table; zstd Parquet); a shingle set stored for
verification would cost 3,722 bytes (uint64) or 1,956 (truncated to uint32) a document, more than the page's
own compressed text (1,023). Only candidate pairs (true duplicates plus band collisions) need a text, read
with the filter pushed down (only matching rows' texts are decoded), so the index stays 11-21x smaller.

**Layout** under the index folder (``deduplicated_documents/_/lsh_index`` for the asset)::

    index.json                               settings fixed when the index is created (shards, MinHash knobs)
    partitions/{partition}.json              a partition's entry: its commit (token, counts, bytes, texts path)
    docs/{partition}.{token}.parquet         doc_id per document number (the row)
    shards/{shard:03d}/{partition}.{token}.parquet   key (uint64, sorted), doc_no (uint32)

A band key lives in shard ``key % shards``. **Writing** a partition (:meth:`LSHIndex.write_partition`) writes
its files under a fresh token, each atomically (temporary name + rename, :class:`DataRoot`), then commits by
replacing ``partitions/{partition}.json`` (one atomic write), then deletes the partition's files of other
tokens. A reader only opens files its entry's token names, so a partition re-materialized replaces its own
entries (never duplicates them), a crash before the commit leaves the old entries in force, and writing the
same partition twice is idempotent. Partitions are independent files, so days materialized concurrently do
not overwrite one another (one partition must not be written by two runs at once: the later commit wins and
may delete the other's files).

**Querying** is a shuffle by band hash: the query's (document, key) pairs are split by shard, and each shard
is matched against that shard's files of the earlier partitions, one file at a time (:func:`query_shard`, a
pure function over one shard: a distributed executor can map it). Candidate pairs from every shard are then
verified partition by partition (:func:`verify_partition`, pure too) by the exact Jaccard similarity of the
two shingle sets, reading the texts of that partition's candidate pages only; verified edges are joined with
the day's own clusters by a streamed union-find (:func:`link_earlier`, one partition's edges at a time). At
most ``cfg.full_pairs_max_bucket`` earlier pages behind one key are compared with a query document (the first
by partition, then document number), as the in-day LSH bounds its large buckets. Memory is bounded by the
query, one shard file and one earlier partition's candidate texts: the index is never loaded whole. Time
is not: a query opens every earlier partition's file of every shard once (at 16 days of the embedded corpus,
203k entries from 256 files in ~0.2 s) and scans one text file per partition holding a candidate; merging a
shard's old partition files into one (compaction) would bound the file count, and is not done yet.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from crawl2serve.resources.storage import DataRoot

from .dedup import MinHashLSH, _fmix64, jaccard, shingle_sets, union_into

__all__ = [
    "FORMAT",
    "CrossDayLinks",
    "EarlierBatch",
    "IndexSettings",
    "LSHIndex",
    "PartitionEntry",
    "QueryFacts",
    "ShardCandidates",
    "cross_day_links",
    "index_keys",
    "link_earlier",
    "query_earlier",
    "query_shard",
    "verify_earlier",
    "verify_partition",
]

FORMAT = 1
_PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:-]*$")  # no dots: file names are {partition}.{token}.parquet
_BAND_SALT = np.uint64(0x9E3779B97F4A7C15)
_NO_NODE = np.iinfo(np.int64).max


@dataclass(frozen=True)
class IndexSettings:
    """What the stored keys depend on; fixed when an index is created (``index.json``)."""

    shards: int
    ngram: int
    bands: int
    rows: int
    seed: int
    lowercase: bool
    format: int = FORMAT

    @classmethod
    def of(cls, cfg: MinHashLSH, shards: int) -> IndexSettings:
        if not 1 <= shards <= 4096:
            raise ValueError(f"index shards must be in [1, 4096], got {shards}")
        return cls(shards, cfg.ngram, cfg.bands, cfg.rows, cfg.seed, cfg.lowercase)


@dataclass(frozen=True)
class PartitionEntry:
    """One partition's commit in the index (``partitions/{partition}.json``)."""

    partition: str
    token: str
    documents: int
    entries: int
    bytes: int
    shards: tuple[int, ...]
    texts: str
    """Parquet file holding the partition's kept documents (``doc_id``, ``text``): read to verify candidates."""


@dataclass(frozen=True, eq=False)
class ShardCandidates:
    """Candidate pairs one shard proposes: query document x (file, document number) of an earlier partition.

    Attributes:
        query: the query document (its index in the query), int64.
        file: index of the shard file (so of the earlier partition) in the ``files`` queried, int64.
        doc_no: the earlier document's number in its partition, int64.
        entries_read: index entries read from the shard's files.
        largest_bucket: most earlier pages behind one of the query's keys (before the cap).
    """

    query: np.ndarray
    file: np.ndarray
    doc_no: np.ndarray
    entries_read: int
    largest_bucket: int


@dataclass
class QueryFacts:
    """What a cross-day query did (Dagster metadata of ``deduplicated_documents``)."""

    partitions_queried: int = 0
    later_partitions: list[str] = field(default_factory=list)
    entries_read: int = 0
    candidate_pairs: int = 0
    verified_pairs: int = 0
    rejected_pairs: int = 0
    largest_bucket: int = 0
    texts_read: int = 0
    texts_missing: int = 0
    problems: list[str] = field(default_factory=list)
    query_seconds: float = 0.0
    verify_seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class EarlierBatch:
    """Verified edges between query documents and one earlier partition's pages.

    ``doc_ids`` are the partition's candidate pages (ascending); ``edges[:, 0]`` is a query document,
    ``edges[:, 1]`` an index into ``doc_ids``; ``similarity`` is each edge's exact Jaccard similarity.
    """

    partition: str
    doc_ids: list[str]
    edges: np.ndarray
    similarity: np.ndarray


@dataclass(frozen=True, eq=False)
class CrossDayLinks:
    """Per query document: the earliest earlier page of its final cluster, if any.

    Attributes:
        partition: that page's partition (None when the cluster holds no earlier page).
        doc_id: that page's doc_id (None likewise).
        earlier_members: earlier pages in the document's cluster (0 when none).
        similarity: highest verified Jaccard similarity of the document to an earlier page (0.0 when none).
        root: the document's final cluster (a query document index: equal roots, one cluster).
    """

    partition: np.ndarray
    doc_id: np.ndarray
    earlier_members: np.ndarray
    similarity: np.ndarray
    root: np.ndarray


def index_keys(band_keys: np.ndarray) -> np.ndarray:
    """Band keys ``(n, bands)`` folded with their band number, so that equal keys mean the same band agrees."""
    keys = np.ascontiguousarray(band_keys, dtype=np.uint64).copy()
    keys += (np.arange(keys.shape[1], dtype=np.uint64) + np.uint64(1)) * _BAND_SALT
    return _fmix64(keys)


def _check_partition(partition: str) -> str:
    if not isinstance(partition, str) or not _PARTITION.match(partition):
        raise ValueError(
            f"partition {partition!r}: an index partition key must be letters, digits, '_', ':' or '-' "
            "(it names the index's files)"
        )
    return partition


class LSHIndex:
    """The band index under ``root`` (a path under ``data_root``); see the module doc for its layout."""

    def __init__(self, data_root: DataRoot, root: str, cfg: MinHashLSH | None = None, shards: int = 16):
        self.data_root = data_root
        self.root = root.rstrip("/")
        self.cfg = cfg = cfg or MinHashLSH()
        self.settings = IndexSettings.of(cfg, shards)

    # -- layout ---------------------------------------------------------------------------------
    def _entry_path(self, partition: str) -> str:
        return f"{self.root}/partitions/{partition}.json"

    def _docs_path(self, partition: str, token: str) -> str:
        return f"{self.root}/docs/{partition}.{token}.parquet"

    def shard_path(self, shard: int, partition: str, token: str) -> str:
        return f"{self.root}/shards/{shard:03d}/{partition}.{token}.parquet"

    # -- settings -------------------------------------------------------------------------------
    def check_settings(self, create: bool = False) -> bool:
        """True when the index exists with this index's settings; False when it does not exist (created if
        ``create``). A ValueError names every setting that differs from the stored one."""
        path = f"{self.root}/index.json"
        if not self.data_root.exists(path):
            if create:
                self.data_root.write_bytes(json.dumps(asdict(self.settings), indent=2).encode(), path)
            return False
        with self.data_root.open(path, "rb") as f:
            stored = json.loads(f.read())
        want = asdict(self.settings)
        differ = {k: (stored.get(k), v) for k, v in want.items() if stored.get(k) != v}
        if differ:
            named = ", ".join(f"{k}: index {a!r} vs config {b!r}" for k, (a, b) in sorted(differ.items()))
            raise ValueError(
                f"LSH index {self.root} was built with other settings ({named}): its keys cannot be compared. "
                f"Set the config back, or delete {self.root} and re-materialize the crawl days in date order"
            )
        return True

    # -- reading --------------------------------------------------------------------------------
    def partitions(self, problems: list[str] | None = None) -> dict[str, PartitionEntry]:
        """Committed partitions, by key (sorted). An unreadable entry is skipped and named in ``problems``."""
        out: dict[str, PartitionEntry] = {}
        for path in self.data_root.glob(f"{self.root}/partitions/*.json"):
            try:
                with self.data_root.open(path, "rb") as f:
                    raw = json.loads(f.read())
                entry = PartitionEntry(**{**raw, "shards": tuple(raw["shards"])})
            except (OSError, ValueError, TypeError, KeyError) as e:
                if problems is None:
                    raise
                problems.append(f"{path}: unreadable index entry ({type(e).__name__}: {e})")
                continue
            out[entry.partition] = entry
        return dict(sorted(out.items()))

    def shard_files(self, shard: int, entries: Iterable[PartitionEntry]) -> list[tuple[str, str]]:
        """(partition, path) of ``shard``'s file of each entry holding keys in it, in the entries' order."""
        return [(e.partition, self.shard_path(shard, e.partition, e.token)) for e in entries if shard in e.shards]

    def doc_ids(self, entry: PartitionEntry) -> list[str]:
        """The partition's doc_id per document number."""
        return self.data_root.read_parquet(self._docs_path(entry.partition, entry.token))["doc_id"].to_list()

    def stats(self) -> dict[str, int | float]:
        """Size of the index from its entries (no listing of shard files)."""
        entries = self.partitions(problems=[]).values()
        docs = sum(e.documents for e in entries)
        size = sum(e.bytes for e in entries)
        return {
            "partitions": len(entries),
            "documents": docs,
            "entries": sum(e.entries for e in entries),
            "bytes": size,
            "bytes_per_document": size / docs if docs else 0.0,
            "shards": self.settings.shards,
        }

    # -- writing --------------------------------------------------------------------------------
    def write_partition(
        self, partition: str, doc_ids: Sequence[str], band_keys: np.ndarray, texts: str
    ) -> PartitionEntry:
        """Replace ``partition``'s entries with these documents (their band keys from ``lsh_band_keys``) and
        commit; ``texts`` is the Parquet file holding their ``doc_id`` and ``text``. Documents are numbered in
        doc_id order, so the stored rows do not depend on the input order. Idempotent."""
        _check_partition(partition)
        band_keys = np.asarray(band_keys, dtype=np.uint64)
        n, bands = len(doc_ids), self.settings.bands
        if band_keys.shape != (n, bands):
            raise ValueError(f"band_keys: expected shape ({n}, {bands}) for {n} documents, got {band_keys.shape}")
        self.check_settings(create=True)
        by_id = np.argsort(np.asarray(list(doc_ids), dtype=object), kind="stable") if n else np.zeros(0, np.int64)
        doc_ids, band_keys = [doc_ids[i] for i in by_id], band_keys[by_id]  # doc_no order is doc_id order
        if len(set(doc_ids)) != n:
            raise ValueError(f"doc_ids: {n - len(set(doc_ids))} repeated in partition {partition}")
        token = uuid.uuid4().hex[:16]
        paths = [self._docs_path(partition, token)]
        self.data_root.write_parquet(pl.DataFrame({"doc_id": doc_ids}, schema={"doc_id": pl.String}), paths[0])
        keys = index_keys(band_keys).reshape(-1)
        doc_no = np.repeat(np.arange(n, dtype=np.uint32), bands)
        shard = keys % np.uint64(self.settings.shards)
        order = np.lexsort((doc_no, keys, shard))
        keys, doc_no, shard = keys[order], doc_no[order], shard[order]
        bounds = np.searchsorted(shard, np.arange(self.settings.shards + 1, dtype=np.uint64))
        written = []
        for s in range(self.settings.shards):
            lo, hi = bounds[s], bounds[s + 1]
            if hi > lo:
                path = self.shard_path(s, partition, token)
                frame = pl.DataFrame({"key": keys[lo:hi], "doc_no": doc_no[lo:hi]})
                paths.append(self.data_root.write_parquet(frame, path))
                written.append(s)
        entry = PartitionEntry(
            partition=partition,
            token=token,
            documents=n,
            entries=int(keys.size),
            bytes=int(sum(self.data_root.fs.size(p) for p in paths)),
            shards=tuple(written),
            texts=texts,
        )
        self.data_root.write_bytes(json.dumps(asdict(entry), indent=2).encode(), self._entry_path(partition))
        self._delete_other_tokens(partition, token)
        return entry

    def remove_partition(self, partition: str) -> bool:
        """Drop ``partition`` from the index (its entry first, then its files); False if it was not there."""
        _check_partition(partition)
        had = self.data_root.exists(self._entry_path(partition))
        self.data_root.remove(self._entry_path(partition))
        self._delete_other_tokens(partition, None)
        return had

    def _delete_other_tokens(self, partition: str, keep: str | None) -> None:
        pattern = [f"{self.root}/docs/{partition}.*.parquet", f"{self.root}/shards/*/{partition}.*.parquet"]
        for path in [p for pat in pattern for p in self.data_root.glob(pat)]:
            if path.rsplit("/", 1)[1].split(".")[1] != keep:
                self.data_root.remove(path)


# --------------------------------------------------------------------------------------------------
# Query: shard by shard, then verification partition by partition, then a streamed union-find
# --------------------------------------------------------------------------------------------------


def query_shard(
    read: Callable[[str], pl.DataFrame], files: Sequence[str], keys: np.ndarray, queries: np.ndarray, cap: int
) -> ShardCandidates:
    """Candidate pairs of one shard: every query ``(key, document)`` against the earlier pages of the same key.

    ``files`` are the shard's files of the earlier partitions, in partition order (read one at a time with
    ``read``: a frame of ``key`` and ``doc_no``); ``keys`` (uint64, from :func:`index_keys`) and ``queries``
    (the query document of each key) are aligned. Each key is matched with at most ``cap`` earlier pages, the
    first by (file, doc_no). Pairs found through several keys are returned once.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    queries = np.asarray(queries, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    keys, queries = keys[order], queries[order]
    uniq = np.unique(keys)
    behind = np.zeros(uniq.size, dtype=np.int64)  # earlier pages behind each query key, all files
    hit_key, hit_file, hit_doc, read_total = [], [], [], 0
    for f, path in enumerate(files):
        if uniq.size == 0:
            break
        frame = read(path)
        k = frame["key"].to_numpy()
        d = frame["doc_no"].to_numpy().astype(np.int64)
        read_total += k.size
        pos = np.minimum(np.searchsorted(uniq, k), uniq.size - 1)
        m = uniq[pos] == k
        k, d, pos = k[m], d[m], pos[m]
        np.add.at(behind, pos, 1)
        keep = _first_per_key(k, d, cap)
        hit_key.append(k[keep])
        hit_doc.append(d[keep])
        hit_file.append(np.full(int(keep.sum()), f, dtype=np.int64))
    empty = np.zeros(0, dtype=np.int64)
    if not hit_key or not sum(h.size for h in hit_key):
        return ShardCandidates(empty, empty, empty, read_total, int(behind.max()) if behind.size else 0)
    k, fi, d = np.concatenate(hit_key), np.concatenate(hit_file), np.concatenate(hit_doc)
    order = np.lexsort((d, fi, k))
    k, fi, d = k[order], fi[order], d[order]
    keep = _first_per_key(k, np.arange(k.size), cap)
    k, fi, d = k[keep], fi[keep], d[keep]
    lo = np.searchsorted(keys, k, side="left")
    count = np.searchsorted(keys, k, side="right") - lo  # query documents holding each hit's key
    rep = np.repeat(np.arange(k.size), count)
    within = np.arange(rep.size) - np.repeat(np.cumsum(count) - count, count)
    q = queries[lo[rep] + within]
    pairs = np.unique(np.stack([q, fi[rep], d[rep]], axis=1), axis=0)
    return ShardCandidates(pairs[:, 0], pairs[:, 1], pairs[:, 2], read_total, int(behind.max()))


def _first_per_key(keys: np.ndarray, tiebreak: np.ndarray, cap: int) -> np.ndarray:
    """Mask of the first ``cap`` entries of each key (by ``tiebreak``), in the input order."""
    if keys.size == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((tiebreak, keys))
    sk = keys[order]
    start = np.concatenate([[True], sk[1:] != sk[:-1]])
    first = np.maximum.accumulate(np.where(start, np.arange(sk.size), 0))
    mask = np.empty(keys.size, dtype=bool)
    mask[order] = (np.arange(sk.size) - first) < cap
    return mask


def query_earlier(
    index: LSHIndex, partition: str, band_keys: np.ndarray, valid: np.ndarray, facts: QueryFacts | None = None
) -> tuple[list[PartitionEntry], np.ndarray]:
    """The earlier partitions' entries and the distinct candidate pairs ``(query, partition index, doc_no)``.

    ``band_keys`` are the query documents' (``lsh_band_keys``), ``valid`` marks those to query (not empty).
    Only partitions whose key sorts before ``partition`` are queried (crawl days: the days before it), so a
    day's result depends on the days before it only, whatever order the days are materialized in.
    """
    facts = facts if facts is not None else QueryFacts()
    t0 = time.perf_counter()
    _check_partition(partition)
    index.check_settings()
    entries = index.partitions(facts.problems)
    earlier = [e for p, e in entries.items() if p < partition]
    facts.later_partitions = [p for p in entries if p > partition]
    facts.partitions_queried = len(earlier)
    docs = np.flatnonzero(np.asarray(valid, dtype=bool))
    none = np.zeros((0, 3), dtype=np.int64)
    if not earlier or docs.size == 0:
        facts.query_seconds += time.perf_counter() - t0
        return earlier, none
    keys = index_keys(np.asarray(band_keys)[docs]).reshape(-1)
    queries = np.repeat(docs, index.settings.bands)
    shard = keys % np.uint64(index.settings.shards)
    order = np.argsort(shard, kind="stable")
    keys, queries, shard = keys[order], queries[order], shard[order]
    bounds = np.searchsorted(shard, np.arange(index.settings.shards + 1, dtype=np.uint64))
    number = {e.partition: i for i, e in enumerate(earlier)}
    cap = index.cfg.full_pairs_max_bucket

    def reader(path: str) -> pl.DataFrame:  # one unreadable shard file never costs the others
        try:
            return index.data_root.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as e:
            facts.problems.append(f"{path}: shard file unreadable, skipped ({type(e).__name__}: {e})")
            return pl.DataFrame(schema={"key": pl.UInt64, "doc_no": pl.UInt32})

    found = []
    for s in range(index.settings.shards):
        lo, hi = bounds[s], bounds[s + 1]
        files = index.shard_files(s, earlier)
        if hi == lo or not files:
            continue
        cand = query_shard(reader, [path for _, path in files], keys[lo:hi], queries[lo:hi], cap)
        parts = np.array([number[p] for p, _ in files], dtype=np.int64)
        facts.entries_read += cand.entries_read
        facts.largest_bucket = max(facts.largest_bucket, cand.largest_bucket)
        if cand.query.size:
            found.append(np.stack([cand.query, parts[cand.file], cand.doc_no], axis=1))
    pairs = np.unique(np.concatenate(found), axis=0) if found else none
    facts.candidate_pairs = int(len(pairs))
    facts.query_seconds += time.perf_counter() - t0
    return earlier, pairs


def verify_partition(
    query_sets: Sequence[np.ndarray], earlier_sets: Sequence[np.ndarray], pairs: np.ndarray
) -> np.ndarray:
    """Exact Jaccard similarity of each pair ``(query, earlier)`` of shingle-set indices."""
    return np.array([jaccard(query_sets[q], earlier_sets[e]) for q, e in pairs], dtype=np.float64)


def read_texts(data_root: DataRoot, path: str, doc_ids: Sequence[str]) -> dict[str, str]:
    """The texts of ``doc_ids`` in the Parquet file ``path`` (columns ``doc_id``, ``text``); absent ones left out."""
    wanted = pl.col("doc_id").is_in(pl.Series(list(doc_ids), dtype=pl.String).implode())
    frame = data_root.read_parquet(path, columns=["doc_id", "text"], where=wanted)
    return dict(zip(frame["doc_id"].to_list(), frame["text"].to_list()))


def verify_earlier(
    index: LSHIndex,
    earlier: Sequence[PartitionEntry],
    pairs: np.ndarray,
    texts: Sequence[str | None],
    cfg: MinHashLSH,
    facts: QueryFacts | None = None,
) -> Iterator[EarlierBatch]:
    """Verified edges, one earlier partition at a time (ascending): each candidate's exact Jaccard similarity.

    ``texts`` are the query documents' texts (indexed by ``pairs[:, 0]``). A partition's texts are read for its
    candidate pages only; a page missing from its partition's file (re-materialized since, or the file gone)
    counts in ``facts.texts_missing`` and is never an edge.
    """
    facts = facts if facts is not None else QueryFacts()
    if len(pairs) == 0:
        return
    t0 = time.perf_counter()
    involved = np.unique(pairs[:, 0])
    query_sets = shingle_sets([texts[q] for q in involved], cfg)
    pairs = pairs[np.lexsort((pairs[:, 2], pairs[:, 0], pairs[:, 1]))]  # by partition, then query, then doc_no
    starts = np.flatnonzero(np.concatenate([[True], pairs[1:, 1] != pairs[:-1, 1]]))
    facts.verify_seconds += time.perf_counter() - t0
    for lo, hi in zip(starts, np.concatenate([starts[1:], [len(pairs)]])):
        t1 = time.perf_counter()
        part = pairs[lo:hi]
        entry = earlier[int(part[0, 1])]
        doc_nos = np.unique(part[:, 2])
        try:
            numbers = index.doc_ids(entry)
            wanted = [numbers[i] for i in doc_nos]
            found = read_texts(index.data_root, entry.texts, wanted) if index.data_root.exists(entry.texts) else {}
        except (OSError, ValueError, IndexError, pl.exceptions.PolarsError) as e:
            facts.problems.append(f"partition {entry.partition}: candidates not verified ({type(e).__name__}: {e})")
            facts.texts_missing += int(doc_nos.size)
            continue
        facts.texts_read += len(found)
        facts.texts_missing += len(wanted) - len(found)
        present = np.array([d in found for d in wanted], dtype=bool)
        local = np.full(doc_nos.size, -1, dtype=np.int64)
        local[present] = np.arange(int(present.sum()))
        earlier_sets = shingle_sets([found[d] for d, ok in zip(wanted, present) if ok], cfg)
        e = local[np.searchsorted(doc_nos, part[:, 2])]
        ok = e >= 0
        q, e = part[ok, 0], e[ok]
        sims = verify_partition(query_sets, earlier_sets, np.stack([np.searchsorted(involved, q), e], axis=1))
        good = sims >= cfg.threshold
        facts.verified_pairs += int(good.sum())
        facts.rejected_pairs += int((~good).sum())
        facts.verify_seconds += time.perf_counter() - t1
        yield EarlierBatch(
            partition=entry.partition,
            doc_ids=[d for d, ok in zip(wanted, present) if ok],
            edges=np.stack([q[good], e[good]], axis=1).astype(np.int64),
            similarity=sims[good],
        )


def link_earlier(root: np.ndarray, batches: Iterable[EarlierBatch]) -> CrossDayLinks:
    """Join the query's own clusters with the earlier pages they duplicate: a streamed union-find.

    ``root`` is each query document's cluster within its day (a compressed forest: every document points at
    its cluster's root, a root at itself). Each batch's pages become nodes after the query's (in batch order,
    then doc_id order, so the smallest node of a cluster is its earliest page, the smallest doc_id of that
    day breaking ties) and its edges are joined in at once; nothing but the forest is kept between batches.
    """
    parent = np.asarray(root, dtype=np.int64).copy()
    n = parent.size
    best = np.zeros(n, dtype=np.float64)
    names: list[tuple[str, str]] = []
    for batch in batches:
        base = parent.size
        order = np.argsort(np.asarray(batch.doc_ids, dtype=object), kind="stable") if batch.doc_ids else []
        rank = np.empty(len(batch.doc_ids), dtype=np.int64)
        rank[order] = np.arange(len(batch.doc_ids))
        parent = np.concatenate([parent, np.arange(base, base + len(batch.doc_ids), dtype=np.int64)])
        names += [(batch.partition, batch.doc_ids[i]) for i in order]
        if len(batch.edges):
            np.maximum.at(best, batch.edges[:, 0], batch.similarity)
            parent = union_into(parent, np.stack([batch.edges[:, 0], rank[batch.edges[:, 1]] + base], axis=1))
    earliest = np.full(parent.size, _NO_NODE, dtype=np.int64)
    members = np.zeros(parent.size, dtype=np.int64)
    if parent.size > n:
        np.minimum.at(earliest, parent[n:], np.arange(n, parent.size))
        np.add.at(members, parent[n:], 1)
    first = earliest[parent[:n]]
    linked = first != _NO_NODE
    partition = np.full(n, None, dtype=object)
    doc_id = np.full(n, None, dtype=object)
    for i in np.flatnonzero(linked):
        partition[i], doc_id[i] = names[first[i] - n]
    return CrossDayLinks(partition, doc_id, members[parent[:n]], best, parent[:n])


def cross_day_links(
    index: LSHIndex,
    partition: str,
    band_keys: np.ndarray,
    valid: np.ndarray,
    texts: Sequence[str | None],
    root: np.ndarray,
    cfg: MinHashLSH,
) -> tuple[CrossDayLinks, QueryFacts]:
    """Query, verify and link in one go (see :func:`query_earlier`, :func:`verify_earlier`, :func:`link_earlier`)."""
    facts = QueryFacts()
    earlier, pairs = query_earlier(index, partition, band_keys, valid, facts)
    return link_earlier(root, verify_earlier(index, earlier, pairs, texts, cfg, facts)), facts
