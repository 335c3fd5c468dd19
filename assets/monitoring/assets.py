"""The monitoring stage: the gateway's inference log, hour by hour, and its drift against training."""

import warnings
from datetime import datetime

import dagster as dg
import pandas as pd
import polars as pl
from pydantic import Field

from crawl2serve.assets.metadata import (
    COLUMN_SCHEMA,
    attribute_docs,
    column_schema,
    facts_table,
    frame_table,
    readable,
    stage_facts,
)
from crawl2serve.assets.partitions import EVERY_PARTITION, monitoring_partitions
from crawl2serve.assets.partitions import HOUR_PARTITION_FORMAT as PARTITION_FORMAT
from crawl2serve.assets.serving.assets import sglang_deployment
from crawl2serve.resources.folders import TokenizerFolder, asset_folder
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.storage import DataRoot
from crawl2serve.serving.gateway.hours import HOUR_FORMAT
from crawl2serve.serving.gateway.logrow import LogRow
from crawl2serve.serving.gateway.reports import drift_report_path

from .drift import (
    ALL_COLUMNS,
    DriftRule,
    build_current,
    build_reference,
    corpus_snippets,
    drift_verdict,
    rates,
)
from .logs import LOG_SCHEMA, read_spool
from .retrieval_stats import retrieval_summary
from .shadow_compare import role_rows

BASELINE_WINDOW = 24  # hours before a drift report's own that its inference_log input holds (the most baseline_hours)
with warnings.catch_warnings():  # the first hours after the partitions' start have fewer hours before them
    warnings.simplefilter("ignore", dg.BetaWarning)
    _LOG_WINDOW = dg.TimeWindowPartitionMapping(
        start_offset=-BASELINE_WINDOW, end_offset=0, allow_nonexistent_upstream_partitions=True
    )


def spool_hour(partition_key: str) -> str:
    """The gateway's spool folder of an hourly partition: ``2026-11-23-06:00`` -> ``2026-11-23T06``."""
    return datetime.strptime(partition_key, PARTITION_FORMAT).strftime(HOUR_FORMAT)


@dg.asset(
    partitions_def=monitoring_partitions,
    group_name="monitoring",
    deps=[sglang_deployment],
    kinds={"parquet"},
    tags={"stage": "monitoring"},
    # the columns are LogRow's fields, described by the docstrings under them (serving/gateway/logrow.py)
    metadata={COLUMN_SCHEMA: column_schema(LOG_SCHEMA, attribute_docs(LogRow))},
    **stage_facts("monitoring"),
)
def inference_log(context: dg.AssetExecutionContext, serving_engine: ServingEngine) -> pl.DataFrame:
    """Every request the gateway served in this UTC hour (prompt, output, tenant, model version, latencies,
    guardrail verdicts; ``role`` primary), the challenger's answers to its mirrored requests (``role`` shadow)
    and the clients' feedback ratings (``role`` feedback), compacted from the gateway's JSONL spool (``{data_root}/inference_log/_/spool``) into
    one Parquet file. Comes from the gateway in front of ``sglang_deployment``; a torn last line (a crash mid
    write) is skipped and counted."""
    hour = spool_hour(context.partition_key)
    df, skipped = read_spool(serving_engine.gateway_settings().log_dir, [hour])
    requests = role_rows(df, "primary")
    summary = rates(requests) if requests.height else {}
    by_tenant = (
        requests.group_by("tenant")
        .agg(pl.len().alias("requests"), pl.col("completion_tokens").sum().alias("completion_tokens"))
        .sort("requests", descending=True)
        if requests.height
        else pl.DataFrame()
    )
    context.add_output_metadata(
        {
            "spool_hour": hour,
            "skipped_lines": skipped,
            "requests": requests.height,
            "shadow_rows": role_rows(df, "shadow").height,
            "feedback_rows": role_rows(df, "feedback").height,
            **{k: readable(v) for k, v in summary.items() if v is not None and k != "requests"},
            "by_tenant": frame_table(by_tenant),
        }
    )
    if skipped:
        context.log.warning(f"{skipped} torn or invalid spool lines skipped in {hour}")
    return df


