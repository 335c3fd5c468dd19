"""The retraining policy: one run per drift episode, with a cooldown, from any sequence of reports."""

from crawl2serve.assets.monitoring.retrain_policy import DriftReport, PolicyState, decide


def r(i, drifting, share=None):
    return DriftReport(
        i, f"2026-11-23-{i:02d}:00", share if share is not None else (0.8 if drifting else 0.1), drifting
    )


def test_calm_traffic_requests_nothing():
    d = decide(PolicyState(), [r(1, False), r(2, False)], now=1000, cooldown_s=3600)
    assert d.run_key is None and d.state.last_storage_id == 2 and not d.state.in_episode


def test_one_episode_one_run_even_over_several_evaluations():
    d = decide(PolicyState(), [r(1, False), r(2, True), r(3, True)], now=1000, cooldown_s=3600)
    assert d.run_key == "drift-2026-11-23-02:00" and d.report.storage_id == 2
    again = decide(d.state, [r(4, True)], now=1100, cooldown_s=3600)
    assert again.run_key is None and "continues" in again.reason
    assert decide(again.state, [], now=1200, cooldown_s=3600).run_key is None


def test_a_new_episode_inside_the_cooldown_is_suppressed_after_it_runs():
    first = decide(PolicyState(), [r(1, True)], now=0, cooldown_s=3600)
    calm = decide(first.state, [r(2, False)], now=100, cooldown_s=3600)
    suppressed = decide(calm.state, [r(3, True)], now=200, cooldown_s=3600)
    assert suppressed.run_key is None and "cooldown" in suppressed.reason
    later = decide(
        decide(suppressed.state, [r(4, False)], now=300, cooldown_s=3600).state, [r(5, True)], now=5000, cooldown_s=3600
    )
    assert later.run_key == "drift-2026-11-23-05:00"


def test_state_round_trips_through_the_cursor_and_old_reports_are_ignored():
    d = decide(PolicyState(), [r(7, True)], now=10, cooldown_s=60)
    restored = PolicyState.from_cursor(d.state.to_cursor())
    assert restored == d.state
    assert decide(restored, [r(5, True), r(7, True)], now=10_000, cooldown_s=60).run_key is None


def v(i, verdict, requests=200):
    return DriftReport(
        i, f"2026-11-23-{i:02d}:00", 0.2 if verdict == "drift" else 0.0, verdict == "drift", verdict, requests
    )


def test_no_verdict_hours_neither_start_nor_end_an_episode():
    d = decide(PolicyState(), [v(1, "no verdict"), v(2, "drift")], now=0, cooldown_s=3600)
    assert d.run_key == "drift-2026-11-23-02:00"
    quiet = decide(d.state, [v(3, "no verdict")], now=10, cooldown_s=0)
    assert quiet.state.in_episode and "no drift verdict" in quiet.reason
    assert decide(quiet.state, [v(4, "drift")], now=20, cooldown_s=0).run_key is None  # the same episode
    ended = decide(quiet.state, [v(4, "no drift"), v(5, "drift")], now=20, cooldown_s=0)
    assert ended.run_key == "drift-2026-11-23-05:00"


def test_drift_over_too_few_requests_is_not_retrained_on():
    d = decide(PolicyState(), [v(1, "drift", requests=6)], now=0, cooldown_s=0, min_requests=50)
    assert d.run_key is None and not d.state.in_episode and "too few" in d.reason
    assert decide(d.state, [v(2, "drift", requests=120)], now=1, cooldown_s=0, min_requests=50).run_key
