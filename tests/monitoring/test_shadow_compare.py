"""Pairing the gateway's primary and shadow rows and comparing them (assets/monitoring/shadow_compare.py)."""

import polars as pl
import pytest

from crawl2serve.assets.monitoring.logs import LOG_SCHEMA
from crawl2serve.assets.monitoring.shadow_compare import ShadowRule, compare, pairs, shadow_verdict, token_overlap


def test_token_overlap():
    assert token_overlap("a b c", "a b c") == 1.0 and token_overlap("", "") == 1.0
    assert token_overlap("a b", "c d") == 0.0 and token_overlap("a", "") == 0.0
    assert token_overlap("a b c d", "a b") == pytest.approx(2 / 3)  # precision 1, recall 1/2
    assert token_overlap("a a b", "a b b") == pytest.approx(2 / 3)  # multisets: one a and one b in common


def _frame(rows):
    return pl.DataFrame(rows, schema=LOG_SCHEMA)


def _pair(i, primary_out, shadow_out, **shadow):
    base = {"request_id": f"r{i}", "prompt": f"p{i}", "status": 200, "output_verdict": "allow"}
    return [
        {
            **base,
            "role": "primary",
            "output": primary_out,
            "latency_ms": 10.0,
            "completion_tokens": 4,
            "model_version": "1",
        },
        {
            **base,
            "role": "shadow",
            "output": shadow_out,
            "latency_ms": 30.0,
            "completion_tokens": 6,
            "model_version": "2",
            **shadow,
        },
    ]


def test_pairs_and_compare():
    rows = (
        _pair(0, "a b", "a b") + _pair(1, "a b c d", "a b") + _pair(2, "x", "", status=502, error="engine_unavailable")
    )
    rows += _pair(3, "ok", "", output_verdict="block")
    rows += [
        {"request_id": "orphan", "role": "shadow", "output": "z", "model_version": "2"}
    ]  # its primary: another hour
    rows += [{"request_id": "r9", "role": "primary", "output": "unmirrored", "model_version": "1"}]
    rows += [{"request_id": "r0", "role": "feedback", "rating": 1}]
    p = pairs(_frame(rows))
    assert p["request_id"].to_list() == ["r0", "r1", "r2", "r3"] and p["prompt"].to_list()[0] == "p0"
    s = compare(p)
    assert s["pairs"] == 4 and s["shadow_error_rate"] == 0.25
    assert s["exact_agreement"] == pytest.approx(1 / 3)  # of the 3 answered shadows
    assert s["mean_token_overlap"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert s["verdict_agreement"] == pytest.approx(2 / 3) and s["shadow_block_rate"] == pytest.approx(1 / 3)
    assert s["primary_block_rate"] == 0.0 and s["primary_latency_p50_ms"] == 10.0 and s["shadow_latency_p50_ms"] == 30.0
    assert s["shadow_mean_completion_tokens"] == 6.0 and s["primary_mean_output_chars"] == pytest.approx(13 / 4)
    assert compare(pairs(_frame([]))) == {"pairs": 0}


def test_shadow_verdict():
    rows = [r for i in range(4) for r in _pair(i, "a b", "a b")]
    s = compare(pairs(_frame(rows)))
    assert shadow_verdict(s, ShadowRule(min_pairs=5)) == ("too small", ["4 pairs < min_pairs 5"])
    assert shadow_verdict(s, ShadowRule(min_pairs=4, max_latency_ratio=3.0)) == ("pass", [])
    verdict, reasons = shadow_verdict(s, ShadowRule(min_pairs=4, max_perplexity=10.0), perplexity=12.5)
    assert verdict == "fail" and reasons == [
        "p50 latency 3.00x the champion's > 2.0",
        "perplexity on champion outputs 12.50 > 10.0",
    ]
    blocked = compare(pairs(_frame([r for i in range(4) for r in _pair(i, "a", "", output_verdict="block")])))
    assert "output block rate +1.000" in shadow_verdict(blocked, ShadowRule(min_pairs=1, max_latency_ratio=9))[1][0]
    assert "perplexity on champion outputs <= 3" in ShadowRule(max_perplexity=3).describe()
