"""``deduplicated_documents`` and ``duplicate_clusters``: exact, then verified near-duplicate removal."""

from collections import Counter
from dataclasses import dataclass

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from crawl2serve.assets.contracts import Distribution, TableContract
from crawl2serve.assets.metadata import facts_table, frame_table, stage_facts
from crawl2serve.assets.partitions import DAILY_FRESHNESS, crawl_partitions
from crawl2serve.resources.io_manager import FILENAME
from crawl2serve.resources.storage import DataRoot

from .cleaned import KEPT_COLUMNS, KEPT_SCHEMA
from .dedup import (
    MinHashLSH,
    candidate_probability,
    exact_duplicate_groups,
    lsh_band_keys,
    near_duplicate_clusters,
    representatives,
)
from .lsh_index import LSHIndex, PartitionEntry, QueryFacts, cross_day_links

CLUSTER_SCHEMA = {
    "doc_id": pl.String,
    "url": pl.String,
    "cluster_id": pl.String,
    "cluster_size": pl.Int64,
    "kept": pl.Boolean,
    "duplicate_kind": pl.String,
    "similarity": pl.Float64,
    "earlier_partition": pl.String,
}
DEDUP_SCHEMA = {**KEPT_SCHEMA, "cluster_id": pl.String, "cluster_size": pl.Int64}
CLUSTER_COLUMNS = {
    "cluster_id": "doc_id of the cluster's kept member (its representative); a unique document is its own.",
    "cluster_size": "Members of the document's duplicate cluster (1: no duplicate); with an earlier day's page, "
    "this day's members plus the earlier pages they matched.",
}
INDEX_FOLDER = "lsh_index"  # {data_root}/deduplicated_documents/_/lsh_index: the asset's state across its partitions
DEDUPED = TableContract(
    schema=DEDUP_SCHEMA,
    columns={**KEPT_COLUMNS, **CLUSTER_COLUMNS},
    not_null=("doc_id", "url", "text", "content_hash", "cluster_id", "quality_score"),
    unique=("doc_id", "url", "content_hash"),  # no exact duplicate survives
    ranges={"cluster_size": (1, None), "quality_score": (0.0, 1.0)},
    distributions=(
        Distribution(
            "documents_kept",
            "At least one document survives deduplication, or duplicates a page kept on an earlier day.",
            lambda df, f: float(df.height + f.get("earlier_removed", 0)),
            low=1,
            blocking=True,
        ),
        Distribution(
            "duplicate_share",
            "Share of clean documents removed as duplicates within the day (warn above 50%; duplicates of "
            "earlier days' pages, a re-crawl's unchanged pages, do not count).",
            lambda df, f: 1 - (df.height + f.get("earlier_removed", 0)) / max(f["in"], 1),
            high=0.5,
        ),
    ),
)
CLUSTERS = TableContract(
    schema=CLUSTER_SCHEMA,
    columns={
        "doc_id": KEPT_COLUMNS["doc_id"],
        "url": KEPT_COLUMNS["url"],
        **CLUSTER_COLUMNS,
        "kept": "Whether this document is the cluster's representative (in deduplicated_documents).",
        "duplicate_kind": "exact (same content hash as the kept member), near (verified MinHash) or earlier "
        "(its cluster holds a page kept on an earlier crawl day, which stays the kept one); null if kept.",
        "similarity": "Verified Jaccard similarity of word shingles to its closest cluster member (1.0 exact).",
        "earlier_partition": "Crawl day (partition) of the earlier page kept for this document's cluster "
        "(cluster_id is that page's doc_id); null when the cluster is kept on this day.",
    },
    not_null=("doc_id", "cluster_id", "cluster_size", "kept"),
    unique=("doc_id",),
    ranges={"similarity": (0.0, 1.0), "cluster_size": (1, None)},
    distributions=(
        Distribution(
            "one_kept_per_cluster",
            "Clusters that do not keep exactly one member on this day, or keep one although an earlier day's "
            "page is kept for them (must be 0).",
            lambda df, _: float(
                df.group_by("cluster_id", "earlier_partition")
                .agg(pl.col("kept").sum().alias("k"))
                .filter(pl.col("k") != pl.when(pl.col("earlier_partition").is_null()).then(1).otherwise(0))
                .height
            ),
            high=0,
            blocking=True,
        ),
    ),
)


