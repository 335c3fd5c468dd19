"""The retrieval stage's assets: ``retrieval_index`` (a new index version over the corpus), ``retrieval_eval``
(recall and MRR on a query set generated from it; blocking checks) and ``served_retrieval_index`` (the atomic
switch to that version, reached only when the checks pass)."""

import hashlib
import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from crawl2serve.assets.metadata import facts_table, frame_table, stage_facts
from crawl2serve.assets.partitions import EVERY_PARTITION
from crawl2serve.resources.folders import RECORD, IndexFolder, ReportFolder, asset_folder
from crawl2serve.resources.storage import DataRoot

from .evaluation import KINDS, QuerySet, evaluate, summarize
from .index import IndexSettings, RetrievalIndex, build_version
from .vectors import VectorStore

FOLDER = "folder_io_manager"
LIVE = "live.json"  # {data_root}/served_retrieval_index/_/live.json: the served version (what the gateway reads)


class IndexConfig(dg.Config):
    """How a version is chunked and embedded, and whether it is built from the version before."""

    max_tokens: int = Field(200, description="Whitespace tokens per chunk (windows within a heading's section).")
    overlap: int = Field(40, description="Tokens a chunk shares with the next one of the same section.")
    embedder: str = Field(
        "projection", description="'projection' or 'lsa' (fitted on the corpus, offline), or 'sentence-transformers'."
    )
    embedding_model: str = Field("", description="The sentence-transformers model id (embedder sentence-transformers).")
    dimensions: int = Field(
        512, description="Vector dimensions of 'projection' / 'lsa' (LSA: fewer on a small corpus)."
    )
    quantization: bool = Field(False, description="int8 scalar quantization of the collection's vectors.")
    qdrant_url: str = Field("", description="A Qdrant server (production); empty: local mode in the version folder.")
    fusion: str = Field(
        "convex", description="How hybrid search merges BM25 and dense: 'convex' (normalised scores) or 'rrf'."
    )
    fusion_alpha: float = Field(
        0.85, description="BM25's weight in the convex fusion (dense: 1 - alpha); lower with a semantic embedder."
    )
    rrf_k: int = Field(60, description="The reciprocal-rank fusion constant (fusion 'rrf').")
    full_reindex: bool = Field(
        False, description="Fit the embedder anew and embed every chunk, instead of reusing the last version."
    )


