"""When to restart a dead engine: exponential backoff, capped, forgiven after a long run, given up after a
streak of fast crashes (framework-free; :mod:`serving.supervisor` applies it)."""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RestartPolicy:
    """``base_delay_s * factor**(n-1)`` seconds before the n-th restart of a streak, at most ``max_delay_s``.

    A run shorter than ``reset_after_s`` is a fast crash and extends the streak; a longer one ends it (the next
    restart waits ``base_delay_s`` again). The ``max_fast_crashes``-th fast crash in a row is not restarted:
    an engine that cannot stay up needs a person, not a loop.
    """

    base_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 60.0
    reset_after_s: float = 120.0
    max_fast_crashes: int = 5

    def __post_init__(self):
        if self.base_delay_s < 0 or self.factor < 1 or self.max_delay_s < self.base_delay_s:
            raise ValueError(f"restart policy {self}: need 0 <= base_delay_s <= max_delay_s and factor >= 1")
        if self.max_fast_crashes < 1 or self.reset_after_s <= 0:
            raise ValueError(f"restart policy {self}: need max_fast_crashes >= 1 and reset_after_s > 0")

    def to_json(self) -> dict:
        return asdict(self)


class Backoff:
    """The streak of one engine: ``next_delay(uptime)`` after each exit gives the seconds to wait before
    restarting it, or None to give up."""

    def __init__(self, policy: RestartPolicy):
        self.policy = policy
        self.fast_crashes = 0

    def next_delay(self, uptime_s: float) -> float | None:
        p = self.policy
        if uptime_s >= p.reset_after_s:
            self.fast_crashes = 0
            return p.base_delay_s
        self.fast_crashes += 1
        if self.fast_crashes >= p.max_fast_crashes:
            return None
        return min(p.max_delay_s, p.base_delay_s * p.factor ** (self.fast_crashes - 1))