class DriftConfig(dg.Config):
    alpha: float = Field(
        0.05,
        description="Family-wise false-positive rate of one hour's report: a column's p-value "
        "must be under alpha / (columns tested) (Bonferroni)",
    )
    psi_threshold: float = Field(0.2, description="A column drifts only when its PSI is above this too")
    psi_bins: int = Field(10, description="PSI bins of a numerical column: quantiles of its reference")
    min_baseline: int = Field(
        200,
        description="Fewest values of a column that earlier traffic (or the corpus) must "
        "hold to be its reference; a smaller baseline is not used (corpus fallback for prompt "
        "shape, else no verdict for the column)",
    )
    min_current: int = Field(5, description="Fewest values of a column in this hour for a verdict on it")
    min_drifted_columns: int = Field(
        1, description="The hour drifts when at least this many columns drifted (the drift sensor retrains on it)"
    )
    baseline_hours: int = Field(
        BASELINE_WINDOW,
        ge=0,
        le=BASELINE_WINDOW,
        description="Earlier hours of inference logs that are the reference of the "
        f"prompt shape, output and serving columns (at most {BASELINE_WINDOW}: the hours the input maps to)",
    )
    reference_sample: int = Field(2000, description="Prompt-sized corpus snippets sampled as the prompt reference")
    max_error_rate: float = Field(0.05, description="Check: share of requests with a 5xx or an engine error")
    max_unsafe_rate: float = Field(0.05, description="Check: share of requests blocked by a guardrail")

    def rule(self) -> DriftRule:
        return DriftRule(
            alpha=self.alpha,
            psi_threshold=self.psi_threshold,
            psi_bins=self.psi_bins,
            min_reference=self.min_baseline,
            min_current=self.min_current,
            min_drifted_columns=self.min_drifted_columns,
        )


def _baseline(logs: dict[str, pl.DataFrame], partition_key: str, hours: int) -> pl.DataFrame | None:
    """The compacted inference logs of the ``hours`` before this partition that exist (and hold rows)."""
    earlier = sorted(p for p in logs if p < partition_key)[-hours:] if hours else []
    frames = [logs[p] for p in earlier if logs[p].height]
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


CHECKS = [
    dg.AssetCheckSpec(
        "drift_share_below_threshold",
        asset="drift_report",
        description="No drift verdict for the hour: fewer than min_drifted_columns columns with "
        "p < alpha / tested and PSI > psi_threshold (WARN: the drift sensor acts on it)",
    ),
    dg.AssetCheckSpec(
        "error_rate_below_threshold",
        asset="drift_report",
        description="Requests answered with a 5xx or an engine error, under max_error_rate",
    ),
    dg.AssetCheckSpec(
        "unsafe_rate_below_threshold",
        asset="drift_report",
        description="Requests blocked by a guardrail (prompt or output), under max_unsafe_rate",
    ),
]

_TABLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("column", "string"),
        dg.TableColumn("reference", "string", description="source compared with"),
        dg.TableColumn("test", "string"),
        dg.TableColumn("p", "float"),
        dg.TableColumn("p_threshold", "float"),
        dg.TableColumn("psi", "float"),
        dg.TableColumn("n_ref", "int"),
        dg.TableColumn("n_cur", "int"),
        dg.TableColumn("verdict", "string"),
    ]
)


def _verdict_table(result) -> dg.TableMetadataValue:
    records = []
    for v in result.columns.values():
        records.append(
            dg.TableRecord(
                {
                    "column": v.column,
                    "reference": v.reference_label,
                    "test": v.test or "-",
                    "p": None if v.p_value is None else readable(float(v.p_value)),
                    "p_threshold": None if v.p_threshold is None else readable(float(v.p_threshold)),
                    "psi": None if v.psi is None else readable(float(v.psi)),
                    "n_ref": v.n_reference,
                    "n_cur": v.n_current,
                    "verdict": v.verdict,
                }
            )
        )
    return dg.MetadataValue.table(records, schema=_TABLE_SCHEMA)


