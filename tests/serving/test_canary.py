"""The progressive canary's decision (serving.canary), framework-free: window stats → wait, advance, promote,
roll back."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from crawl2serve.assets.monitoring.logs import LOG_SCHEMA
from crawl2serve.serving.canary import ADVANCE, PROMOTE, ROLLBACK, WAIT, Policy, VersionStats, decide, window
from crawl2serve.serving.gateway.logrow import LogRow
from crawl2serve.serving.gateway.routing import read_routing

POLICY = Policy(min_requests=100, min_stage_s=60)
T0 = datetime(2026, 12, 1, 15, tzinfo=UTC)


def healthy(n: int, p99: float = 300.0, **counts) -> VersionStats:
    values = {"requests": n, "attempted": n, "answered": n, "latency_p99_ms": p99, **counts}
    return VersionStats(**values)


def failed(decision) -> dict[str, str]:
    return {c.metric: c.note for c in decision.checks if c.failed}


def test_too_few_canary_requests_wait_whatever_the_stage_age():
    d = decide(POLICY, 0.01, healthy(99), healthy(9_000), stage_age_s=3600)
    assert (d.verdict, d.next_share) == (WAIT, 0.01)
    assert "99 canary requests of the 100" in d.reason


def test_a_young_stage_waits_then_a_healthy_one_advances_to_the_next_share_and_the_last_promotes():
    assert decide(POLICY, 0.05, healthy(150), healthy(3_000), stage_age_s=10).verdict == WAIT
    d = decide(POLICY, 0.05, healthy(150), healthy(3_000), stage_age_s=61)
    assert (d.verdict, d.share, d.next_share) == (ADVANCE, 0.05, 0.10) and not failed(d)
    assert decide(POLICY, 0.50, healthy(150), healthy(150), stage_age_s=61).verdict == PROMOTE
    two = Policy(stages=(0.2, 0.6), min_requests=1, min_stage_s=0)  # a last stage under 100% implies it
    assert [two.next_share(s) for s in (0.2, 0.6)] == [0.6, 1.0]
    assert [two.stage_of(s) for s in (0.2, 0.6, 0.3)] == [1, 2, 0]
    assert decide(two, 0.6, healthy(5), healthy(5), 0).verdict == PROMOTE


@pytest.mark.parametrize(
    ("canary", "metric"),
    [
        (healthy(100, errors=1), "error_rate"),  # 1% is the limit: at it rolls back (seed: >= 1%)
        (healthy(200, answered=198), "success_rate"),  # 99% answered (two clients gave up): <= 99%
        (healthy(100, answered=99), "success_rate"),  # exactly 0.99, whatever float rounding makes of 1 - 1/100
        (healthy(200, p99=5000.0), "latency_p99_ms"),  # at the p99 budget
        (healthy(200, unsafe_outputs=2), "unsafe_output_rate"),
        (healthy(200, blocked=10), "guardrail_block_rate"),
    ],
)
def test_each_threshold_rolls_back_a_canary_worse_than_a_clean_stable(canary, metric):
    d = decide(POLICY, 0.10, canary, healthy(2_000), stage_age_s=0)  # a rollback does not wait for the stage
    assert (d.verdict, d.next_share) == (ROLLBACK, 0.0)
    assert set(failed(d)) == {metric} and metric in d.reason


def test_just_under_each_threshold_advances():
    canary = healthy(1_000, errors=9, answered=991, p99=4999.0, unsafe_outputs=9, blocked=49)
    assert decide(POLICY, 0.10, canary, healthy(2_000), stage_age_s=61).verdict == ADVANCE


def test_relative_a_canary_past_a_limit_that_stable_breaches_as_badly_advances():
    stable = healthy(2_000, errors=40, answered=1_960, p99=7000.0, blocked=160)  # 2% errors, slow host, 8% blocked
    canary = healthy(200, errors=4, answered=196, p99=7200.0, blocked=17)  # as bad, not worse by 25%
    d = decide(POLICY, 0.10, canary, stable, stage_age_s=61)
    assert d.verdict == ADVANCE
    notes = {c.metric: c.note for c in d.checks}
    assert notes["error_rate"] == notes["latency_p99_ms"] == "past the limit, but stable is as bad"
    worse = healthy(200, errors=6, answered=194, p99=7200.0, blocked=17)  # 3% > 2% x 1.25
    assert set(failed(decide(POLICY, 0.10, worse, stable, stage_age_s=61))) == {"error_rate", "success_rate"}
    strict = Policy(min_requests=100, relative_tolerance=0.0)
    # no tolerance: equal error rates still pass, a p99 of 7200 against 7000 and 8.5% blocks against 8% do not
    assert set(failed(decide(strict, 0.10, canary, stable, 61))) == {"latency_p99_ms", "guardrail_block_rate"}


def test_without_stable_rows_the_limits_alone_decide():
    assert decide(POLICY, 0.10, healthy(200, errors=2), VersionStats(), 61).verdict == ROLLBACK
    assert decide(POLICY, 0.10, healthy(200), VersionStats(), 61).verdict == ADVANCE


def test_errors_that_already_spend_the_stage_budget_roll_back_before_min_requests():
    # 1 error in 10 requests: over 100 requests it would be at least 1%, the limit
    early = decide(POLICY, 0.01, healthy(10, errors=1, answered=9), healthy(1_000), stage_age_s=5)
    assert early.verdict == ROLLBACK and "after 10 of 100 requests" in early.reason
    # no errors, but a slow p99 over 10 requests: too few to judge a percentile
    slow = decide(POLICY, 0.01, healthy(10, p99=9000.0), healthy(1_000), stage_age_s=5)
    assert slow.verdict == WAIT and {c.metric: c.note for c in slow.checks}["latency_p99_ms"] == "too few requests"


def test_policy_errors_name_the_field():
    with pytest.raises(ValueError, match="stages must be increasing shares"):
        Policy(stages=(0.5, 0.1))
    with pytest.raises(ValueError, match="stages"):
        Policy(stages=(0.0, 1.0))
    with pytest.raises(ValueError, match="max_error_rate"):
        Policy(max_error_rate=2)
    with pytest.raises(ValueError, match="min_requests"):
        Policy(min_requests=-1)
    assert Policy.from_json(Policy(stages=(0.1, 1.0)).to_json()) == Policy(stages=(0.1, 1.0))


def _frame(rows: list[LogRow]) -> pl.DataFrame:
    return pl.DataFrame([{**r.to_json(), "ts": datetime.fromisoformat(r.ts)} for r in rows], schema=LOG_SCHEMA)


def _row(i: int, version: str, route: str = "canary", **values) -> LogRow:
    ts = (T0 + timedelta(seconds=i)).isoformat()
    return LogRow(request_id=f"r{i}", ts=ts, model_version=version, route=route, latency_ms=100.0 + i, **values)


def test_window_counts_the_routed_rows_of_each_version_since_the_stage_began():
    rows = [
        _row(0, "2", status=502, error="engine_request_failed"),  # before the stage: not counted
        _row(10, "2", status=502, error="engine_request_failed"),
        _row(11, "2", output_verdict="block"),
        _row(12, "2", status=429, error="rate_limit_requests"),  # the client's: not an attempt
        _row(13, "2", status=499, error="client_disconnected"),  # the client gave up: attempted, not answered
        _row(14, "2", input_verdict="block", status=400, error="prompt_rejected"),
        _row(15, "2", route="pinned", status=500),  # a client's pin, not the routed share
        _row(16, "2", route="fallback"),
        _row(17, "1", route="stable"),
        _row(18, "1", route="stable", output_verdict="flag"),
    ]
    stats = window(_frame(rows), T0 + timedelta(seconds=5), ["2", "1"])
    canary, stable = stats["2"], stats["1"]
    assert (canary.requests, canary.attempted, canary.answered, canary.errors) == (6, 4, 2, 1)
    assert (canary.unsafe_outputs, canary.blocked) == (1, 2)
    assert canary.error_rate == pytest.approx(1 / 6) and canary.success_rate == 0.5
    assert canary.unsafe_output_rate == 0.5 and canary.guardrail_block_rate == pytest.approx(2 / 6)
    assert canary.latency_p99_ms == pytest.approx(115.9)  # rates: 114 + 0.95 x (116 - 114)
    assert (stable.requests, stable.unsafe_outputs, stable.unsafe_output_rate) == (2, 1, 0.5)
    assert window(_frame(rows), T0, ["3"])["3"] == VersionStats() and VersionStats().error_rate is None
    with pytest.raises(ValueError, match="timezone-aware"):
        window(_frame(rows), datetime(2026, 12, 1), ["2"])


def test_the_routing_table_carries_the_rollout_until_a_decision_ends_it(tmp_path, capsys):
    from crawl2serve.serving.__main__ import main
    from crawl2serve.serving.deploy import Deployment
    from crawl2serve.serving.engines import EngineHandle

    deployment = Deployment(str(tmp_path / "sglang_deployment" / "_"), log=lambda m: None)
    handle = EngineHandle("primary", "cpu", "http://127.0.0.1:1", None, [], "", "base", "1", {"1": "m1", "2": "m2"})
    deployment.route("1", [handle], 0.0)
    policy = Policy(stages=(0.1, 0.5)).to_json()
    table = deployment.route("2", [handle], 0.1, rollout=policy)
    assert (table["stable"], table["canary"], table["canary_share"], table["rollout"]["policy"]) == (
        "1",
        "2",
        0.1,
        policy,
    )
    started = table["rollout"]["stage_started"]
    assert datetime.fromisoformat(started).tzinfo is not None, "compared with the log's UTC ts"
    table = deployment.apply_decision("2", ADVANCE, 0.5, "healthy")
    assert table["canary_share"] == 0.5 and table["rollout"]["stage_started"] > started
    assert deployment.apply_decision("3", ROLLBACK, 0.0, "stale") is None, "not the canary: nothing written"
    assert deployment.apply_decision("2", WAIT, 0.5, "few requests") == table
    assert main(["rollout", "status", "--data-root", str(tmp_path)]) == 0
    assert "canary v2 at 50% (stages 10%, 50%), stable v1" in capsys.readouterr().out
    assert main(["rollout", "abort", "--data-root", str(tmp_path)]) == 0
    table = read_routing(deployment.routing_file)
    assert (table["stable"], table["canary"], table["canary_share"], table["rollout"]) == ("1", None, 0.0, None)
    assert table["last_rollout"]["verdict"] == ROLLBACK and table["last_rollout"]["reason"] == "abort by hand"
    assert main(["rollout", "abort", "--data-root", str(tmp_path)]) == 1, "no rollout left to abort"
    # a fixed canary (no rollout policy) and a share of 100% are not rollouts
    assert deployment.route("2", [handle], 0.3)["rollout"] is None
    assert deployment.route("2", [handle], 1.0)["canary"] is None
