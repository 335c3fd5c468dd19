"""Retrieval health of an hour of ``crawl2serve-rag`` traffic, for the drift report: how often retrieval came
back empty and how well the context matched the question (the best dense cosine of its chunks), against the
earlier hours of the baseline window.

A shrinking top score or a growing empty share means questions have moved away from what the index holds
(new topics, or a re-index that dropped pages): the corpus needs a crawl, not the model a retrain.
"""

import polars as pl

from .drift import ks_pvalue

MIN_SCORES = 20  # top scores in both windows before their distributions are compared (K-S)


def retrieval_summary(current: pl.DataFrame, baseline: pl.DataFrame | None) -> dict[str, float | int | None]:
    """``rag_requests``, ``empty_retrieval_share``, ``top_score_p50`` / ``top_score_mean`` and
    ``retrieval_ms_p50`` of ``current`` (rows that asked the index: ``retrieval_hits`` not null), the baseline's
    empty share and top-score median, and the K-S p-value of the two windows' top scores (None with fewer than
    :data:`MIN_SCORES` in either)."""
    now, before = _asked(current), _asked(baseline) if baseline is not None else None
    out: dict[str, float | int | None] = {"rag_requests": now.height, **_figures(now, "")}
    out.update(_figures(before, "baseline_") if before is not None else {})
    scores_now = now["retrieval_top_score"].drop_nulls()
    scores_before = before["retrieval_top_score"].drop_nulls() if before is not None else pl.Series([], dtype=float)
    out["top_score_ks_p"] = (
        ks_pvalue(scores_before.to_numpy(), scores_now.to_numpy())
        if min(scores_now.len(), scores_before.len()) >= MIN_SCORES
        else None
    )
    return out


def _asked(df: pl.DataFrame) -> pl.DataFrame:
    if "retrieval_hits" not in df.columns:
        return df.clear().with_columns(
            retrieval_hits=pl.lit(None, pl.Int64),
            retrieval_top_score=pl.lit(None, pl.Float64),
            retrieval_ms=pl.lit(None, pl.Float64),
        )
    return df.filter(pl.col("retrieval_hits").is_not_null())


def _figures(df: pl.DataFrame, prefix: str) -> dict[str, float | None]:
    if df.height == 0:
        return {f"{prefix}empty_retrieval_share": None, f"{prefix}top_score_p50": None} | (
            {} if prefix else {"top_score_mean": None, "retrieval_ms_p50": None}
        )
    row = df.select(
        (pl.col("retrieval_hits") == 0).mean().alias("empty_retrieval_share"),
        pl.col("retrieval_top_score").median().alias("top_score_p50"),
        pl.col("retrieval_top_score").mean().alias("top_score_mean"),
        pl.col("retrieval_ms").median().alias("retrieval_ms_p50"),
    ).row(0, named=True)
    keys = ("empty_retrieval_share", "top_score_p50") if prefix else tuple(row)
    return {f"{prefix}{k}": None if row[k] is None else float(row[k]) for k in keys}
