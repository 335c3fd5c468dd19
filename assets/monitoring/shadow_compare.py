"""Champion against challenger on the same requests: the gateway's primary and shadow rows (framework-free).

The gateway mirrors a share of the answered requests to the challenger (``serving.gateway.shadow``) and logs
its answer with the client request's ``request_id`` and ``role="shadow"``. :func:`pairs` joins each shadow
row to its primary row; :func:`compare` summarizes the pairs:

- latency: p50/p95 of each side (the primary's from arrival to its row, the shadow's its engine call);
- length: mean output characters and completion tokens of each side;
- guardrails: each side's output block and flag rate, and the share of pairs with the same verdict;
- agreement: the share of identical outputs (``exact_agreement``) and the mean token overlap
  (:func:`token_overlap`: F1 of the two outputs' whitespace-token multisets);
- failures: the share of shadow rows with an error (never sent, but a challenger that fails is no champion).

:func:`shadow_verdict` turns the summary into a verdict by :class:`ShadowRule` (too few pairs: "too small").
The challenger's perplexity on the champion's outputs is the asset's (it needs the model): the rule takes it
as a number.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import polars as pl

PAIR_COLUMNS = ("output", "latency_ms", "completion_tokens", "output_verdict", "status", "error", "model_version")


def role_rows(df: pl.DataFrame, role: str) -> pl.DataFrame:
    """The rows of one ``role`` (rows written before the column existed are primary)."""
    if "role" not in df.columns:
        return df if role == "primary" else df.clear()
    return df.filter(pl.col("role").fill_null("primary") == role)


def pairs(df: pl.DataFrame) -> pl.DataFrame:
    """One row per mirrored request: ``request_id``, ``prompt``, and the PAIR_COLUMNS of each side
    (``primary_*``, ``shadow_*``); a shadow row without its primary row (another hour) is left out."""
    sides = []
    for role in ("primary", "shadow"):
        rows = role_rows(df, role).unique("request_id", keep="first")
        cols = [pl.col(c).alias(f"{role}_{c}") for c in PAIR_COLUMNS]
        sides.append(rows.select("request_id", *(["prompt"] if role == "primary" else []), *cols))
    return sides[0].join(sides[1], on="request_id", how="inner").sort("request_id")


def token_overlap(a: str, b: str) -> float:
    """F1 of the whitespace tokens of ``a`` and ``b`` as multisets: 1.0 for the same tokens (or both empty),
    0.0 for none in common."""
    ta, tb = Counter(a.split()), Counter(b.split())
    if not ta and not tb:
        return 1.0
    common = sum((ta & tb).values())
    if not common:
        return 0.0
    precision, recall = common / sum(tb.values()), common / sum(ta.values())
    return 2 * precision * recall / (precision + recall)


def _q(s: pl.Series, q: float) -> float | None:
    s = s.drop_nulls()
    return None if s.is_empty() else float(s.quantile(q, interpolation="linear"))


def compare(p: pl.DataFrame) -> dict:
    """The summary of :func:`pairs`' rows (see the module docstring); rates are None without pairs."""
    n = p.height
    out: dict = {"pairs": n}
    if n == 0:
        return out
    ok = p.filter(pl.col("shadow_error").is_null())
    out["shadow_error_rate"] = 1 - ok.height / n
    for side in ("primary", "shadow"):
        rows = p if side == "primary" else ok
        out[f"{side}_latency_p50_ms"] = _q(rows[f"{side}_latency_ms"], 0.5)
        out[f"{side}_latency_p95_ms"] = _q(rows[f"{side}_latency_ms"], 0.95)
        out[f"{side}_mean_output_chars"] = float(rows[f"{side}_output"].str.len_chars().mean()) if rows.height else None
        out[f"{side}_mean_completion_tokens"] = float(rows[f"{side}_completion_tokens"].mean()) if rows.height else None
        out[f"{side}_block_rate"] = float((rows[f"{side}_output_verdict"] == "block").mean()) if rows.height else None
        out[f"{side}_flag_rate"] = float((rows[f"{side}_output_verdict"] == "flag").mean()) if rows.height else None
    if ok.height:
        out["verdict_agreement"] = float((ok["primary_output_verdict"] == ok["shadow_output_verdict"]).mean())
        out["exact_agreement"] = float((ok["primary_output"] == ok["shadow_output"]).mean())
        overlaps = [token_overlap(a, b) for a, b in zip(ok["primary_output"], ok["shadow_output"])]
        out["mean_token_overlap"] = sum(overlaps) / len(overlaps)
    return out


@dataclass(frozen=True)
class ShadowRule:
    """When the challenger passes its shadow test."""

    min_pairs: int = 20
    max_error_rate: float = 0.05  # shadow rows with an error
    max_block_rate_increase: float = 0.02  # challenger's output block rate minus the champion's
    max_latency_ratio: float = 2.0  # challenger's p50 latency over the champion's
    max_perplexity: float | None = None  # the challenger's perplexity on the champion's outputs

    def describe(self) -> str:
        ppl = "" if self.max_perplexity is None else f", perplexity on champion outputs <= {self.max_perplexity}"
        return (
            f"at least {self.min_pairs} pairs; shadow error rate <= {self.max_error_rate}; output block rate at most "
            f"{self.max_block_rate_increase} above the champion's; p50 latency <= {self.max_latency_ratio}x{ppl}"
        )


def shadow_verdict(summary: dict, rule: ShadowRule, perplexity: float | None = None) -> tuple[str, list[str]]:
    """(``"pass"`` | ``"fail"`` | ``"too small"``, the reasons of a fail or of too small)."""
    n = summary.get("pairs", 0)
    if n < rule.min_pairs:
        return "too small", [f"{n} pairs < min_pairs {rule.min_pairs}"]
    reasons = []
    if summary["shadow_error_rate"] > rule.max_error_rate:
        reasons.append(f"shadow error rate {summary['shadow_error_rate']:.3f} > {rule.max_error_rate}")
    if summary.get("shadow_block_rate") is not None:
        increase = summary["shadow_block_rate"] - summary["primary_block_rate"]
        if increase > rule.max_block_rate_increase:
            reasons.append(f"output block rate {increase:+.3f} above the champion's > {rule.max_block_rate_increase}")
    p50, s50 = summary.get("primary_latency_p50_ms"), summary.get("shadow_latency_p50_ms")
    if p50 and s50 is not None and s50 / p50 > rule.max_latency_ratio:
        reasons.append(f"p50 latency {s50 / p50:.2f}x the champion's > {rule.max_latency_ratio}")
    if rule.max_perplexity is not None and perplexity is not None and perplexity > rule.max_perplexity:
        reasons.append(f"perplexity on champion outputs {perplexity:.2f} > {rule.max_perplexity}")
    return ("fail" if reasons else "pass"), reasons
