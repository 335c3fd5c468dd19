"""Deterministic assignment: which arm of an A/B test a tenant (or a request) gets, and whether a request
is mirrored to the shadow (framework-free).

A unit (a tenant name, or a request id) hashes to a point in [0, 1): the first 8 bytes of
``sha256("<experiment>:<unit>")`` over 2**64. Arms own consecutive slices of [0, 1) in their configured order,
each as wide as its weight's share, so a unit keeps its arm for as long as the arms and weights stay the same,
in every gateway process and replica, with no state to share. Salting with the experiment's name makes two
experiments' assignments independent.
"""

import hashlib
from dataclasses import dataclass


def unit_fraction(salt: str, unit: str) -> float:
    """The unit's point in [0, 1), the same on every machine."""
    digest = hashlib.sha256(f"{salt}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Arm:
    name: str
    version: str
    weight: float


class Experiment:
    """An A/B test: ``arms`` in order (the first is the control), ``unit`` ``"tenant"`` or ``"request"``."""

    def __init__(self, name: str, unit: str, arms: list[Arm]):
        if len(arms) < 2:
            raise ValueError(f"experiment {name!r}: arms must name at least 2 arms, got {len(arms)}")
        if unit not in ("tenant", "request"):
            raise ValueError(f"experiment {name!r}: unit must be 'tenant' or 'request', got {unit!r}")
        bad = [a.name for a in arms if not a.weight > 0]
        if bad:
            raise ValueError(f"experiment {name!r}: arm {bad[0]!r} has weight <= 0")
        self.name, self.unit, self.arms = name, unit, arms
        total = sum(a.weight for a in arms)
        edges, acc = [], 0.0
        for arm in arms:
            acc += arm.weight / total
            edges.append(acc)
        edges[-1] = 1.0
        self._edges = edges

    @classmethod
    def from_settings(cls, settings) -> "Experiment":
        """From :class:`~serving.gateway.settings.ExperimentSettings`."""
        arms = [Arm(name, a.version, a.weight) for name, a in settings.arms.items()]
        return cls(settings.name, settings.unit, arms)

    def assign(self, unit: str) -> Arm:
        point = unit_fraction(self.name, unit)
        for arm, edge in zip(self.arms, self._edges):
            if point < edge:
                return arm
        return self.arms[-1]
