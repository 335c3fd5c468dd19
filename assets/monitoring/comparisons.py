"""Champion against challenger on live traffic: the shadow test and the A/B test, hour by hour.

Both read the hour's ``inference_log`` partition: ``shadow_report`` the primary/shadow row pairs the gateway's
shadow traffic writes (``serving.gateway.shadow``), ``ab_report`` the rows of an A/B test's arms and the
feedback rows that rate them (``serving.gateway.experiments``, ``POST /v1/feedback``). The statistics are
framework-free (:mod:`.shadow_compare`, :mod:`.ab_stats`).

Evidence for the release gate: ``shadow_report``'s check ``challenger_passes_shadow`` (WARN) and its metadata
``verdict``/``challenger``; :func:`shadow_evidence` returns the newest one for a challenger version, which a
gate (``model_evaluation``) reads with its ``context.instance``.
"""

import math
import os

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from crawl2serve.assets.metadata import facts_table, frame_table, readable, stage_facts
from crawl2serve.assets.partitions import monitoring_partitions

from .ab_stats import ab_summary
from .shadow_compare import ShadowRule, compare, pairs, role_rows, shadow_verdict

SHADOW_CHECK = "challenger_passes_shadow"
NO_SHADOW = "no shadow traffic"  # the hour mirrored nothing: the check passes (shadow off is not a warning)


class ShadowConfig(dg.Config):
    min_pairs: int = Field(20, description="Fewer mirrored requests in the hour: verdict 'too small'")
    max_error_rate: float = Field(0.05, description="Shadow rows with an error, at most")
    max_block_rate_increase: float = Field(0.02, description="Challenger's output block rate minus the champion's")
    max_latency_ratio: float = Field(2.0, description="Challenger's p50 latency over the champion's, at most")
    max_perplexity: float | None = Field(None, description="Challenger's perplexity on the champion's outputs")
    perplexity_outputs: int = Field(32, ge=0, description="Champion outputs scored by the challenger (0: none)")
    challenger_dir: str | None = Field(
        None,
        description="The challenger's model folder for the perplexity; None: the shadow rows' served model "
        "when it is a local model folder (the CPU engine's merged folder), else no perplexity",
    )

    def rule(self) -> ShadowRule:
        return ShadowRule(
            self.min_pairs,
            self.max_error_rate,
            self.max_block_rate_increase,
            self.max_latency_ratio,
            self.max_perplexity,
        )


def _model_folder(values) -> str | None:
    return next((v for v in values if v and os.path.isfile(os.path.join(v, "config.json"))), None)


def outputs_perplexity(folder: str, texts: list[str]) -> dict | None:
    """The token-weighted perplexity of the model in ``folder`` on ``texts`` (each scored alone, by
    ``assets.release.evaluate.perplexity``; texts under 2 tokens skipped); None when none is long enough."""
    from crawl2serve.assets.release.evaluate import load_candidate, perplexity

    model, tokenizer = load_candidate(folder, None, device="cpu")
    total, tokens, scored = 0.0, 0, 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < 2:
            continue
        result = perplexity(model, np.asarray([ids]), batch_size=1, max_sequences=1)
        total += result["loss"] * result["tokens"]
        tokens += result["tokens"]
        scored += 1
    if not tokens:
        return None
    return {"perplexity": math.exp(total / tokens), "outputs": scored, "tokens": tokens}


@dg.asset(
    partitions_def=monitoring_partitions,
    group_name="monitoring",
    ins={"inference_log": dg.AssetIn()},
    kinds={"parquet"},
    tags={"stage": "monitoring"},
    check_specs=[dg.AssetCheckSpec(SHADOW_CHECK, asset="shadow_report")],
    **stage_facts("monitoring"),
)
def shadow_report(context: dg.AssetExecutionContext, config: ShadowConfig, inference_log: pl.DataFrame):
    """The challenger against the champion on this hour's mirrored requests: one row per request the gateway
    mirrored (its primary and shadow answers side by side), and in metadata the comparison: latency, output
    length, guardrail verdicts, agreement (exact and token overlap), shadow failures and the challenger's
    perplexity on the champion's outputs, with the verdict of the rule (check ``challenger_passes_shadow``).
    Comes from ``inference_log`` (rows with ``role`` primary and shadow sharing a ``request_id``)."""
    p = pairs(inference_log)
    summary = compare(p)
    challenger = sorted(set(p["shadow_model_version"].to_list())) if p.height else []
    champion = sorted(set(p["primary_model_version"].to_list())) if p.height else []
    ppl = None
    shadows = role_rows(inference_log, "shadow")
    folder = config.challenger_dir or _model_folder(shadows["served_model"].unique().sort().to_list())
    texts = [t for t in p["primary_output"].to_list() if t][: config.perplexity_outputs] if p.height else []
    if folder and texts:
        ppl = outputs_perplexity(folder, texts)
    if shadows.height:
        verdict, reasons = shadow_verdict(summary, config.rule(), ppl["perplexity"] if ppl else None)
    else:  # shadow traffic is off (or mirrored nothing this hour): nothing to judge, nothing to warn about
        verdict, reasons = NO_SHADOW, []
    context.log.info(f"{context.partition_key}: shadow {challenger} vs {champion}: {verdict} {reasons}")
    facts = {k: readable(v) for k, v in summary.items() if v is not None}
    if ppl:
        facts.update(challenger_perplexity_on_champion=readable(ppl["perplexity"]), perplexity_outputs=ppl["outputs"])
    yield dg.Output(
        p,
        metadata={
            "verdict": verdict,
            "reasons": dg.MetadataValue.json(reasons),
            "challenger": ",".join(challenger),
            "champion": ",".join(champion),
            "rule": config.rule().describe(),
            "comparison": facts_table(facts, ("metric", "value")),
            "examples": frame_table(p.select("request_id", "prompt", "primary_output", "shadow_output"), limit=10),
            **facts,
        },
    )
    yield dg.AssetCheckResult(
        check_name=SHADOW_CHECK,
        passed=verdict in ("pass", NO_SHADOW),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"verdict": verdict, "reasons": dg.MetadataValue.json(reasons), "challenger": ",".join(challenger)},
    )


