"""Offline feature tables from the corpus tables (framework-free)."""

from datetime import UTC, datetime

import polars as pl

DOCUMENT_FEATURES = {
    "doc_id": pl.String,
    "domain": pl.String,
    "url": pl.String,
    "quality_score": pl.Float32,
    "word_count": pl.Int64,
    "char_count": pl.Int64,
    "language": pl.String,
    "language_score": pl.Float32,
    "cluster_size": pl.Int64,
    "c4_lines_removed": pl.Int64,
    "pii_replacements": pl.Int64,
    "event_timestamp": pl.Datetime("us", "UTC"),
    "created_timestamp": pl.Datetime("us", "UTC"),
}
DOMAIN_FEATURES = {
    "domain": pl.String,
    "documents_kept": pl.Int64,
    "documents_rejected": pl.Int64,
    "rejection_share": pl.Float32,
    "duplicate_share": pl.Float32,
    "mean_quality": pl.Float32,
    "event_timestamp": pl.Datetime("us", "UTC"),
    "created_timestamp": pl.Datetime("us", "UTC"),
}
TENANT_STATS = {
    "tenant_id": pl.String,
    "tier": pl.String,
    "requests_last_hour": pl.Int64,
    "tokens_last_hour": pl.Int64,
    "event_timestamp": pl.Datetime("us", "UTC"),
}
TENANT_SPEND = {
    "tenant_id": pl.String,
    "spend_usd_hour": pl.Float64,
    "spend_usd_day": pl.Float64,
    "spend_usd_month": pl.Float64,
    "event_timestamp": pl.Datetime("us", "UTC"),
}
_HOST = r"^[a-zA-Z][a-zA-Z0-9+.-]*://\[?([^/\]:?#]+)"


def document_features(deduped: pl.DataFrame, now: datetime | None = None) -> pl.DataFrame:
    """One row per (document, crawl): event time is the fetch time, so re-crawls are time-travel rows."""
    now = now or datetime.now(UTC)
    return (
        deduped.select(
            "doc_id",
            pl.col("host").alias("domain"),
            "url",
            "quality_score",
            "word_count",
            "char_count",
            "language",
            "language_score",
            "cluster_size",
            "c4_lines_removed",
            (pl.col("pii_emails") + pl.col("pii_ip_addresses") + pl.col("pii_phones")).alias("pii_replacements"),
            pl.col("fetch_time").alias("event_timestamp"),
            pl.lit(now).alias("created_timestamp"),
        )
        .cast(DOCUMENT_FEATURES)
        .unique(["doc_id", "event_timestamp"], keep="last", maintain_order=True)
    )


def domain_features(
    deduped: pl.DataFrame, rejections: pl.DataFrame, clusters: pl.DataFrame, now: datetime | None = None
) -> pl.DataFrame:
    """Per domain and crawl day: documents kept and rejected, rejection and duplicate shares, mean quality.

    The event time is the last fetch of that domain on that day (the aggregate is known from then on)."""
    now = now or datetime.now(UTC)
    day = pl.col("fetch_time").dt.date().alias("day")
    kept = deduped.group_by(pl.col("host").alias("domain"), day).agg(
        pl.len().alias("documents_kept"),
        pl.col("quality_score").mean().alias("mean_quality"),
        pl.col("fetch_time").max().alias("event_timestamp"),
    )
    rejected = rejections.group_by(pl.col("host").alias("domain"), day).agg(
        pl.len().alias("documents_rejected"), pl.col("fetch_time").max().alias("rejected_until")
    )
    dup = (
        clusters.with_columns(pl.col("url").str.extract(_HOST).str.to_lowercase().alias("domain"))
        .group_by("domain")
        .agg((~pl.col("kept")).mean().alias("duplicate_share"))
    )
    out = (
        kept.join(rejected, on=["domain", "day"], how="full", coalesce=True)
        .join(dup, on="domain", how="left")
        .with_columns(
            pl.col("documents_kept").fill_null(0),
            pl.col("documents_rejected").fill_null(0),
            pl.max_horizontal("event_timestamp", "rejected_until").alias("event_timestamp"),
            pl.col("duplicate_share").fill_null(0.0),
            pl.col("mean_quality").fill_null(0.0),
        )
        .with_columns(
            (pl.col("documents_rejected") / (pl.col("documents_kept") + pl.col("documents_rejected"))).alias(
                "rejection_share"
            ),
            pl.lit(now).alias("created_timestamp"),
        )
    )
    return out.select(list(DOMAIN_FEATURES)).cast(DOMAIN_FEATURES).sort("domain", "event_timestamp")


def empty_tenant_stats() -> pl.DataFrame:
    """The push source's batch table starts empty; the gateway pushes rows to it at serving time."""
    return pl.DataFrame(schema=TENANT_STATS)


def empty_tenant_spend() -> pl.DataFrame:
    """The spend push source's batch table starts empty; the gateway pushes rows to it at serving time."""
    return pl.DataFrame(schema=TENANT_SPEND)


def merge_history(existing: pl.DataFrame | None, fresh: pl.DataFrame, key: str, now: datetime) -> pl.DataFrame:
    """Append ``fresh`` feature rows to the offline ``existing`` history, point-in-time correctly.

    A row for a (key, event time) already stored with the same values adds nothing. The same (key, event time)
    with different values — a feature recomputed later, e.g. a duplicate-cluster size that grew when a new
    crawl arrived — becomes a new row stamped ``now``: that value was not known before now. (Rewriting the
    old row instead would change history, and incremental materialization, which reads only event times after
    its last run, would never carry the new value online.) New keys and new event times are appended as is.
    """
    if existing is None or existing.height == 0:
        return fresh
    values = [c for c in fresh.columns if c not in (key, "event_timestamp", "created_timestamp")]
    latest = existing.sort("event_timestamp").unique([key, "event_timestamp"], keep="last")
    stored = latest.select(
        key, "event_timestamp", *[pl.col(c).alias(f"{c}__old") for c in values], pl.lit(True).alias("__stored")
    )
    joined = fresh.join(stored, on=[key, "event_timestamp"], how="left")
    seen = pl.col("__stored").fill_null(False)
    same = pl.all_horizontal([pl.col(c).eq_missing(pl.col(f"{c}__old")) for c in values])
    changed = (
        joined.filter(seen & ~same)
        .select(fresh.columns)
        .with_columns(event_timestamp=pl.lit(now, dtype=fresh.schema["event_timestamp"]))
    )
    new = joined.filter(~seen).select(fresh.columns)
    return pl.concat([existing.select(fresh.columns), new, changed]).sort(key, "event_timestamp")
