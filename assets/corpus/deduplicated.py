"""``deduplicated_documents`` and ``duplicate_clusters``: exact, then verified near-duplicate removal."""

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from crawl2serve.assets.contracts import Distribution, TableContract
from crawl2serve.assets.metadata import facts_table, frame_table, stage_facts
from crawl2serve.assets.partitions import DAILY_FRESHNESS, crawl_partitions

from .cleaned import KEPT_COLUMNS, KEPT_SCHEMA
from .dedup import (
    MinHashLSH,
    candidate_probability,
    exact_duplicate_groups,
    near_duplicate_clusters,
    representatives,
)

CLUSTER_SCHEMA = {
    "doc_id": pl.String,
    "url": pl.String,
    "cluster_id": pl.String,
    "cluster_size": pl.Int64,
    "kept": pl.Boolean,
    "duplicate_kind": pl.String,
    "similarity": pl.Float64,
}
DEDUP_SCHEMA = {**KEPT_SCHEMA, "cluster_id": pl.String, "cluster_size": pl.Int64}
CLUSTER_COLUMNS = {
    "cluster_id": "doc_id of the cluster's kept member (its representative); a unique document is its own.",
    "cluster_size": "Members of the document's duplicate cluster (1: no duplicate).",
}
DEDUPED = TableContract(
    schema=DEDUP_SCHEMA,
    columns={**KEPT_COLUMNS, **CLUSTER_COLUMNS},
    not_null=("doc_id", "url", "text", "content_hash", "cluster_id", "quality_score"),
    unique=("doc_id", "url", "content_hash"),  # no exact duplicate survives
    ranges={"cluster_size": (1, None), "quality_score": (0.0, 1.0)},
    distributions=(
        Distribution(
            "documents_kept",
            "At least one document survives deduplication.",
            lambda df, _: float(df.height),
            low=1,
            blocking=True,
        ),
        Distribution(
            "duplicate_share",
            "Share of clean documents removed as duplicates (warn above 50%).",
            lambda df, f: 1 - df.height / max(f["in"], 1),
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
        "duplicate_kind": "exact (same content hash as the kept member) or near (verified MinHash); null if kept.",
        "similarity": "Verified Jaccard similarity of word shingles to its closest cluster member (1.0 exact).",
    },
    not_null=("doc_id", "cluster_id", "cluster_size", "kept"),
    unique=("doc_id",),
    ranges={"similarity": (0.0, 1.0), "cluster_size": (1, None)},
    distributions=(
        Distribution(
            "one_kept_per_cluster",
            "Clusters that do not keep exactly one member (must be 0).",
            lambda df, _: float(
                df.group_by("cluster_id").agg(pl.col("kept").sum().alias("k")).filter(pl.col("k") != 1).height
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


def dedup_frame(docs: pl.DataFrame, config: DedupConfig) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """(kept documents, cluster membership of every document, facts)."""
    ids, quality = docs["doc_id"].to_list(), docs["quality_score"].to_list()
    exact_rep = exact_duplicate_groups(docs["content_hash"].to_list(), quality, ids)
    reps = np.unique(exact_rep)
    cfg = MinHashLSH(
        ngram=config.ngram, bands=config.bands, rows=config.rows, threshold=config.threshold, seed=config.seed
    )
    texts = docs["text"].to_list()
    near = near_duplicate_clusters([texts[i] for i in reps], [ids[i] for i in reps], [quality[i] for i in reps], cfg)
    slot = np.full(docs.height, -1)
    slot[reps] = np.arange(reps.size)
    near_of_doc = slot[exact_rep]  # every document follows its exact-duplicate representative
    near_label = near.cluster_id[near_of_doc] if docs.height else np.zeros(0, dtype=object)
    _, group, counts = np.unique(near_label.astype(str), return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    rep, decided = representatives(
        group,
        docs["url"].to_list(),
        docs["canonical_url"].to_list(),
        docs["language"].to_list(),
        quality,
        ids,
        config.target_languages,
    )
    kept = rep == np.arange(docs.height)
    cluster_id = np.asarray(ids, dtype=object)[rep] if docs.height else np.zeros(0, dtype=object)
    hashes = docs["content_hash"].to_numpy()
    exact_of_kept = hashes == hashes[rep] if docs.height else np.zeros(0, dtype=bool)
    kind = np.where(kept, None, np.where(exact_of_kept, "exact", "near")).astype(object)
    similarity = np.where(exact_of_kept & ~kept, 1.0, near.max_similarity[near_of_doc]) if docs.height else np.zeros(0)
    clusters = pl.DataFrame(
        {
            "doc_id": ids,
            "url": docs["url"],
            "cluster_id": cluster_id.tolist(),
            "cluster_size": counts[group],
            "kept": kept,
            "duplicate_kind": kind.tolist(),
            "similarity": similarity,
        },
        schema=CLUSTER_SCHEMA,
    )
    deduped = docs.with_columns(cluster_id=clusters["cluster_id"], cluster_size=clusters["cluster_size"]).filter(
        pl.Series(kept)
    )
    facts = {
        "in": docs.height,
        "exact_removed": int((exact_of_kept & ~kept).sum()),
        "near_removed": int((~exact_of_kept).sum()),
        "representative_decided_by": decided,
        "candidate_pairs": near.candidate_pairs,
        "verified_pairs": near.verified_pairs,
        "rejected_pairs": near.rejected_pairs,
        "largest_bucket": near.largest_bucket,
        "signature_seconds": near.signature_seconds,
        "lsh_seconds": near.lsh_seconds,
        "verify_seconds": near.verify_seconds,
        "p_candidate_at_threshold": float(candidate_probability(config.threshold, config.bands, config.rows)),
    }
    return deduped.select(list(DEDUP_SCHEMA)), clusters, facts


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
def deduplicated_documents(context: dg.AssetExecutionContext, config: DedupConfig, clean_documents: pl.DataFrame):
    """Deduplicated documents and their duplicate clusters, from ``clean_documents``.

    Exact duplicates by content hash, then near duplicates by MinHash LSH over word n-grams; every LSH
    candidate pair is verified by its exact Jaccard similarity before anything is removed. Each cluster
    keeps one member by the representative rule (canonical URL, target language agreeing with the URL's,
    quality, shortest path, smallest URL: assets/corpus/dedup.py), whatever the input order; every
    document's cluster id (the kept member's id) is kept in ``duplicate_clusters``.
    """
    deduped, clusters, facts = dedup_frame(clean_documents, config)
    big = (
        clusters.filter(pl.col("cluster_size") > 1)
        .group_by("cluster_id")
        .agg(pl.len().alias("size"), pl.col("url").first())
        .sort("size", descending=True)
        .head(10)
    )
    context.log.info(
        f"dedup: {facts['in']} in, {facts['exact_removed']} exact and {facts['near_removed']} near "
        f"duplicates removed, {deduped.height} kept"
    )
    yield dg.Output(
        deduped,
        output_name="deduplicated_documents",
        metadata={
            "documents_in": facts["in"],
            "documents_kept": deduped.height,
            "exact_duplicates_removed": facts["exact_removed"],
            "near_duplicates_removed": facts["near_removed"],
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
            "representative_decided_by": facts_table(facts["representative_decided_by"], ("rule", "clusters")),
            "seconds": facts_table(
                {k: facts[k] for k in ("signature_seconds", "lsh_seconds", "verify_seconds")}, ("step", "seconds")
            ),
        },
    )
    yield dg.Output(
        clusters,
        output_name="duplicate_clusters",
        metadata={
            "clusters": clusters["cluster_id"].n_unique(),
            "largest_clusters": frame_table(big.rename({"url": "example_url"})),
        },
    )
    yield from DEDUPED.evaluate(deduped, "deduplicated_documents", facts)
    yield from CLUSTERS.evaluate(clusters, "duplicate_clusters", facts)
