"""Failure handling per engine: a circuit breaker (stop calling an engine that keeps failing) and a
retry policy (exponential backoff with jitter for transient errors)."""

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
StateCallback = Callable[[str, str, str], None]


class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failures; open → half_open once
    ``reset_timeout_s`` has passed; half_open lets at most ``half_open_max_calls`` trial calls through
    at a time: a success closes the breaker, a failure re-opens it.

    A trial call that never reports back (cancelled, caller bug) would wedge the breaker half-open, so
    trial slots are handed out again once ``reset_timeout_s`` has passed since the last one was granted.
    Thread-safe; state-change callbacks run outside the lock and their exceptions are logged, not raised.
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout_s: float = 10.0,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ):
        if failure_threshold < 1:
            raise ValueError(f"breaker {name!r}: failure_threshold must be >= 1, got {failure_threshold}")
        if half_open_max_calls < 1:
            raise ValueError(f"breaker {name!r}: half_open_max_calls must be >= 1, got {half_open_max_calls}")
        if reset_timeout_s < 0:
            raise ValueError(f"breaker {name!r}: reset_timeout_s must be >= 0, got {reset_timeout_s}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0
        self._last_trial_at = 0.0
        self._callbacks: list[StateCallback] = []

    @property
    def state(self) -> str:
        """ "closed", "open" or "half_open". Open turns half_open in the first ``allow()`` after the
        timeout, so the state always matches what the on_change callbacks were told."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def on_change(self, callback: StateCallback) -> StateCallback:
        """Register ``callback(name, old_state, new_state)``; returns it, so it works as a decorator."""
        self._callbacks.append(callback)
        return callback

    def allow(self) -> bool:
        """Whether a call may go to the engine now (in half_open this takes one trial slot)."""
        changes: list[tuple[str, str]] = []
        with self._lock:
            now = self._clock()
            if self._state == OPEN and now - self._opened_at >= self.reset_timeout_s:
                changes.append(self._set(HALF_OPEN))
            if self._state == CLOSED:
                allowed = True
            elif self._state == OPEN:
                allowed = False
            else:
                allowed = self._take_trial(now)
        self._notify(changes)
        return allowed

    def record_success(self) -> None:
        """A call succeeded: reset the failure count; a successful trial closes the breaker."""
        changes: list[tuple[str, str]] = []
        with self._lock:
            self._failures = 0
            if self._state == HALF_OPEN:
                changes.append(self._set(CLOSED))
        self._notify(changes)

    def abandon(self) -> None:
        """A call let through ended without telling about the engine (cancelled, or failed in our own code):
        count nothing, but give a half-open trial slot back."""
        with self._lock:
            if self._state == HALF_OPEN and self._trials > 0:
                self._trials -= 1

    def probe_succeeded(self) -> None:
        """A health probe answered: an open breaker turns half-open at once (trial calls may go), without
        waiting for ``reset_timeout_s``; other states are left to the calls themselves."""
        changes: list[tuple[str, str]] = []
        with self._lock:
            if self._state == OPEN:
                changes.append(self._set(HALF_OPEN))
        self._notify(changes)

    def record_failure(self) -> None:
        """A call failed: count it when closed (opening at the threshold); a failed trial re-opens."""
        changes: list[tuple[str, str]] = []
        with self._lock:
            if self._state == CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    changes.append(self._set(OPEN))
            elif self._state == HALF_OPEN:
                changes.append(self._set(OPEN))
            # OPEN: a late failure of a call let through before opening changes nothing.
        self._notify(changes)

    # -- internals (called with the lock held) ----------------------------------------------------
    def _take_trial(self, now: float) -> bool:
        if self._trials >= self.half_open_max_calls and now - self._last_trial_at >= self.reset_timeout_s:
            self._trials = 0  # the trials granted earlier never reported back
        if self._trials >= self.half_open_max_calls:
            return False
        self._trials += 1
        self._last_trial_at = now
        return True

    def _set(self, new: str) -> tuple[str, str]:
        old, self._state = self._state, new
        if new == OPEN:
            self._opened_at = self._clock()
        if new in (OPEN, HALF_OPEN):
            self._trials = 0
        if new == CLOSED:
            self._failures = 0
        return old, new

    def _notify(self, changes: list[tuple[str, str]]) -> None:
        for old, new in changes:
            log.info("circuit breaker %s: %s -> %s", self.name, old, new)
            for callback in list(self._callbacks):
                try:
                    callback(self.name, old, new)
                except Exception:
                    log.exception("circuit breaker %s: on_change callback failed", self.name)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a failed engine call.

    ``attempts`` counts all tries (3 = one call + two retries). The delay before retry ``n`` (1-based)
    is ``min(max_delay_s, base_delay_s * 2**(n-1))`` with up to ``jitter`` of it shaved off at random,
    so replicas retrying together spread out and the cap is never exceeded.
    """

    attempts: int = 3
    base_delay_s: float = 0.1
    max_delay_s: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError(f"delays must be >= 0, got base={self.base_delay_s}, max={self.max_delay_s}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``attempt`` (1 = the first retry)."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        capped = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(attempt - 1, 64))
        return capped * (1.0 - self.jitter * rng())

    async def run(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        retry_on: tuple[type[BaseException], ...],
        give_up_on: tuple[type[BaseException], ...] = (),
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> T:
        """Await ``fn()`` up to ``attempts`` times, retrying only on ``retry_on`` exceptions (but never on
        ``give_up_on`` ones, which propagate at once); the last failure propagates. Cancellation is never retried."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await fn()
            except asyncio.CancelledError:
                raise
            except give_up_on:
                raise
            except retry_on as e:
                if attempt == self.attempts:
                    raise
                wait = self.delay(attempt, rng)
                log.debug("retry %d/%d in %.3fs after %r", attempt, self.attempts - 1, wait, e)
                await sleep(wait)
        raise AssertionError("unreachable")  # the loop either returns or raises