class DedupConfig(dg.Config):
    """MinHash LSH knobs. Defaults: FineWeb's word 5-grams, 14 bands x 8 rows, verified at Jaccard 0.8."""

    ngram: int = Field(5, description="Words per shingle.")
    bands: int = Field(14, description="LSH bands.")
    rows: int = Field(8, description="Rows (hash functions) per band; bands*rows permutations in all.")
    threshold: float = Field(0.8, description="Verified Jaccard similarity at which two documents are duplicates.")
    seed: int = Field(42, description="Seed of the hash permutations.")
    target_languages: list[str] = Field(
        default_factory=lambda: ["en"],
        description="The run's target languages (CleanConfig.languages): the representative rule keeps a "
        "member in one of them whose URL names no other language (assets/corpus/dedup.py).",
    )
    global_index: bool = Field(
        True,
        description="Dedup each crawl day also against every page kept on the days before it (partition keys "
        "that sort earlier), through the persistent LSH band index under deduplicated_documents/_/lsh_index "
        "(assets/corpus/lsh_index.py): a page duplicating an earlier day's kept page is removed, the earlier "
        "one stays. The day's kept pages are then written to the index. Off: within the day only; the index is "
        "neither read nor written (later days see this day's entries of an earlier run, if any, else none).",
    )
    index_shards: int = Field(
        16,
        ge=1,
        le=4096,
        description="Band-hash shards of the LSH index: each is queried on its own (one file per shard and "
        "crawl day). Fixed when the index is created; another value is an error naming the index.",
    )


def minhash_config(config: DedupConfig) -> MinHashLSH:
    """The MinHash settings of a DedupConfig."""
    return MinHashLSH(
        ngram=config.ngram, bands=config.bands, rows=config.rows, threshold=config.threshold, seed=config.seed
    )


@dataclass(frozen=True, eq=False)
class DedupOutcome:
    """A partition's dedup: the kept documents, every document's cluster, facts, and the index rows to write.

    ``kept_keys`` are the band keys of ``deduped``'s rows (``lsh_band_keys``), ``kept_indexable`` marks the
    rows that have words (an empty document is never a candidate, so it is not indexed).
    """

    deduped: pl.DataFrame
    clusters: pl.DataFrame
    facts: dict
    kept_keys: np.ndarray
    kept_indexable: np.ndarray


def dedup_frame(docs: pl.DataFrame, config: DedupConfig) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """(kept documents, cluster membership of every document, facts) within ``docs`` alone."""
    out = dedup_partition(docs, config)
    return out.deduped, out.clusters, out.facts


