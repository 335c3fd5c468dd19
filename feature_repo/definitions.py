"""Feast definitions of crawl2serve: entities, sources, feature views and services. Definitions only:
`feast apply` executes every .py file in this folder, so nothing here generates data. The offline
Parquet files are written by the Dagster asset `document_features` under ${CRAWL2SERVE_FEAST_DIR}."""

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float32, Float64, Int64, String

OFFLINE = os.path.join(os.environ["CRAWL2SERVE_FEAST_DIR"], "offline")

document = Entity(
    name="document",
    join_keys=["doc_id"],
    value_type=ValueType.STRING,
    description="One deduplicated document (doc_id = BLAKE2b of its URL).",
)
domain = Entity(name="domain", join_keys=["domain"], value_type=ValueType.STRING, description="A crawled host.")
tenant = Entity(
    name="tenant",
    join_keys=["tenant_id"],
    value_type=ValueType.STRING,
    description="An API tenant of the serving gateway.",
)

document_source = FileSource(
    name="document_features_source",
    path=f"{OFFLINE}/document_features.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)
domain_source = FileSource(
    name="domain_features_source",
    path=f"{OFFLINE}/domain_features.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)
tenant_batch_source = FileSource(
    name="tenant_stats_source", path=f"{OFFLINE}/tenant_stats.parquet", timestamp_field="event_timestamp"
)
tenant_stats_push = PushSource(name="tenant_stats_push", batch_source=tenant_batch_source)
tenant_spend_batch_source = FileSource(
    name="tenant_spend_source", path=f"{OFFLINE}/tenant_spend.parquet", timestamp_field="event_timestamp"
)
tenant_spend_push = PushSource(name="tenant_spend_push", batch_source=tenant_spend_batch_source)

document_features = FeatureView(
    name="document_features",
    entities=[document],
    ttl=timedelta(days=365),
    schema=[
        Field(name="quality_score", dtype=Float32),
        Field(name="word_count", dtype=Int64),
        Field(name="char_count", dtype=Int64),
        Field(name="language", dtype=String),
        Field(name="language_score", dtype=Float32),
        Field(name="cluster_size", dtype=Int64),
        Field(name="c4_lines_removed", dtype=Int64),
        Field(name="pii_replacements", dtype=Int64),
        Field(name="url", dtype=String),
    ],
    source=document_source,
    online=True,
    description="Per-document features of the deduplicated corpus (event time: fetch time).",
)

domain_features = FeatureView(
    name="domain_features",
    entities=[domain],
    ttl=timedelta(days=90),
    schema=[
        Field(name="documents_kept", dtype=Int64),
        Field(name="documents_rejected", dtype=Int64),
        Field(name="rejection_share", dtype=Float32),
        Field(name="duplicate_share", dtype=Float32),
        Field(name="mean_quality", dtype=Float32),
    ],
    source=domain_source,
    online=True,
    description="Per-domain aggregates of each crawl (event time: end of the crawl day).",
)

tenant_stats = FeatureView(
    name="tenant_stats",
    entities=[tenant],
    ttl=timedelta(days=1),
    schema=[
        Field(name="tier", dtype=String),
        Field(name="requests_last_hour", dtype=Int64),
        Field(name="tokens_last_hour", dtype=Int64),
    ],
    source=tenant_stats_push,
    online=True,
    description="Serving-time statistics per tenant, pushed by the gateway.",
)

tenant_spend = FeatureView(
    name="tenant_spend",
    entities=[tenant],
    ttl=timedelta(days=32),
    schema=[
        Field(name="spend_usd_hour", dtype=Float64),
        Field(name="spend_usd_day", dtype=Float64),
        Field(name="spend_usd_month", dtype=Float64),
    ],
    source=tenant_spend_push,
    online=True,
    description="A tenant's spend in USD in the current UTC hour, day and month (the cost_usd of its requests), "
    "pushed by the gateway (serving.gateway.budgets).",
)

training_features = FeatureService(
    name="training_features",
    features=[document_features, domain_features[["rejection_share", "mean_quality"]]],
    description="What training_dataset selects documents by (point-in-time correct).",
)
serving_features = FeatureService(
    name="serving_features",
    features=[tenant_stats, tenant_spend, domain_features],
    description="What the gateway reads online: tenant tier/usage/spend and domain statistics.",
)
