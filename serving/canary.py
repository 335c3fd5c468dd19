"""Progressive canary: one stage's window of the inference log → wait, advance, promote or roll back
(framework-free; the ``canary_rollout`` sensor in ``pipelines/sensors.py`` is thin).

A new champion enters as the canary at the first of ``stages`` (shares of routed traffic, default
1 → 5 → 10 → 25 → 50 → 100%) beside the stable version (``serving.deploy.Deployment.route``). Each evaluation
reads the stage's window: the inference-log rows of both versions since the stage began, ``route`` stable,
canary or fallback (a pinned ``crawl2serve@N`` is a client's choice, not the routed share), and :func:`decide`
compares the canary with the stable version on the same window:

=======================  ==========================================================  =====================
metric                   what (rows of one version in the window)                    breach (default)
=======================  ==========================================================  =====================
``error_rate``           ``status >= 500`` share of all rows (``rates`` of            ``>= max_error_rate``
                         ``assets.monitoring.drift``, as monitoring reads it)         (1%)
``success_rate``         ``status == 200`` share of the rows that reached an engine   ``<= min_success_rate``
                         or failed on the way (client 4xx other than 499 left out:    (99%)
                         a client that gives up on a stalling version counts)
``latency_p99_ms``       p99 of ``latency_ms`` over every row (``rates``)             ``>= p99_budget_ms``
                                                                                      (5000)
``unsafe_output_rate``   ``output_verdict`` flag or block share of the answered rows  ``>= max_unsafe_output_rate``
                                                                                      (1%)
``guardrail_block_rate`` input or output ``block`` share of all rows (``rates``'          ``>= max_block_rate``
                         ``unsafe_rate``)                                             (5%)
=======================  ==========================================================  =====================

Relative to stable: a metric fails only when the canary is past its limit *and* worse than the stable version's
value by more than ``relative_tolerance`` (25%: ``canary > stable × 1.25``, for success as the failure share
``1 − success``). The limit keeps noise from rolling back a canary that is within budget; the comparison
keeps a shared cause (a slow host, a tenant sending injection attempts to both) from being blamed on the canary.
Without stable rows in the window the limits alone decide.

The decision:

- **rollback** when a metric fails over at least ``min_requests`` canary rows, or earlier when its *bad
  count* alone already breaches the limit over ``min_requests`` rows (the stage's budget is spent whatever the
  remaining requests do: with the defaults, the 1st 5xx of 100);
- **wait** while the canary has fewer than ``min_requests`` rows in the stage, or the stage is younger than
  ``min_stage_s``;
- **advance** to the next stage (the first share above the current one) when every metric passes;
- **promote** when that next share is 100%: the canary becomes the stable version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

import polars as pl

from crawl2serve.assets.monitoring.drift import rates

DEFAULT_STAGES = (0.01, 0.05, 0.10, 0.25, 0.50, 1.0)
ROUTED = ("stable", "canary", "fallback")  # rows of the routed share; "pinned" rows are a client's choice
WAIT, ADVANCE, PROMOTE, ROLLBACK = "wait", "advance", "promote", "rollback"
EPS = 1e-9  # comparisons at a limit: 99 of 100 answered is a success rate of 0.99, not 0.99000000000000002


@dataclass(frozen=True)
class Policy:
    """Stages and thresholds of a progressive rollout (``DeployConfig.rollout`` of the serving asset writes it
    into ``routing.json``'s ``rollout``, so a running rollout keeps the policy it started with)."""

    stages: tuple[float, ...] = DEFAULT_STAGES
    min_requests: int = 100
    min_stage_s: float = 60.0
    max_error_rate: float = 0.01
    min_success_rate: float = 0.99
    p99_budget_ms: float = 5000.0
    max_unsafe_output_rate: float = 0.01
    max_block_rate: float = 0.05
    relative_tolerance: float = 0.25

    def __post_init__(self):
        stages = tuple(float(s) for s in self.stages)
        if not stages or any(not 0 < s <= 1 for s in stages) or list(stages) != sorted(set(stages)):
            raise ValueError(f"rollout stages must be increasing shares in (0, 1], got {list(self.stages)}")
        object.__setattr__(self, "stages", stages)
        for name in ("max_error_rate", "min_success_rate", "max_unsafe_output_rate", "max_block_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"rollout {name} must be a share in [0, 1], got {getattr(self, name)}")
        for name in ("min_requests", "min_stage_s", "p99_budget_ms", "relative_tolerance"):
            if getattr(self, name) < 0:
                raise ValueError(f"rollout {name} must be >= 0, got {getattr(self, name)}")

    def to_json(self) -> dict:
        return {**asdict(self), "stages": list(self.stages)}

    @classmethod
    def from_json(cls, data: dict) -> Policy:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "stages" in known:
            known["stages"] = tuple(known["stages"])
        return cls(**known)

    def stage_of(self, share: float) -> int:
        """The 1-based stage whose share ``share`` is (0: not one of the stages)."""
        return next((i + 1 for i, s in enumerate(self.stages) if abs(s - share) < 1e-9), 0)

    def next_share(self, share: float) -> float:
        """The first stage above ``share`` (1.0 past the last)."""
        return next((s for s in self.stages if s > share + 1e-9), 1.0)


@dataclass(frozen=True)
class VersionStats:
    """One version's rows in a window: counts, and the metrics of the module docstring (None without rows)."""

    requests: int = 0  # rows routed to the version
    attempted: int = 0  # rows that reached an engine or failed on the way (client 4xx other than 499 left out)
    answered: int = 0  # status 200
    errors: int = 0  # status >= 500
    unsafe_outputs: int = 0  # answered, output_verdict flag or block
    blocked: int = 0  # input or output verdict block
    latency_p99_ms: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def success_rate(self) -> float | None:
        return self.answered / self.attempted if self.attempted else None

    @property
    def unsafe_output_rate(self) -> float | None:
        return self.unsafe_outputs / self.answered if self.answered else None

    @property
    def guardrail_block_rate(self) -> float | None:
        return self.blocked / self.requests if self.requests else None


def version_stats(rows: pl.DataFrame) -> VersionStats:
    """:class:`VersionStats` of one version's rows (typed as ``assets.monitoring.logs.LOG_SCHEMA``)."""
    if rows.height == 0:
        return VersionStats()
    base = rates(rows)  # requests, error_rate, unsafe_rate (a block on either side), latency percentiles
    status = pl.col("status")
    counts = rows.select(
        ((status < 400) | (status >= 500) | (status == 499)).sum().alias("attempted"),
        (status == 200).sum().alias("answered"),
        ((status == 200) & pl.col("output_verdict").is_in(["flag", "block"])).sum().alias("unsafe_outputs"),
    ).row(0, named=True)
    n = int(base["requests"])
    return VersionStats(
        requests=n,
        attempted=int(counts["attempted"]),
        answered=int(counts["answered"]),
        errors=round(base["error_rate"] * n),
        unsafe_outputs=int(counts["unsafe_outputs"]),
        blocked=round(base["unsafe_rate"] * n),
        latency_p99_ms=base["latency_p99_ms"],
    )


def window(log: pl.DataFrame, since: datetime, versions: list[str]) -> dict[str, VersionStats]:
    """version -> :class:`VersionStats` of the routed rows (``route`` in :data:`ROUTED`) that arrived at or
    after ``since`` (timezone-aware)."""
    if since.tzinfo is None:
        raise ValueError("canary window: since must be timezone-aware")
    rows = log.filter((pl.col("ts") >= since) & pl.col("route").is_in(ROUTED))
    return {v: version_stats(rows.filter(pl.col("model_version") == v)) for v in versions}


@dataclass(frozen=True)
class Check:
    """One metric of the canary against its limit and the stable version's value."""

    metric: str
    canary: float | None
    stable: float | None
    limit: float
    failed: bool
    note: str


@dataclass(frozen=True)
class Decision:
    verdict: str  # wait | advance | promote | rollback
    reason: str
    share: float  # the canary's share now
    next_share: float  # its share after the decision (0 after a rollback)
    checks: tuple[Check, ...] = field(default_factory=tuple)


# metric -> (policy limit, higher is worse, VersionStats figure, its bad count and denominator for early rollback)
_METRICS = {
    "error_rate": ("max_error_rate", True, "errors", "requests"),
    "success_rate": ("min_success_rate", False, None, "attempted"),
    "latency_p99_ms": ("p99_budget_ms", True, None, None),
    "unsafe_output_rate": ("max_unsafe_output_rate", True, "unsafe_outputs", "answered"),
    "guardrail_block_rate": ("max_block_rate", True, "blocked", "requests"),
}


def _value(stats: VersionStats, metric: str, floor: int = 0) -> float | None:
    """The metric of ``stats``; with ``floor``, a rate over at least ``floor`` rows (a lower bound of what it
    will be once ``floor`` rows are in: the best case for the canary)."""
    if metric == "latency_p99_ms":
        return stats.latency_p99_ms
    if metric == "success_rate":
        failed = stats.attempted - stats.answered
        n = max(stats.attempted, floor)
        return 1 - failed / n if n else None
    _, _, bad, total = _METRICS[metric]
    n = max(getattr(stats, total), floor)
    return getattr(stats, bad) / n if n else None


def check(policy: Policy, metric: str, canary: float | None, stable: float | None) -> Check:
    """Whether ``canary`` breaches ``metric``'s limit and is worse than ``stable`` by more than the tolerance."""
    limit_name, higher_is_worse, _, _ = _METRICS[metric]
    limit = float(getattr(policy, limit_name))
    if canary is None:
        return Check(metric, canary, stable, limit, False, "no canary value")
    # at the limit counts as past it (the seeds: error rate >= 1%, success rate <= 99%), up to float rounding
    past = canary >= limit - EPS if higher_is_worse else canary <= limit + EPS
    if not past:
        return Check(metric, canary, stable, limit, False, "within limit")
    # worse than stable: compared as "higher is worse" figures, the success rate as its failure share
    c, s = (canary, stable) if higher_is_worse else (1 - canary, None if stable is None else 1 - stable)
    if s is not None and c <= s * (1 + policy.relative_tolerance) + EPS:
        return Check(metric, canary, stable, limit, False, "past the limit, but stable is as bad")
    return Check(metric, canary, stable, limit, True, "past the limit" + ("" if s is None else ", worse than stable"))


def decide(policy: Policy, share: float, canary: VersionStats, stable: VersionStats, stage_age_s: float) -> Decision:
    """The decision on one stage's window (module docstring)."""
    enough = canary.attempted >= policy.min_requests and canary.requests >= policy.min_requests
    floor = 0 if enough else policy.min_requests
    checks = tuple(check(policy, m, _value(canary, m, floor), _value(stable, m)) for m in _METRICS)
    if not enough:  # only counts can fail early; a percentile over a few rows says little
        checks = tuple(
            c
            if c.metric != "latency_p99_ms"
            else Check(c.metric, c.canary, c.stable, c.limit, False, "too few requests")
            for c in checks
        )
    failed = [c for c in checks if c.failed]
    if failed:
        what = "; ".join(
            f"{c.metric} {_fmt(c.metric, c.canary)} (limit {_fmt(c.metric, c.limit)}, stable "
            f"{_fmt(c.metric, c.stable)})"
            for c in failed
        )
        early = "" if enough else f" after {canary.requests} of {policy.min_requests} requests"
        return Decision(ROLLBACK, f"canary fails{early}: {what}", share, 0.0, checks)
    if not enough:
        return Decision(
            WAIT, f"{canary.requests} canary requests of the {policy.min_requests} a stage needs", share, share, checks
        )
    if stage_age_s < policy.min_stage_s:
        return Decision(
            WAIT,
            f"stage is {stage_age_s:.0f} s old; a stage lasts at least {policy.min_stage_s:.0f} s",
            share,
            share,
            checks,
        )
    nxt = policy.next_share(share)
    verdict = PROMOTE if nxt >= 1.0 else ADVANCE
    return Decision(
        verdict,
        f"canary healthy over {canary.requests} requests: {share:.0%} → {nxt:.0%}",
        share,
        nxt,
        checks,
    )


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f} ms" if metric == "latency_p99_ms" else f"{value:.2%}"