@dg.asset(
    partitions_def=monitoring_partitions,
    group_name="monitoring",
    ins={
        # this hour and the BASELINE_WINDOW hours before it (those that exist), keyed by partition
        "inference_log": dg.AssetIn(partition_mapping=_LOG_WINDOW),
        "deduplicated_documents": EVERY_PARTITION,  # the training corpus
    },
    kinds={"evidently"},
    tags={"stage": "monitoring"},
    check_specs=CHECKS,
    **stage_facts("monitoring"),
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    data_root: DataRoot,
    inference_log: dict[str, pl.DataFrame],
    tokenizer: TokenizerFolder,
    deduplicated_documents: pl.DataFrame,
    serving_engine: ServingEngine,
):
    """The drift verdict of this hour's traffic, column by column: prompt content (language, share of words
    unknown to the tokenizer, computed by the corpus stage's code) against prompt-sized snippets of the training
    corpus; prompt shape, outputs and serving (lengths, latency, TTFT, error and guardrail flags) against the
    earlier ``baseline_hours`` of logs when they hold at least ``min_baseline`` values of the column (prompt
    shape falls back to the corpus snippets, the rest gets "no verdict"). Each tested column has a p-value
    (K-S, or an exact chi-square for categories) and a PSI; it drifts when p < alpha / tested and PSI >
    psi_threshold, and the hour when at least ``min_drifted_columns`` do. The HTML report (verdict table and
    Evidently's view of both tests per column) lies under the data root; metadata holds the verdict, the table
    and the drift share, so the UI plots them hour by hour. Comes from ``inference_log``, ``tokenizer`` and
    ``deduplicated_documents`` (every crawl partition: the corpus the training set is drawn from)."""
    if context.partition_key not in inference_log:
        raise dg.Failure(f"inference_log {context.partition_key} is not materialized: materialize it first")
    # the clients' requests only: the challenger's mirrored answers and feedback ratings are other rows
    logs = {k: role_rows(v, "primary") for k, v in inference_log.items()}
    inference_log = logs[context.partition_key]
    summary = rates(inference_log)
    error_rate, unsafe_rate = summary.get("error_rate") or 0.0, summary.get("unsafe_rate") or 0.0
    checks = [
        dg.AssetCheckResult(
            check_name="error_rate_below_threshold",
            passed=error_rate <= config.max_error_rate,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"error_rate": error_rate, "threshold": config.max_error_rate},
        ),
        dg.AssetCheckResult(
            check_name="unsafe_rate_below_threshold",
            passed=unsafe_rate <= config.max_unsafe_rate,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"unsafe_rate": unsafe_rate, "threshold": config.max_unsafe_rate},
        ),
    ]
    rule = config.rule()
    html = data_root.local_path(asset_folder(data_root, context)) / "report.html"
    baseline = _baseline(logs, context.partition_key, config.baseline_hours)
    if inference_log.height:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(data_root.local_path(tokenizer.path)))
        current = build_current(inference_log, tok)
        snippets = corpus_snippets(deduplicated_documents, config.reference_sample, seed=0)
        corpus = build_reference(snippets, tok, sample=None)
        earlier = build_current(baseline, tok) if baseline is not None else None
    else:  # an hour without traffic: every column says so, nothing to describe
        current = pd.DataFrame({c: pd.Series([], dtype=float) for c in ALL_COLUMNS})
        corpus = earlier = None
    result = drift_verdict(current, corpus, earlier, list(ALL_COLUMNS), rule=rule, html_path=str(html))
    context.log.info(
        f"{context.partition_key}: {result.verdict}: {len(result.drifted_columns)} of "
        f"{len(result.tested_columns)} tested columns drifted {result.drifted_columns}; "
        f"no verdict: {result.no_verdict}"
    )
    yield dg.MaterializeResult(
        metadata={
            "verdict": result.verdict,
            "dataset_drift": result.dataset_drift,
            "drift_share": dg.MetadataValue.float(readable(result.drift_share)),
            "drifted_columns": dg.MetadataValue.json(result.drifted_columns),
            "tested_columns": len(result.tested_columns),
            "drift_rule": result.describe(),
            "requests": inference_log.height,
            "reference": facts_table(
                {
                    "corpus_snippets": 0 if corpus is None else len(corpus),
                    "baseline_requests": 0 if baseline is None else baseline.height,
                    "min_baseline": config.min_baseline,
                },
                ("source", "values"),
            ),
            "per_column": _verdict_table(result),
            "no_verdict_columns": dg.MetadataValue.json(result.no_verdict),
            "report": dg.MetadataValue.path(str(html)),
            # served by the gateway (serving/gateway/reports.py says why there), not a file:// link
            "report_url": dg.MetadataValue.url(
                serving_engine.public_gateway_url() + drift_report_path(context.partition_key)
            ),
            **{k: readable(v) for k, v in summary.items() if v is not None and k != "requests"},
            # crawl2serve-rag: empty retrievals and context scores, this hour against the baseline hours
            "retrieval": facts_table(
                {k: "-" if v is None else readable(v) for k, v in retrieval_summary(inference_log, baseline).items()}
            ),
        },
        check_results=[
            *checks,
            dg.AssetCheckResult(
                check_name="drift_share_below_threshold",
                passed=not result.dataset_drift,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "verdict": result.verdict,
                    "drift_share": result.drift_share,
                    "drifted_columns": dg.MetadataValue.json(result.drifted_columns),
                    "min_drifted_columns": config.min_drifted_columns,
                },
            ),
        ],
    )