def shadow_evidence(instance: dg.DagsterInstance, challenger: str) -> dict | None:
    """The newest ``shadow_report`` verdict on ``challenger`` (a version label): ``{"partition", "verdict",
    "pairs", "reasons", "run_id"}``, or None when no hour mirrored traffic to it."""
    records = instance.fetch_materializations(dg.AssetKey("shadow_report"), limit=100).records
    for record in records:
        meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        if challenger in str(meta.get("challenger", "")).split(","):
            return {
                "partition": record.partition_key,
                "verdict": meta["verdict"],
                "pairs": meta.get("pairs", 0),
                "reasons": meta.get("reasons", []),
                "run_id": record.run_id,
            }
    return None


class ABConfig(dg.Config):
    control: str | None = Field(None, description="The control arm; None: the arms in name order, first is control")
    min_samples: int = Field(30, ge=1, description="Per arm and metric; fewer: 'too small', no test")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of each test")
    confidence: float = Field(0.95, gt=0, lt=1, description="Of the intervals")


def _ci(interval) -> str | None:
    return None if interval is None else f"[{readable(interval[0])}, {readable(interval[1])}]"


@dg.asset(
    partitions_def=monitoring_partitions,
    group_name="monitoring",
    ins={"inference_log": dg.AssetIn()},
    kinds={"scipy"},
    tags={"stage": "monitoring"},
    **stage_facts("monitoring"),
)
def ab_report(context: dg.AssetExecutionContext, config: ABConfig, inference_log: pl.DataFrame) -> dg.MaterializeResult:
    """The A/B test of this hour: per arm, requests, success rate, median latency and the share of good
    feedback ratings, each with its confidence interval; each arm against the control by a two-proportion
    z-test (success, good ratings) and a Mann-Whitney U test (latency), or "too small" below ``min_samples``.
    Comes from ``inference_log`` (rows with an ``arm``, and the feedback rows ``POST /v1/feedback`` wrote in
    the same hour: a rating that arrives in a later hour is not counted)."""
    per_arm, comparisons = ab_summary(
        inference_log,
        control=config.control,
        min_samples=config.min_samples,
        alpha=config.alpha,
        confidence=config.confidence,
    )
    experiments = sorted(set(role_rows(inference_log, "primary").filter(pl.col("arm") != "")["experiment"].to_list()))
    arms = pl.DataFrame(
        [{**{k: (readable(v) if not isinstance(v, tuple) else _ci(v)) for k, v in a.items()}} for a in per_arm]
    )
    tests = pl.DataFrame(
        [
            {
                "metric": c.metric,
                "arm": c.arm,
                "control": c.control,
                "test": c.test,
                "n_control": c.n_control,
                "n_arm": c.n_arm,
                "statistic": readable(c.statistic),
                "p_value": readable(c.p_value),
                "verdict": c.verdict,
            }
            for c in comparisons
        ]
    )
    significant = [f"{c.metric} ({c.arm})" for c in comparisons if c.verdict == "significant"]
    small = any(c.verdict.startswith("too small") for c in comparisons)
    verdict = (
        "no experiment"
        if not per_arm
        else ("significant: " + ", ".join(significant))
        if significant
        else "too small"
        if small
        else "no significant difference"
    )
    context.log.info(f"{context.partition_key}: ab {experiments}: {verdict}")
    return dg.MaterializeResult(
        metadata={
            "verdict": verdict,
            "experiment": ",".join(experiments),
            "arms": frame_table(arms) if arms.height else facts_table({}),
            "tests": frame_table(tests) if tests.height else facts_table({}),
            "requests": sum(a["requests"] for a in per_arm),
            "ratings": sum(a["ratings"] for a in per_arm),
        }
    )
