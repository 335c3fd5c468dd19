"""The monitoring stage: the gateway's inference log, hour by hour, and its drift against training."""

import json
from datetime import datetime, timedelta

import dagster as dg
import pandas as pd
import polars as pl
from pydantic import Field

from assets.metadata import md_table
from assets.serving.assets import sglang_deployment
from resources.serving import ServingEngine
from resources.storage import DataRoot

from .drift import CORPUS_CONTENT_COLUMNS, OUTPUT_COLUMNS, SERVING_COLUMNS, build_current, build_reference, \
    coarsen_languages, corpus_snippets, drift_report as run_drift_report, rates
from .logs import HOUR_FORMAT, read_spool

PROMPT_SHAPE_COLUMNS = ("prompt_chars", "prompt_words", "prompt_quality")

# One partition per UTC hour; the current (open) hour is a partition too, so traffic can be looked at as it comes.
monitoring_partitions = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00", end_offset=1)
PARTITION_FORMAT = "%Y-%m-%d-%H:%M"


def spool_hour(partition_key: str) -> str:
    """The gateway's spool folder of an hourly partition: ``2026-11-23-06:00`` -> ``2026-11-23T06``."""
    return datetime.strptime(partition_key, PARTITION_FORMAT).strftime(HOUR_FORMAT)


@dg.asset(partitions_def=monitoring_partitions, group_name="monitoring", deps=[sglang_deployment],
          kinds={"parquet"}, tags={"stage": "monitoring"})
def inference_log(context: dg.AssetExecutionContext, serving_engine: ServingEngine) -> pl.DataFrame:
    """Every request the gateway served in this UTC hour (prompt, output, tenant, model version, latencies,
    guardrail verdicts), compacted from the gateway's JSONL spool (``{data_root}/inference_log/_/spool``) into
    one Parquet file. Comes from the gateway in front of ``sglang_deployment``; a torn last line (a crash mid
    write) is skipped and counted."""
    hour = spool_hour(context.partition_key)
    df, skipped = read_spool(serving_engine.gateway_settings().log_dir, [hour])
    summary = rates(df) if df.height else {}
    by_tenant = df.group_by("tenant").agg(pl.len().alias("requests"), pl.col("completion_tokens").sum()
                                          .alias("completion_tokens")).sort("requests", descending=True) \
        if df.height else pl.DataFrame()
    context.add_output_metadata({
        "spool_hour": hour, "skipped_lines": skipped,
        "requests": df.height, **{k: v for k, v in summary.items() if v is not None and k != "requests"},
        "by_tenant": dg.MetadataValue.md(md_table(by_tenant.rows(), by_tenant.columns) if by_tenant.height
                                         else "no traffic"),
    })
    if skipped:
        context.log.warning(f"{skipped} torn or invalid spool lines skipped in {hour}")
    return df


class DriftConfig(dg.Config):
    drift_share_threshold: float = Field(0.5, description="The hour drifts when at least this share of the tested "
                                         "columns drifted (the drift sensor retrains on it)")
    baseline_hours: int = Field(24, description="Earlier hours of inference logs that are the reference of the "
                                "output and serving columns")
    reference_sample: int = Field(2000, description="Prompt-sized corpus snippets sampled as the prompt reference")
    numerical_test: str = Field("ks", description="Evidently stat test of numerical columns (ks: a p-value, so the "
                                "verdict accounts for how few requests an hour may hold)")
    categorical_test: str = Field("chisquare", description="Evidently stat test of categorical columns")
    min_requests: int = Field(50, description="Fewer requests in the hour: no drift verdict (too few to test)")
    max_error_rate: float = Field(0.05, description="Check: share of requests with a 5xx or an engine error")
    max_unsafe_rate: float = Field(0.05, description="Check: share of requests blocked by a guardrail")


def _latest_corpus(data_root: DataRoot) -> pl.DataFrame:
    files = sorted(data_root.glob(data_root.path("deduplicated_documents", "*", "data.parquet")))
    if not files:
        raise dg.Failure("drift_report needs the training corpus: materialize deduplicated_documents first")
    return data_root.read_parquet(files[-1])


def _baseline(data_root: DataRoot, partition_key: str, hours: int) -> pl.DataFrame | None:
    """The compacted inference logs of the ``hours`` before this partition that exist."""
    start = datetime.strptime(partition_key, PARTITION_FORMAT)
    frames = []
    for h in range(1, hours + 1):
        path = data_root.path("inference_log", (start - timedelta(hours=h)).strftime(PARTITION_FORMAT),
                              "data.parquet")
        if data_root.exists(path):
            frames.append(data_root.read_parquet(path))
    frames = [f for f in frames if f.height]
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


CHECKS = [
    dg.AssetCheckSpec("drift_share_below_threshold", asset="drift_report",
                      description="Share of drifted columns under drift_share_threshold (WARN: the drift sensor "
                      "acts on it)"),
    dg.AssetCheckSpec("error_rate_below_threshold", asset="drift_report",
                      description="Requests answered with a 5xx or an engine error, under max_error_rate"),
    dg.AssetCheckSpec("unsafe_rate_below_threshold", asset="drift_report",
                      description="Requests blocked by a guardrail (prompt or output), under max_unsafe_rate"),
]