def dedup_partition(
    docs: pl.DataFrame, config: DedupConfig, index: LSHIndex | None = None, partition: str | None = None
) -> DedupOutcome:
    """Exact, then verified near duplicates within ``docs``; with an ``index``, also against the pages kept in
    the index's partitions before ``partition`` (which stay kept: this day's copies of them are removed).

    Clusters are joined across days (a day's cluster touching an earlier page is removed whole, and two of
    the day's clusters matching one earlier page are one cluster); a cluster without an earlier page keeps
    its member by the representative rule. Nothing depends on the order of ``docs``' rows.
    """
    n = docs.height
    ids, quality = docs["doc_id"].to_list(), docs["quality_score"].to_list()
    exact_rep = exact_duplicate_groups(docs["content_hash"].to_list(), quality, ids)
    reps = np.unique(exact_rep)
    cfg = minhash_config(config)
    texts = docs["text"].to_list()
    rep_texts = [texts[i] for i in reps]
    rep_ids = [ids[i] for i in reps]
    near = near_duplicate_clusters(rep_texts, rep_ids, [quality[i] for i in reps], cfg)
    slot = np.full(n, -1)
    slot[reps] = np.arange(reps.size)
    near_of_doc = slot[exact_rep]  # every document follows its exact-duplicate representative
    position = {d: i for i, d in enumerate(rep_ids)}
    near_root = np.array([position[c] for c in near.cluster_id], dtype=np.int64)
    query = QueryFacts()
    if index is not None:
        if partition is None:
            raise ValueError("partition: required to dedup against an LSH index (the days before it are queried)")
        links, query = cross_day_links(index, partition, near.band_keys, ~near.empty, rep_texts, near_root, cfg)
        group = links.root[near_of_doc]
        earlier = links.partition[near_of_doc] if n else np.zeros(0, dtype=object)
    else:
        links, group, earlier = None, near_root[near_of_doc], np.full(n, None, dtype=object)
    linked = np.array([p is not None for p in earlier], dtype=bool)
    local = np.flatnonzero(~linked)
    rep_local, decided = representatives(
        group[local],
        docs["url"].gather(local).to_list(),
        docs["canonical_url"].gather(local).to_list(),
        docs["language"].gather(local).to_list(),
        [quality[i] for i in local],
        [ids[i] for i in local],
        config.target_languages,
    )
    rep = np.arange(n)
    rep[local] = local[rep_local]
    kept = np.zeros(n, dtype=bool)
    kept[local] = rep_local == np.arange(local.size)
    ids_arr = np.asarray(ids, dtype=object)
    cluster_id = ids_arr[rep] if n else np.zeros(0, dtype=object)
    if links is not None and linked.any():
        cluster_id[linked] = links.doc_id[near_of_doc[linked]]
    _, dense, counts = np.unique(group, return_inverse=True, return_counts=True)
    size = counts[dense.reshape(-1)].astype(np.int64)
    if links is not None:
        size += np.where(linked, links.earlier_members[near_of_doc], 0)
    hashes = docs["content_hash"].to_numpy()
    exact_of_kept = (hashes == hashes[rep]) & ~linked if n else np.zeros(0, dtype=bool)
    kind = np.where(kept, None, np.where(linked, "earlier", np.where(exact_of_kept, "exact", "near"))).astype(object)
    closest = near.max_similarity if links is None else np.maximum(near.max_similarity, links.similarity)
    exact_member = exact_of_kept | (linked & (exact_rep != np.arange(n)))
    similarity = np.where(exact_member & ~kept, 1.0, closest[near_of_doc]) if n else np.zeros(0)
    clusters = pl.DataFrame(
        {
            "doc_id": ids,
            "url": docs["url"],
            "cluster_id": cluster_id.tolist(),
            "cluster_size": size,
            "kept": kept,
            "duplicate_kind": kind.tolist(),
            "similarity": similarity,
            "earlier_partition": earlier.tolist(),
        },
        schema=CLUSTER_SCHEMA,
    )
    deduped = docs.with_columns(cluster_id=clusters["cluster_id"], cluster_size=clusters["cluster_size"]).filter(
        pl.Series(kept)
    )
    kept_idx = np.flatnonzero(kept)
    kept_keys, kept_indexable = _kept_band_keys(kept_idx, exact_rep, slot, near, texts, cfg)
    facts = {
        "in": n,
        "exact_removed": int((exact_of_kept & ~kept).sum()),
        "near_removed": int((~exact_of_kept & ~kept & ~linked).sum()),
        "earlier_removed": int(linked.sum()),
        "earlier_removed_by_partition": dict(sorted(Counter(p for p in earlier if p is not None).items())),
        "representative_decided_by": decided,
        "candidate_pairs": near.candidate_pairs,
        "verified_pairs": near.verified_pairs,
        "rejected_pairs": near.rejected_pairs,
        "largest_bucket": near.largest_bucket,
        "signature_seconds": near.signature_seconds,
        "lsh_seconds": near.lsh_seconds,
        "verify_seconds": near.verify_seconds,
        "p_candidate_at_threshold": float(candidate_probability(config.threshold, config.bands, config.rows)),
        "index_query": query,
    }
    return DedupOutcome(deduped.select(list(DEDUP_SCHEMA)), clusters, facts, kept_keys, kept_indexable)