def _newest_per_url(partitions: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per URL: the newest crawl day's (a page re-crawled and changed is in the later partition too)."""
    frames = [
        df.select("doc_id", "url", "title", "text").with_columns(day=pl.lit(day)) for day, df in partitions.items()
    ]
    if not frames:
        return pl.DataFrame(schema={"doc_id": pl.String, "url": pl.String, "title": pl.String, "text": pl.String})
    return pl.concat(frames).sort("day").unique("url", keep="last", maintain_order=True).drop("day").sort("url")


def _previous_version(data_root: DataRoot, folder: str) -> Path | None:
    """This asset's last version (its own record), if its folder is still there."""
    record = Path(folder) / RECORD
    if not record.exists():
        return None
    path = Path(folder) / json.loads(record.read_text())["path"]
    return path if (path / "version.json").exists() else None


@dg.asset(
    group_name="retrieval",
    io_manager_key=FOLDER,
    ins={"deduplicated_documents": EVERY_PARTITION},
    kinds={"qdrant", "parquet"},
    tags={"stage": "retrieval"},
    **stage_facts("retrieval"),
)
def retrieval_index(
    context: dg.AssetExecutionContext,
    config: IndexConfig,
    data_root: DataRoot,
    deduplicated_documents: dict[str, pl.DataFrame],
) -> dg.Output[IndexFolder]:
    """A new version of the hybrid index over the corpus: chunks by heading and token window, BM25 (bm25s), and
    dense vectors in a Qdrant collection (HNSW m=16, ef_construct=100); searched with the fusion it names.

    Comes from every crawl partition of ``deduplicated_documents`` (the newest copy of each URL). Built from
    this asset's previous version when the embedder settings are unchanged (changed chunks upserted, gone ones
    left out, unchanged vectors reused), else in full; either way into a new folder
    ``retrieval_index/_/versions/<version>`` that nothing serves until ``served_retrieval_index`` switches to it.
    """
    own = asset_folder(data_root, context)
    versions = data_root.local_path(own) / "versions"
    documents = _newest_per_url(deduplicated_documents)
    settings = IndexSettings(**{k: v for k, v in config.model_dump().items() if k != "full_reindex"})
    version = datetime.now(UTC).strftime("%Y%m%dt%H%M%S") + "-" + uuid.uuid4().hex[:6]
    previous = _previous_version(data_root, own)
    facts = build_version(versions, version, documents, settings, previous=previous, full=config.full_reindex)
    hashes = pl.read_parquet(versions / version / "chunks.parquet", columns=["content_hash"])["content_hash"]
    digest = hashlib.sha256("".join(hashes.to_list()).encode() + json.dumps(settings.embedder_key()).encode())
    per_second = facts["chunks"] / max(facts["seconds"]["total"], 1e-9)
    return dg.Output(
        IndexFolder(path=str(versions / version), version=version, facts=facts),
        data_version=dg.DataVersion(digest.hexdigest()[:16]),
        metadata={
            "version": version,
            "mode": facts["mode"],
            "chunks": facts["chunks"],
            "documents": facts["documents"],
            "changes": facts_table({k: facts[k] for k in ("upserted", "unchanged", "deleted")}, ("change", "chunks")),
            "collection": facts_table(
                {k: facts[k] for k in ("points", "dimensions", "hnsw_m", "hnsw_ef_construct", "quantization")}
            ),
            "fusion": facts_table(
                {k: facts["settings"][k] for k in ("fusion", "fusion_alpha", "rrf_k")}, ("setting", "value")
            ),
            "seconds": facts_table(facts["seconds"], ("phase", "seconds")),
            "chunks_per_second": round(per_second, 1),
            "path": dg.MetadataValue.path(str(versions / version)),
        },
    )


class EvalConfig(dg.Config):
    """The query set and the threshold the index must pass to be served."""

    queries_per_kind: int = Field(50, description=f"Queries of each kind ({', '.join(KINDS)}), from sampled chunks.")
    seed: int = Field(0, description="Seed of the chunk sample.")
    min_hybrid_recall_at_10: float = Field(0.8, description="Hybrid recall@10 below this blocks the switch.")


@dg.asset(
    group_name="retrieval",
    io_manager_key=FOLDER,
    kinds={"parquet"},
    tags={"stage": "retrieval"},
    **stage_facts("retrieval"),
    check_specs=[
        dg.AssetCheckSpec(
            "hybrid_recall_at_10",
            asset="retrieval_eval",
            blocking=True,
            description="Hybrid recall@10 on the generated queries ≥ min_hybrid_recall_at_10 (else not served).",
        ),
        dg.AssetCheckSpec(
            "queries_of_every_kind",
            asset="retrieval_eval",
            blocking=True,
            description="The query set has queries of every kind (sentence, heading, paraphrase).",
        ),
        dg.AssetCheckSpec(
            "hybrid_not_below_either",
            asset="retrieval_eval",
            blocking=False,
            description="Hybrid recall@10 ≥ BM25's and dense's alone (warn: fusion loses what one list found).",
        ),
    ],
)
def retrieval_eval(
    context: dg.AssetExecutionContext, config: EvalConfig, data_root: DataRoot, retrieval_index: IndexFolder
):
    """Recall@5, recall@10 and MRR of BM25, dense and hybrid search over ``retrieval_index``'s version, on
    queries generated from its own chunks (assets/retrieval/evaluation.py); writes ``queries.parquet`` and
    ``ranks.parquet``. Its blocking checks gate ``served_retrieval_index``."""
    index = RetrievalIndex.load(retrieval_index.path, qdrant_url=retrieval_index.facts["settings"]["qdrant_url"])
    try:
        queries = QuerySet(per_kind=config.queries_per_kind, seed=config.seed).generate(index.chunks)
        ranks = evaluate(index, queries)
    finally:
        index.close()
    own = asset_folder(data_root, context)
    data_root.write_parquet(queries, f"{own}/queries.parquet")
    data_root.write_parquet(ranks, f"{own}/ranks.parquet")
    by_mode = summarize(ranks)
    recall = dict(zip(by_mode["mode"], by_mode["recall_at_10"]))
    summary = {row["mode"]: {k: row[k] for k in ("recall_at_5", "recall_at_10", "mrr")} for row in by_mode.to_dicts()}
    hybrid = recall.get("hybrid", 0.0)
    kinds = queries["kind"].value_counts().rows()
    yield dg.Output(
        ReportFolder(
            path=own, version=retrieval_index.version, facts={"index_version": retrieval_index.version, **summary}
        ),
        metadata={
            "index_version": retrieval_index.version,
            "by_mode": frame_table(by_mode),
            "by_kind": frame_table(summarize(ranks, ("kind", "mode"))),
            "queries": queries.height,
            "hybrid_recall_at_10": hybrid,
        },
    )
    yield dg.AssetCheckResult(
        check_name="hybrid_recall_at_10",
        passed=hybrid >= config.min_hybrid_recall_at_10,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"value": hybrid, "threshold": config.min_hybrid_recall_at_10},
    )
    yield dg.AssetCheckResult(
        check_name="queries_of_every_kind",
        passed=all(dict(kinds).get(k, 0) > 0 for k in KINDS),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"queries": dg.MetadataValue.json(dict(kinds))},
    )
    yield dg.AssetCheckResult(
        check_name="hybrid_not_below_either",
        passed=hybrid >= max(recall.get("bm25", 0.0), recall.get("dense", 0.0)),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={f"{m}_recall_at_10": v for m, v in recall.items()},
    )


