"""The features stage: offline tables for Feast, the applied registry, the materialized online store."""

import hashlib
import random
import time
from datetime import UTC, datetime

import dagster as dg
import polars as pl
from pydantic import Field

from crawl2serve.assets.contracts import Distribution, TableContract
from crawl2serve.assets.metadata import facts_table, frame_table, stage_facts
from crawl2serve.assets.partitions import EVERY_PARTITION
from crawl2serve.resources.feast_store import FeastStore
from crawl2serve.resources.storage import DataRoot

from .build import DOCUMENT_FEATURES, DOMAIN_FEATURES, empty_tenant_spend, empty_tenant_stats, merge_history
from .build import document_features as build_documents
from .build import domain_features as build_domains

DOCUMENTS = TableContract(
    schema=DOCUMENT_FEATURES,
    not_null=("doc_id", "domain", "event_timestamp", "quality_score"),
    unique=(),  # a document re-crawled on another day is a second, later row (time travel)
    ranges={"quality_score": (0.0, 1.0), "cluster_size": (1, None), "word_count": (1, None)},
    distributions=(
        Distribution(
            "feature_freshness_days",
            "Days since the newest document event (warn above 2).",
            lambda df, f: (f["now"] - df["event_timestamp"].max()).total_seconds() / 86400 if df.height else 1e9,
            high=2.0,
        ),
    ),
)
DOMAINS = TableContract(
    schema=DOMAIN_FEATURES,
    not_null=("domain", "event_timestamp"),
    unique=(),
    ranges={"rejection_share": (0.0, 1.0), "duplicate_share": (0.0, 1.0), "mean_quality": (0.0, 1.0)},
)
OFFLINE_FILES = ("document_features", "domain_features")


def _prefixed(results: list[dg.AssetCheckResult], prefix: str) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            asset_key=r.asset_key,
            check_name=f"{prefix}_{r.check_name}",
            passed=r.passed,
            severity=r.severity,
            metadata=r.metadata,
        )
        for r in results
    ]


def _specs(contract: TableContract, prefix: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            f"{prefix}_{s.name}",
            asset="document_features",
            blocking=s.blocking,
            description=f"{prefix}: {s.description}",
        )
        for s in contract.check_specs("document_features")
    ]


@dg.asset(
    group_name="features",
    ins={name: EVERY_PARTITION for name in ("deduplicated_documents", "document_rejections", "duplicate_clusters")},
    check_specs=_specs(DOCUMENTS, "documents") + _specs(DOMAINS, "domains"),
    kinds={"feast", "parquet"},
    tags={"stage": "features"},
    **stage_facts("features"),
)
def document_features(
    context: dg.AssetExecutionContext,
    feast_store: FeastStore,
    data_root: DataRoot,
    deduplicated_documents: pl.DataFrame,
    document_rejections: pl.DataFrame,
    duplicate_clusters: pl.DataFrame,
):
    """Feast's offline tables: per-document features and per-domain aggregates, with event timestamps.

    Built from every crawl partition of ``deduplicated_documents``, ``document_rejections`` and
    ``duplicate_clusters``; written atomically as Parquet under ``{data_root}/feast/offline`` where the
    file sources of feature_repo/definitions.py read them. The push source's table starts empty.
    """
    now = datetime.now(UTC)
    offline = feast_store.offline_dir
    offline.mkdir(parents=True, exist_ok=True)
    previous = {
        name: pl.read_parquet(offline / f"{name}.parquet") if (offline / f"{name}.parquet").exists() else None
        for name in OFFLINE_FILES
    }
    docs = merge_history(previous["document_features"], build_documents(deduplicated_documents, now), "doc_id", now)
    domains = merge_history(
        previous["domain_features"],
        build_domains(deduplicated_documents, document_rejections, duplicate_clusters, now),
        "domain",
        now,
    )
    # Feast's file offline store wants microsecond timestamps (FIELD-NOTES: ns breaks DuckDB).
    data_root.write_parquet(docs, str(offline / "document_features.parquet"))
    data_root.write_parquet(domains, str(offline / "domain_features.parquet"))
    if not (offline / "tenant_stats.parquet").exists():
        data_root.write_parquet(empty_tenant_stats(), str(offline / "tenant_stats.parquet"))
    if not (offline / "tenant_spend.parquet").exists():
        data_root.write_parquet(empty_tenant_spend(), str(offline / "tenant_spend.parquet"))
    top = (
        domains.group_by("domain")
        .agg(pl.col("documents_kept").sum(), pl.col("mean_quality").mean())
        .sort("documents_kept", descending=True)
        .head(10)
    )
    version = hashlib.sha256(docs.hash_rows().to_numpy().tobytes() + domains.hash_rows().to_numpy().tobytes())
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(version.hexdigest()[:16]),
        metadata={
            "document_rows": docs.height,
            "documents": docs["doc_id"].n_unique(),
            "domain_rows": domains.height,
            "offline_dir": dg.MetadataValue.path(str(offline)),
            "newest_event": dg.MetadataValue.timestamp(docs["event_timestamp"].max()) if docs.height else "none",
            "top_domains": frame_table(top),
        },
    )
    yield from _prefixed(DOCUMENTS.evaluate(docs, "document_features", {"now": now}), "documents")
    yield from _prefixed(DOMAINS.evaluate(domains, "document_features", {"now": now}), "domains")


