"""Statistics of an A/B test (framework-free): confidence intervals and significance tests per arm.

- :func:`wilson_interval`: the Wilson score interval of a proportion (success rate, share of good ratings);
  unlike the normal approximation it stays inside [0, 1] and is honest for small n and extreme rates.
- :func:`two_proportion_z`: the two-sided two-proportion z-test with the pooled proportion, for
  success rates and good-rating shares of two arms.
- :func:`mann_whitney`: the two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``, asymptotic with
  continuity and tie correction), for latency, which is skewed and never normal.
- :func:`median_interval`: a distribution-free confidence interval of a median from order statistics.

A test whose arms hold fewer than ``min_samples`` values each is not run: :func:`compare` says "too small"
with the counts instead of a p-value nobody should read.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes`` out of ``n``; None when ``n`` is 0."""
    if successes < 0 or n < 0 or successes > n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    if n == 0:
        return None
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_z(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p) of H0 "both arms have the same rate"; (0.0, 1.0) when the pooled rate is 0 or 1."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError(f"both arms need at least one value, got n1={n1}, n2={n2}")
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (s2 / n2 - s1 / n1) / se
    return z, float(2 * stats.norm.sf(abs(z)))


def mann_whitney(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(U of ``y`` against ``x``, two-sided p) of H0 "the two samples come from the same distribution"."""
    if not len(x) or not len(y):
        raise ValueError(f"both samples need at least one value, got {len(x)} and {len(y)}")
    if len(set(x) | set(y)) == 1:  # all equal: no evidence either way (scipy would divide by zero)
        return len(x) * len(y) / 2, 1.0
    result = stats.mannwhitneyu(y, x, alternative="two-sided", method="asymptotic")
    return float(result.statistic), float(result.pvalue)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A confidence interval of the median: the order statistics at ranks n/2 -+ z*sqrt(n)/2 (the binomial's
    normal approximation, clipped to the sample); None for an empty sample."""
    if not len(values):
        return None
    v = sorted(values)
    n = len(v)
    half = _z(confidence) * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    return float(v[lo]), float(v[max(lo, hi)])


@dataclass(frozen=True)
class Comparison:
    """One metric of one arm against the control."""

    metric: str
    control: str
    arm: str
    test: str
    n_control: int
    n_arm: int
    statistic: float | None
    p_value: float | None
    verdict: str  # "too small (...)", "significant", "not significant"


def _verdict(p: float, alpha: float) -> str:
    return "significant" if p < alpha else "not significant"


def compare_proportions(
    metric: str, control: str, arm: str, s1: int, n1: int, s2: int, n2: int, *, min_samples: int, alpha: float
) -> Comparison:
    if min(n1, n2) < min_samples:
        return Comparison(metric, control, arm, "two-proportion z", n1, n2, None, None, _small(n1, n2, min_samples))
    z, p = two_proportion_z(s1, n1, s2, n2)
    return Comparison(metric, control, arm, "two-proportion z", n1, n2, z, p, _verdict(p, alpha))


def compare_samples(
    metric: str, control: str, arm: str, x: Sequence[float], y: Sequence[float], *, min_samples: int, alpha: float
) -> Comparison:
    if min(len(x), len(y)) < min_samples:
        return Comparison(
            metric, control, arm, "Mann-Whitney U", len(x), len(y), None, None, _small(len(x), len(y), min_samples)
        )
    u, p = mann_whitney(x, y)
    return Comparison(metric, control, arm, "Mann-Whitney U", len(x), len(y), u, p, _verdict(p, alpha))


def _small(n1: int, n2: int, min_samples: int) -> str:
    return f"too small (n={n1} and {n2}, need {min_samples} each)"


def arm_rows(df, control: str | None = None) -> tuple[list[str], object, object]:
    """(arms, control first; the primary rows of the experiment; the feedback rows that rate them, by the same
    tenant, the last rating of a request kept) of an inference-log frame (polars). ``control``: the control arm
    (None: the arms in name order, the first is the control)."""
    import polars as pl

    from .shadow_compare import role_rows

    requests = role_rows(df, "primary").filter(pl.col("arm").fill_null("") != "")
    arms = sorted(requests["arm"].unique().to_list())
    if control is not None:
        if control not in arms:
            raise ValueError(f"control arm {control!r} has no requests in this hour; arms: {arms}")
        arms = [control, *[a for a in arms if a != control]]
    ratings = (
        role_rows(df, "feedback")
        .sort("ts")
        .unique("request_id", keep="last")
        .select("request_id", pl.col("tenant").alias("rater"), "rating")
    )
    joined = (
        requests.drop("rating", strict=False)
        .join(ratings, on="request_id", how="left")
        .with_columns(
            pl.when(pl.col("rater") == pl.col("tenant")).then(pl.col("rating")).otherwise(None).alias("rating")
        )
    )
    return arms, joined.drop("rater"), ratings


def ab_summary(df, *, control: str | None = None, min_samples: int = 30, alpha: float = 0.05, confidence: float = 0.95):
    """(per-arm rows, comparisons of each arm against the control) of an inference-log frame (polars).

    Per arm: requests; success (answered 200, output not blocked) with its Wilson interval; median latency of
    the successes with its interval; ratings and the share of good ones (1) with its interval. Comparisons:
    success and good-rating shares by :func:`two_proportion_z`, latency by :func:`mann_whitney`, each "too
    small" below ``min_samples`` per arm.
    """
    import polars as pl

    arms, rows, _ = arm_rows(df, control)
    per_arm, values = [], {}
    for arm in arms:
        r = rows.filter(pl.col("arm") == arm)
        ok = r.filter((pl.col("status") == 200) & (pl.col("output_verdict") != "block"))
        rated = r.filter(pl.col("rating").is_not_null())
        good = int((rated["rating"] == 1).sum())
        latency = ok["latency_ms"].drop_nulls().to_list()
        values[arm] = (ok.height, r.height, good, rated.height, latency)
        success_ci = wilson_interval(ok.height, r.height, confidence)
        good_ci = wilson_interval(good, rated.height, confidence)
        median_ci = median_interval(latency, confidence)
        per_arm.append(
            {
                "arm": arm,
                "versions": ",".join(sorted(r["model_version"].unique().to_list())),
                "requests": r.height,
                "success_rate": ok.height / r.height if r.height else None,
                "success_ci": success_ci,
                "latency_p50_ms": float(statistics.median(latency)) if latency else None,
                "latency_p50_ci": median_ci,
                "ratings": rated.height,
                "good_rate": good / rated.height if rated.height else None,
                "good_ci": good_ci,
            }
        )
    comparisons = []
    if arms:
        c = arms[0]
        cs, cn, cg, cr, cl = values[c]
        for arm in arms[1:]:
            s, n, g, rn, lat = values[arm]
            kw = {"min_samples": min_samples, "alpha": alpha}
            comparisons += [
                compare_proportions("success_rate", c, arm, cs, cn, s, n, **kw),
                compare_proportions("good_rating_rate", c, arm, cg, cr, g, rn, **kw),
                compare_samples("latency_ms", c, arm, cl, lat, **kw),
            ]
    return per_arm, comparisons