class ServeConfig(dg.Config):
    keep_versions: int = Field(
        3, ge=1, description="Newest index versions kept on disk (besides the one served before this switch)."
    )


@dg.asset(group_name="retrieval", kinds={"qdrant"}, tags={"stage": "retrieval"}, **stage_facts("retrieval"))
def served_retrieval_index(
    context: dg.AssetExecutionContext,
    config: ServeConfig,
    data_root: DataRoot,
    retrieval_index: IndexFolder,
    retrieval_eval: ReportFolder,
) -> dg.MaterializeResult:
    """The version the gateway serves: ``live.json`` (version and folder, relative to the data root) replaced
    atomically, and with a Qdrant server the alias ``chunks`` switched to the version's collection in one call.
    Materializes only after ``retrieval_eval``'s blocking checks pass on that same version. Then versions older
    than the newest ``keep_versions`` are removed, except the one served until now (a gateway may still read it
    until it reloads)."""
    if retrieval_eval.version != retrieval_index.version:
        raise ValueError(
            f"retrieval_eval judged version {retrieval_eval.version}, retrieval_index is {retrieval_index.version}: "
            "materialize retrieval_eval on this version first"
        )
    qdrant_url = retrieval_index.facts["settings"]["qdrant_url"]
    if qdrant_url:
        store = VectorStore.open(retrieval_index.version, url=qdrant_url)
        try:
            store.switch_alias()
        finally:
            store.close()
    own = asset_folder(data_root, context)
    before = Path(own) / LIVE
    previous = json.loads(before.read_text())["version"] if before.exists() else None
    live = {
        "version": retrieval_index.version,
        "path": str(Path(retrieval_index.path).relative_to(data_root.root)),
        "qdrant_url": qdrant_url,
        "switched_at": datetime.now(UTC).isoformat(),
        "hybrid_recall_at_10": retrieval_eval.facts["hybrid"]["recall_at_10"],
    }
    data_root.write_bytes(json.dumps(live, indent=2).encode(), f"{own}/{LIVE}")
    versions = sorted(p for p in Path(retrieval_index.path).parent.iterdir() if p.is_dir() and p.name[0] != ".")
    keep = {p.name for p in versions[-config.keep_versions :]} | {retrieval_index.version, previous}
    removed = [p.name for p in versions if p.name not in keep]
    for name in removed:
        shutil.rmtree(Path(retrieval_index.path).parent / name)
        if qdrant_url:
            store = VectorStore.open(name, url=qdrant_url)
            try:
                store.client.delete_collection(store.collection)
            finally:
                store.close()
    return dg.MaterializeResult(
        data_version=dg.DataVersion(retrieval_index.version),
        metadata={
            "version": retrieval_index.version,
            "live": dg.MetadataValue.path(f"{own}/{LIVE}"),
            "hybrid_recall_at_10": live["hybrid_recall_at_10"],
            "removed_versions": dg.MetadataValue.json(removed),
        },
    )