@dg.asset(
    group_name="features",
    deps=[document_features],
    kinds={"feast"},
    tags={"stage": "features"},
    # Declarative, not a sensor: applying the registry is a pure function of the new offline tables, so it
    # follows each document_features update (eager: once per update, never while an upstream is missing).
    automation_condition=dg.AutomationCondition.eager(),
    **stage_facts("features"),
)
def feast_registry(context: dg.AssetExecutionContext, feast_store: FeastStore) -> dg.MaterializeResult:
    """The applied Feast registry: entities, sources, feature views and services of feature_repo/.

    Comes from ``FeatureStore.apply`` over the objects in feature_repo/definitions.py (what
    ``feast apply`` does), against the offline tables of ``document_features``.
    """
    store = feast_store.store()
    objects = feast_store.definitions()
    started = time.monotonic()
    store.apply(objects)
    registry = feast_store.feast_dir / "registry.db"
    digest = (
        hashlib.sha256(store.registry.proto().SerializeToString(deterministic=True)).hexdigest()[:16]
        if hasattr(store.registry, "proto")
        else hashlib.sha256(registry.read_bytes()).hexdigest()[:16]
    )
    kinds: dict[str, list[str]] = {}
    for o in objects:
        kinds.setdefault(type(o).__name__, []).append(o.name)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(digest),
        metadata={
            "registry_version": digest,
            "registry": dg.MetadataValue.path(str(registry)),
            "objects": frame_table(
                pl.DataFrame(
                    [(kind, name) for kind, names in sorted(kinds.items()) for name in sorted(names)],
                    schema=["kind", "name"],
                    orient="row",
                ),
                limit=100,
            ),
            "apply_seconds": round(time.monotonic() - started, 2),
        },
    )


class OnlineStoreConfig(dg.Config):
    agreement_sample: int = Field(20, description="Documents compared online vs offline after materializing.")


@dg.asset(
    group_name="features",
    deps=[feast_registry, document_features],  # it reads the offline tables itself, besides Feast's registry
    kinds={"feast"},
    tags={"stage": "features"},
    # Declarative, not a sensor: the online store should hold the newest offline rows whenever the registry
    # (after document_features) changes; eager does exactly that, with no cursor or run key to keep by hand.
    automation_condition=dg.AutomationCondition.eager(),
    **stage_facts("features"),
    check_specs=[
        dg.AssetCheckSpec(
            "online_offline_agreement",
            asset="feast_online_store",
            blocking=True,
            description="A sample of documents reads the same online as offline.",
        )
    ],
)
def feast_online_store(context: dg.AssetExecutionContext, config: OnlineStoreConfig, feast_store: FeastStore):
    """The online store (SQLite by default, Redis in production), materialized incrementally from the
    offline tables of ``document_features`` up to now through the ``feast_registry``; then a sample of documents
    is compared online vs offline."""
    store = feast_store.store()
    now = datetime.now(UTC)
    started = time.monotonic()
    store.materialize_incremental(end_date=now)
    seconds = time.monotonic() - started
    offline = {name: pl.read_parquet(feast_store.offline_dir / f"{name}.parquet") for name in OFFLINE_FILES}
    latest = offline["document_features"].sort("event_timestamp").unique("doc_id", keep="last")
    counts = {"document_features": latest.height, "domain_features": offline["domain_features"]["domain"].n_unique()}
    mismatches, sample = online_offline_mismatches(store, latest, config.agreement_sample)
    yield dg.MaterializeResult(
        metadata={
            "entities_online": facts_table(counts, ("feature_view", "entities")),
            "materialized_until": dg.MetadataValue.timestamp(now),
            "materialize_seconds": round(seconds, 2),
        }
    )
    yield dg.AssetCheckResult(
        check_name="online_offline_agreement",
        passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"sampled": sample, "mismatches": dg.MetadataValue.json(mismatches[:10])},
    )


COMPARED = ("quality_score", "word_count", "cluster_size", "language")


def online_offline_mismatches(store, latest: pl.DataFrame, n: int, seed: int = 0) -> tuple[list[dict], int]:
    """Compare the newest offline row of ``n`` random documents with what the online store returns."""
    ids = latest["doc_id"].to_list()
    sample = random.Random(seed).sample(ids, min(n, len(ids)))
    if not sample:
        return [], 0
    online = store.get_online_features(
        features=[f"document_features:{c}" for c in COMPARED], entity_rows=[{"doc_id": d} for d in sample]
    ).to_dict()
    expected = {r["doc_id"]: r for r in latest.filter(pl.col("doc_id").is_in(sample)).iter_rows(named=True)}
    bad = []
    for i, doc in enumerate(online["doc_id"]):
        for col in COMPARED:
            got, want = online[col][i], expected[doc][col]
            same = abs(got - want) < 1e-5 if isinstance(want, float) and got is not None else got == want
            if not same:
                bad.append({"doc_id": doc, "feature": col, "online": got, "offline": want})
    return bad, len(sample)
