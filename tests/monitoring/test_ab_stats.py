"""The A/B statistics (assets/monitoring/ab_stats.py) on numbers with known answers, and per-arm summaries of
small inference-log frames."""

import math

import polars as pl
import pytest

from crawl2serve.assets.monitoring.ab_stats import (
    ab_summary,
    compare_proportions,
    compare_samples,
    mann_whitney,
    median_interval,
    two_proportion_z,
    wilson_interval,
)
from crawl2serve.assets.monitoring.logs import LOG_SCHEMA


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)  # Wilson (1927), z = 1.96
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) is None
    wide, narrow = wilson_interval(5, 10, 0.99), wilson_interval(5, 10, 0.90)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]
    with pytest.raises(ValueError, match="successes must be in"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 10, 1.5)


def test_two_proportion_z_known_values():
    z, p = two_proportion_z(45, 100, 60, 100)
    pooled = 105 / 200
    assert z == pytest.approx(0.15 / math.sqrt(pooled * (1 - pooled) * 0.02))
    assert round(z, 3) == 2.124 and round(p, 4) == 0.0337
    assert two_proportion_z(60, 100, 45, 100)[0] == pytest.approx(-z)
    assert two_proportion_z(10, 10, 7, 7) == (0.0, 1.0)  # no variance: no evidence
    with pytest.raises(ValueError, match="n1=0"):
        two_proportion_z(0, 0, 1, 2)


def test_mann_whitney_detects_a_shift_and_not_noise():
    x = [float(v) for v in range(30)]
    assert mann_whitney(x, [v + 20 for v in x])[1] < 0.001
    assert mann_whitney(x, list(reversed(x)))[1] == pytest.approx(1.0)
    assert mann_whitney([5.0] * 10, [5.0] * 12) == (60.0, 1.0)
    with pytest.raises(ValueError, match="at least one value"):
        mann_whitney([], [1.0])


def test_median_interval_covers_the_median_from_order_statistics():
    values = [float(v) for v in range(100)]
    assert median_interval(values) == (40.0, 59.0)  # ranks 50 -+ 1.96 * sqrt(100) / 2
    assert median_interval([3.0]) == (3.0, 3.0)
    assert median_interval([]) is None
    lo, hi = median_interval(list(reversed(values)), 0.5)
    assert 40 < lo <= 49.5 <= hi < 59


def test_too_small_samples_get_no_p_value():
    small = compare_proportions("success_rate", "a", "b", 5, 9, 9, 9, min_samples=10, alpha=0.05)
    assert (small.p_value, small.verdict) == (None, "too small (n=9 and 9, need 10 each)")
    big = compare_proportions("success_rate", "a", "b", 45, 100, 60, 100, min_samples=10, alpha=0.05)
    assert big.verdict == "significant" and big.test == "two-proportion z"
    lat = compare_samples("latency_ms", "a", "b", [1.0] * 3, [2.0] * 40, min_samples=5, alpha=0.05)
    assert lat.verdict.startswith("too small") and lat.n_control == 3


def _rows(rows: list[dict]) -> pl.DataFrame:
    base = {"status": 200, "output_verdict": "allow", "latency_ms": 10.0, "tenant": "t", "role": "primary"}
    return pl.DataFrame([{**base, **r} for r in rows], schema=LOG_SCHEMA)


def test_ab_summary_per_arm_and_against_the_control():
    rows = [
        {"request_id": f"a{i}", "arm": "control", "model_version": "3", "latency_ms": 10.0 + i} for i in range(40)
    ] + [{"request_id": f"b{i}", "arm": "treat", "model_version": "4", "latency_ms": 30.0 + i} for i in range(40)]
    rows[0].update(status=502)
    rows[1].update(output_verdict="block")
    feedback = [{"request_id": f"b{i}", "role": "feedback", "rating": 1, "ts": None} for i in range(10)]
    feedback += [{"request_id": "b10", "role": "feedback", "rating": 1, "tenant": "someone-else"}]  # not theirs
    feedback += [{"request_id": f"a{i}", "role": "feedback", "rating": -1} for i in range(10)]
    shadow = [{"request_id": "a5", "role": "shadow", "arm": "control", "model_version": "4"}]
    unassigned = [{"request_id": "x", "arm": ""}]
    per_arm, tests = ab_summary(_rows(rows + feedback + shadow + unassigned), min_samples=10)
    control, treat = per_arm
    assert (control["arm"], control["requests"], control["versions"]) == ("control", 40, "3")
    assert control["success_rate"] == 38 / 40 and control["success_ci"] == wilson_interval(38, 40)
    assert treat["ratings"] == 10 and treat["good_rate"] == 1.0 and control["good_rate"] == 0.0
    assert treat["latency_p50_ms"] == 49.5 and control["latency_p50_ci"][0] < control["latency_p50_ms"]
    by_metric = {t.metric: t for t in tests}
    assert by_metric["latency_ms"].verdict == "significant" and by_metric["latency_ms"].arm == "treat"
    assert by_metric["good_rating_rate"].verdict == "significant"
    assert by_metric["success_rate"].verdict == "not significant"
    # the control named explicitly comes first; an arm without requests is an error naming it
    assert [a["arm"] for a in ab_summary(_rows(rows), control="treat")[0]] == ["treat", "control"]
    with pytest.raises(ValueError, match="control arm 'nope'"):
        ab_summary(_rows(rows), control="nope")
    assert ab_summary(_rows(unassigned)) == ([], [])
