"""Circuit breaker state machine and retry policy (backoff, jitter, async retries)."""

import asyncio

import pytest

from crawl2serve.serving.gateway.breaker import CircuitBreaker, RetryPolicy


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(threshold=3, reset=10.0, half_open=1):
    clock = FakeClock()
    changes: list[tuple[str, str, str]] = []
    b = CircuitBreaker(
        "engine-a", failure_threshold=threshold, reset_timeout_s=reset, half_open_max_calls=half_open, clock=clock
    )
    b.on_change(lambda *c: changes.append(c))
    return b, clock, changes


def test_starts_closed_and_allows():
    b, _, changes = make()
    assert b.state == "closed"
    assert all(b.allow() for _ in range(100))
    assert changes == []


def test_opens_after_consecutive_failures_only():
    b, _, changes = make(threshold=3)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the streak
    b.record_failure()
    b.record_failure()
    assert b.state == "closed" and b.consecutive_failures == 2
    b.record_failure()
    assert b.state == "open"
    assert not b.allow()
    assert changes == [("engine-a", "closed", "open")]


def test_half_open_after_reset_timeout():
    b, clock, changes = make(threshold=1, reset=10.0)
    b.record_failure()
    clock.t += 9.99
    assert not b.allow()
    assert b.state == "open"
    clock.t += 0.01
    assert b.allow()  # the trial call
    assert b.state == "half_open"
    assert not b.allow()  # only one trial at a time
    assert changes == [("engine-a", "closed", "open"), ("engine-a", "open", "half_open")]


def test_success_in_half_open_closes():
    b, clock, changes = make(threshold=1)
    b.record_failure()
    clock.t += 10
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.consecutive_failures == 0
    assert all(b.allow() for _ in range(10))
    assert changes[-1] == ("engine-a", "half_open", "closed")


def test_failure_in_half_open_reopens_for_a_full_timeout():
    b, clock, changes = make(threshold=5, reset=10.0)
    for _ in range(5):
        b.record_failure()
    clock.t += 10
    assert b.allow()
    b.record_failure()  # one failure suffices in half_open
    assert b.state == "open"
    assert changes[-1] == ("engine-a", "half_open", "open")
    clock.t += 9
    assert not b.allow()
    clock.t += 1
    assert b.allow()


def test_half_open_max_calls():
    b, clock, _ = make(threshold=1, half_open=3)
    b.record_failure()
    clock.t += 10
    assert [b.allow() for _ in range(5)] == [True, True, True, False, False]


def test_lost_trial_does_not_wedge_the_breaker():
    """A trial call that never reports back frees its slot after another reset timeout."""
    b, clock, _ = make(threshold=1, reset=10.0)
    b.record_failure()
    clock.t += 10
    assert b.allow()
    clock.t += 5
    assert not b.allow()
    clock.t += 5
    assert b.allow()
    assert b.state == "half_open"


def test_late_results_while_open_change_nothing():
    b, clock, changes = make(threshold=1)
    b.record_failure()
    b.record_success()  # a call let through before the breaker opened
    b.record_failure()
    assert b.state == "open"
    assert changes == [("engine-a", "closed", "open")]


def test_callback_errors_do_not_break_the_breaker(caplog):
    b, _, changes = make(threshold=1)

    @b.on_change
    def bad(name, old, new):
        raise RuntimeError("gauge exploded")

    b.record_failure()
    assert b.state == "open"
    assert changes == [("engine-a", "closed", "open")]  # the other callback still ran
    assert "gauge exploded" in caplog.text


def test_invalid_breaker_config():
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ValueError, match="half_open_max_calls"):
        CircuitBreaker("x", half_open_max_calls=0)
    with pytest.raises(ValueError, match="reset_timeout_s"):
        CircuitBreaker("x", reset_timeout_s=-1)


# -- RetryPolicy ------------------------------------------------------------------------------------