def index_kept(index: LSHIndex, partition: str, out: DedupOutcome, texts: str) -> PartitionEntry:
    """Replace ``partition``'s entries in ``index`` with its kept documents; ``texts`` is the Parquet file
    ``out.deduped`` is stored in (verification of later days re-reads candidates' texts from it)."""
    rows = np.flatnonzero(out.kept_indexable)
    return index.write_partition(partition, out.deduped["doc_id"].gather(rows).to_list(), out.kept_keys[rows], texts)


def _kept_band_keys(kept_idx, exact_rep, slot, near, texts, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Band keys of the kept documents: their exact representative's, or their own when the representative
    rule kept another member of an exact group (its text may differ in case or spacing)."""
    keys = np.zeros((kept_idx.size, cfg.bands), dtype=np.uint64)
    indexable = np.zeros(kept_idx.size, dtype=bool)
    is_rep = exact_rep[kept_idx] == kept_idx
    keys[is_rep] = near.band_keys[slot[kept_idx[is_rep]]]
    indexable[is_rep] = ~near.empty[slot[kept_idx[is_rep]]]
    others = np.flatnonzero(~is_rep)
    if others.size:
        own, empty = lsh_band_keys([texts[i] for i in kept_idx[others]], cfg)
        keys[others], indexable[others] = own, ~empty
    return keys, indexable


@dg.multi_asset(
    outs={
        "deduplicated_documents": dg.AssetOut(
            group_name="corpus",
            kinds={"python", "parquet"},
            tags={"stage": "corpus"},
            freshness_policy=DAILY_FRESHNESS,
            description="One document per duplicate cluster: its representative (see dedup.py).",
            metadata=DEDUPED.definition_metadata(),
            **stage_facts("corpus"),
        ),
        "duplicate_clusters": dg.AssetOut(
            group_name="corpus",
            kinds={"parquet"},
            tags={"stage": "corpus"},
            freshness_policy=DAILY_FRESHNESS,
            description="Cluster membership of every clean document (lineage).",
            metadata=CLUSTERS.definition_metadata(),
            **stage_facts("corpus"),
        ),
    },
    partitions_def=crawl_partitions,
    check_specs=DEDUPED.check_specs("deduplicated_documents") + CLUSTERS.check_specs("duplicate_clusters"),
)
def deduplicated_documents(
    context: dg.AssetExecutionContext, config: DedupConfig, data_root: DataRoot, clean_documents: pl.DataFrame
):
    """Deduplicated documents and their duplicate clusters, from ``clean_documents``.

    Exact duplicates by content hash, then near duplicates by MinHash LSH over word n-grams; every LSH
    candidate pair is verified by its exact Jaccard similarity before anything is removed. Each cluster
    keeps one member by the representative rule (canonical URL, target language agreeing with the URL's,
    quality, shortest path, smallest URL: assets/corpus/dedup.py), whatever the input order; every
    document's cluster id (the kept member's id) is kept in ``duplicate_clusters``.

    Across crawl days (``global_index``): the day is also deduped against every page kept on the days before
    it, through a persistent LSH band index under ``deduplicated_documents/_/lsh_index``
    (assets/corpus/lsh_index.py), queried shard by shard; a page duplicating an earlier day's kept page is
    removed and recorded in ``duplicate_clusters`` with that page's doc_id and day (``earlier_partition``).
    Once this day's outputs are written and its blocking checks pass, its kept pages replace its entries in
    the index (a day that fails them is taken out of it).
    """
    partition = context.partition_key
    index = None
    if config.global_index:
        root = data_root.path("deduplicated_documents", None, INDEX_FOLDER)
        index = LSHIndex(data_root, root, minhash_config(config), config.index_shards)
    out = dedup_partition(clean_documents, config, index, partition)
    deduped, clusters, facts = out.deduped, out.clusters, out.facts
    query: QueryFacts = facts["index_query"]
    for problem in query.problems:
        context.log.warning(f"dedup index: {problem}")
    if query.later_partitions:
        context.log.warning(
            f"dedup index: {len(query.later_partitions)} later crawl day(s) were indexed before this one "
            f"({', '.join(query.later_partitions[:5])}{', ...' if len(query.later_partitions) > 5 else ''}): "
            "they were not deduped against this day; re-materialize them to do so"
        )
    big = (
        clusters.filter(pl.col("cluster_size") > 1)
        .group_by("cluster_id")
        .agg(pl.len().alias("size"), pl.col("url").first())
        .sort("size", descending=True)
        .head(10)
    )
    context.log.info(
        f"dedup: {facts['in']} in, {facts['exact_removed']} exact and {facts['near_removed']} near duplicates "
        f"and {facts['earlier_removed']} duplicates of earlier days' pages removed, {deduped.height} kept"
    )
    checks = [
        *DEDUPED.evaluate(deduped, "deduplicated_documents", facts),
        *CLUSTERS.evaluate(clusters, "duplicate_clusters", facts),
    ]
    before = index.stats() if index is not None else None
    yield dg.Output(
        deduped,
        output_name="deduplicated_documents",
        metadata={
            "documents_in": facts["in"],
            "documents_kept": deduped.height,
            "exact_duplicates_removed": facts["exact_removed"],
            "near_duplicates_removed": facts["near_removed"],
            "earlier_day_duplicates_removed": facts["earlier_removed"],
            "lsh": facts_table(
                {
                    k: facts[k]
                    for k in (
                        "candidate_pairs",
                        "verified_pairs",
                        "rejected_pairs",
                        "largest_bucket",
                        "p_candidate_at_threshold",
                    )
                }
            ),
            "earlier_days": _earlier_days_table(config, query, before, facts),
            "representative_decided_by": facts_table(facts["representative_decided_by"], ("rule", "clusters")),
            "seconds": facts_table(
                {
                    **{k: facts[k] for k in ("signature_seconds", "lsh_seconds", "verify_seconds")},
                    "index_query_seconds": query.query_seconds,
                    "index_verify_seconds": query.verify_seconds,
                },
                ("step", "seconds"),
            ),
        },
    )
    # The day's kept texts are written now (the IO manager stores an output as it is yielded): index them.
    index_meta = {}
    if index is not None:
        blocking_failed = [c.check_name for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
        if blocking_failed:
            index.remove_partition(partition)
            context.log.warning(f"dedup index: {partition} left out of the index (failed: {blocking_failed})")
        else:
            index_kept(index, partition, out, data_root.path("deduplicated_documents", partition, FILENAME))
        index_meta = {
            "lsh_index": facts_table(index.stats()),
            "lsh_index_path": dg.MetadataValue.path(index.root),
            "lsh_index_this_day": "left out (a blocking check failed)" if blocking_failed else "written",
        }
    yield dg.Output(
        clusters,
        output_name="duplicate_clusters",
        metadata={
            "clusters": clusters["cluster_id"].n_unique(),
            "largest_clusters": frame_table(big.rename({"url": "example_url"})),
            **index_meta,
        },
    )
    yield from checks


def _earlier_days_table(config: DedupConfig, query: QueryFacts, before: dict | None, facts: dict):
    """What the day was deduped against: the index before this day's write, the query's figures."""
    if before is None:
        return facts_table({"global_index": "off (deduped within the day only)"})
    return facts_table(
        {
            "earlier_days_queried": query.partitions_queried,
            "index_documents": before["documents"],
            "index_bytes": before["bytes"],
            "index_bytes_per_document": before["bytes_per_document"],
            "index_shards": config.index_shards,
            "index_entries_read": query.entries_read,
            "candidate_pairs": query.candidate_pairs,
            "verified_pairs": query.verified_pairs,
            "rejected_pairs": query.rejected_pairs,
            "largest_bucket": query.largest_bucket,
            "earlier_texts_read": query.texts_read,
            "earlier_texts_missing": query.texts_missing,
            "removed": facts["earlier_removed"],
            **{f"removed_as_duplicates_of_{p}": c for p, c in facts["earlier_removed_by_partition"].items()},
            "later_days_indexed_first": len(query.later_partitions),
        }
    )