@dg.asset(partitions_def=monitoring_partitions, group_name="monitoring", kinds={"evidently"},
          tags={"stage": "monitoring"}, check_specs=CHECKS)
def drift_report(context: dg.AssetExecutionContext, config: DriftConfig, inference_log: pl.DataFrame,
                 data_root: DataRoot):
    """An Evidently data-drift report of this hour's traffic against training: prompt descriptors (language,
    share of words unknown to the tokenizer, computed by the corpus stage's code) against the training corpus,
    and output/serving descriptors (lengths, latency, TTFT, error and guardrail flags) against the earlier
    ``baseline_hours`` of logs. The HTML report lies under the data root; the drift share and the drifted columns
    are metadata, so the UI plots them hour by hour. Comes from ``inference_log``, ``tokenizer`` and
    ``deduplicated_documents``."""
    from transformers import AutoTokenizer

    summary = rates(inference_log)
    error_rate, unsafe_rate = summary.get("error_rate") or 0.0, summary.get("unsafe_rate") or 0.0
    checks = [
        dg.AssetCheckResult(check_name="error_rate_below_threshold", passed=error_rate <= config.max_error_rate,
                            severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"error_rate": error_rate, "threshold": config.max_error_rate}),
        dg.AssetCheckResult(check_name="unsafe_rate_below_threshold", passed=unsafe_rate <= config.max_unsafe_rate,
                            severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"unsafe_rate": unsafe_rate, "threshold": config.max_unsafe_rate}),
    ]
    if inference_log.height < config.min_requests:
        context.log.info(f"{inference_log.height} requests in this hour (< min_requests {config.min_requests}): "
                         "too few for a drift verdict")
        yield dg.MaterializeResult(
            metadata={"requests": inference_log.height, "dataset_drift": False, "too_few_requests": True,
                      **{k: v for k, v in summary.items() if v is not None and k != "requests"}},
            check_results=[*checks, dg.AssetCheckResult(
                check_name="drift_share_below_threshold", passed=True, severity=dg.AssetCheckSeverity.WARN,
                metadata={"requests": inference_log.height, "min_requests": config.min_requests})])
        return
    tokenizer = AutoTokenizer.from_pretrained(str(data_root.local_path(data_root.path("tokenizer"))))
    baseline = _baseline(data_root, context.partition_key, config.baseline_hours)
    current = build_current(inference_log, tokenizer)
    snippets = corpus_snippets(_latest_corpus(data_root), config.reference_sample, seed=0)
    reference = build_reference(snippets, tokenizer, sample=None)
    columns = list(CORPUS_CONTENT_COLUMNS)
    if baseline is not None:
        # Content (language, unknown words) against the corpus; prompt shape, outputs, latency and verdicts
        # against the earlier traffic: each reference row carries only the columns it is the reference of.
        reference[list(PROMPT_SHAPE_COLUMNS)] = float("nan")
        earlier = build_current(baseline, tokenizer)
        earlier[list(CORPUS_CONTENT_COLUMNS)] = None
        earlier["source"] = "baseline"
        reference = pd.concat([reference, earlier[reference.columns]], ignore_index=True)
        columns += list(PROMPT_SHAPE_COLUMNS + OUTPUT_COLUMNS + SERVING_COLUMNS)
    current, reference = coarsen_languages(current, reference)
    html = data_root.local_path(data_root.path("drift_report", context.partition_key, "report.html"))
    html.parent.mkdir(parents=True, exist_ok=True)
    result = run_drift_report(current, reference, columns, drift_share_threshold=config.drift_share_threshold,
                              html_path=str(html), num_method=config.numerical_test,
                              cat_method=config.categorical_test)
    context.log.info(f"{context.partition_key}: {len(result.drifted_columns)} of {len(result.per_column)} columns "
                     f"drifted (share {result.drift_share:.2f}): {result.drifted_columns}")
    per_column = [(c, v["stattest"], round(v["score"], 4), v["drifted"]) for c, v in result.per_column.items()]
    yield dg.MaterializeResult(
        metadata={
            "drift_share": dg.MetadataValue.float(result.drift_share),
            "drifted_columns": dg.MetadataValue.json(result.drifted_columns),
            "dataset_drift": result.dataset_drift,
            "drift_share_threshold": config.drift_share_threshold,
            "requests": inference_log.height,
            "reference": json.dumps({"corpus_snippets": int((reference["source"] == "corpus").sum()),
                                     "baseline_requests": 0 if baseline is None else baseline.height}),
            "per_column": dg.MetadataValue.md(md_table(per_column, ["column", "test", "score", "drifted"])),
            "skipped_columns": dg.MetadataValue.json(result.skipped_columns),
            "report": dg.MetadataValue.path(str(html)),
            "report_url": dg.MetadataValue.url(html.as_uri()),
            **{k: v for k, v in summary.items() if v is not None and k != "requests"},
        },
        check_results=[*checks, dg.AssetCheckResult(
            check_name="drift_share_below_threshold", passed=not result.dataset_drift,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"drift_share": result.drift_share, "drifted_columns": dg.MetadataValue.json(
                result.drifted_columns), "threshold": config.drift_share_threshold})],
    )