def test_delay_exponential_and_capped_without_jitter():
    p = RetryPolicy(attempts=10, base_delay_s=0.1, max_delay_s=1.0, jitter=0.0)
    assert [p.delay(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert p.delay(10_000) == 1.0  # no overflow for absurd attempt numbers


def test_delay_jitter_bounds():
    p = RetryPolicy(base_delay_s=0.1, max_delay_s=2.0, jitter=0.2)
    assert p.delay(1, rng=lambda: 0.0) == pytest.approx(0.1)
    assert p.delay(1, rng=lambda: 1.0) == pytest.approx(0.08)
    assert p.delay(3, rng=lambda: 0.5) == pytest.approx(0.4 * 0.9)
    for n in range(1, 10):
        for _ in range(50):
            d = p.delay(n)
            cap = min(2.0, 0.1 * 2 ** (n - 1))
            assert 0.8 * cap <= d <= cap


def test_delay_rejects_attempt_zero():
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().delay(0)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"attempts": 0}, "attempts"),
        ({"base_delay_s": -1}, "delays"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_invalid_policy(kwargs, word):
    with pytest.raises(ValueError, match=word):
        RetryPolicy(**kwargs)


class Flaky:
    """An async callable that raises the given exceptions in order, then returns "ok"."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Sleeps:
    def __init__(self):
        self.delays: list[float] = []

    async def __call__(self, s: float) -> None:
        self.delays.append(s)


def test_run_retries_until_success():
    fn, sleep = Flaky(ConnectionError("a"), TimeoutError("b")), Sleeps()
    policy = RetryPolicy(attempts=3, base_delay_s=0.1, jitter=0.0)
    assert asyncio.run(policy.run(fn, retry_on=(ConnectionError, TimeoutError), sleep=sleep)) == "ok"
    assert fn.calls == 3
    assert sleep.delays == pytest.approx([0.1, 0.2])


def test_run_gives_up_after_attempts_and_raises_last_error():
    fn, sleep = Flaky(ConnectionError("1"), ConnectionError("2"), ConnectionError("3")), Sleeps()
    with pytest.raises(ConnectionError, match="3"):
        asyncio.run(RetryPolicy(attempts=3).run(fn, retry_on=(ConnectionError,), sleep=sleep))
    assert fn.calls == 3
    assert len(sleep.delays) == 2  # no sleep after the last attempt


def test_run_does_not_retry_other_errors():
    fn, sleep = Flaky(ValueError("bad request")), Sleeps()
    with pytest.raises(ValueError):
        asyncio.run(RetryPolicy().run(fn, retry_on=(ConnectionError,), sleep=sleep))
    assert fn.calls == 1 and sleep.delays == []


def test_run_never_retries_cancellation():
    fn, sleep = Flaky(asyncio.CancelledError()), Sleeps()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(RetryPolicy().run(fn, retry_on=(BaseException,), sleep=sleep))
    assert fn.calls == 1


def test_run_single_attempt():
    fn = Flaky(ConnectionError())
    with pytest.raises(ConnectionError):
        asyncio.run(RetryPolicy(attempts=1).run(fn, retry_on=(ConnectionError,), sleep=Sleeps()))
    assert fn.calls == 1


def test_run_with_real_asyncio_sleep():
    fn = Flaky(ConnectionError())
    policy = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.01)
    assert asyncio.run(policy.run(fn, retry_on=(ConnectionError,))) == "ok"


def test_breaker_and_retry_together():
    """The gateway's loop: every failed attempt counts against the engine's breaker."""
    b, _, _ = make(threshold=2)
    fn, sleep = Flaky(ConnectionError(), ConnectionError(), ConnectionError()), Sleeps()

    async def guarded():
        if not b.allow():
            raise RuntimeError("breaker open")
        try:
            result = await fn()
        except ConnectionError:
            b.record_failure()
            raise
        b.record_success()
        return result

    with pytest.raises(RuntimeError, match="breaker open"):
        asyncio.run(RetryPolicy(attempts=3).run(guarded, retry_on=(ConnectionError,), sleep=sleep))
    assert fn.calls == 2 and b.state == "open"
