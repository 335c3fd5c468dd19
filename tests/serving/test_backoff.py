"""The restart policy of engine supervisors (serving/backoff.py), without processes."""

import pytest

from crawl2serve.serving.backoff import Backoff, RestartPolicy


def test_fast_crashes_back_off_exponentially_up_to_the_cap_then_give_up():
    backoff = Backoff(
        RestartPolicy(base_delay_s=1.0, factor=2.0, max_delay_s=5.0, reset_after_s=60.0, max_fast_crashes=6)
    )
    assert [backoff.next_delay(uptime_s=3.0) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.next_delay(uptime_s=3.0) is None, "the 6th crash in a row within 60 s of starting: give up"


def test_a_long_run_forgives_the_streak():
    backoff = Backoff(
        RestartPolicy(base_delay_s=0.5, factor=3.0, max_delay_s=100.0, reset_after_s=60.0, max_fast_crashes=3)
    )
    assert [backoff.next_delay(10.0), backoff.next_delay(10.0)] == [0.5, 1.5]
    assert backoff.next_delay(uptime_s=60.0) == 0.5, "up reset_after_s (the edge): not a fast crash"
    assert backoff.fast_crashes == 0
    assert [backoff.next_delay(59.9), backoff.next_delay(59.9)] == [0.5, 1.5]
    assert backoff.next_delay(59.9) is None


def test_one_fast_crash_allowed_gives_up_at_once():
    assert Backoff(RestartPolicy(max_fast_crashes=1)).next_delay(0.0) is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(base_delay_s=-1.0), "base_delay_s"),
        (dict(base_delay_s=10.0, max_delay_s=5.0), "max_delay_s"),
        (dict(factor=0.5), "factor"),
        (dict(max_fast_crashes=0), "max_fast_crashes"),
        (dict(reset_after_s=0.0), "reset_after_s"),
    ],
)
def test_policies_that_cannot_work_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RestartPolicy(**kwargs)
