"""When drift asks for retraining: one request per drift episode, never more often than the cooldown
(framework-free; the drift sensor keeps :class:`PolicyState` in its cursor, so it survives restarts).

An *episode* starts with the first drifting report after a calm one and lasts while reports keep drifting.
The first drifting report of an episode requests a run (its run key names the report's partition), unless
the last request is younger than ``cooldown_s``: then the episode is recorded as suppressed and asks nothing.

Reports are read by their verdict (``assets.monitoring.drift.drift_verdict``): ``"drift"`` is drifting,
``"no drift"`` is calm, ``"no verdict"`` (no column could be tested: too little traffic, no reference) says
nothing and leaves the episode as it was. A drifting report over fewer than ``min_requests`` requests is not
enough to retrain on (a handful of requests is one client, not the traffic): it neither starts nor ends an
episode.
"""

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DriftReport:
    storage_id: int
    partition: str
    drift_share: float
    drifting: bool
    verdict: str | None = None  # "drift" / "no drift" / "no verdict"; None: from ``drifting``
    requests: int | None = None  # requests in the reported hour; None: unknown (never too few)


@dataclass
class PolicyState:
    last_storage_id: int = 0
    in_episode: bool = False
    episode_start: str | None = None
    last_request_ts: float | None = None
    last_run_key: str | None = None

    def to_cursor(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_cursor(cls, cursor: str | None) -> "PolicyState":
        return cls(**json.loads(cursor)) if cursor else cls()


@dataclass(frozen=True)
class Decision:
    state: PolicyState
    run_key: str | None  # a run to request, or None
    report: DriftReport | None  # the report that asked for it
    reason: str


def decide(
    state: PolicyState, reports: list[DriftReport], now: float, cooldown_s: float, min_requests: int = 0
) -> Decision:
    """Fold new reports (ascending storage id) into the state; at most one run request comes out."""
    state = PolicyState(**asdict(state))
    run_key, trigger, reason = None, None, "no new drift reports"
    for report in sorted(reports, key=lambda r: r.storage_id):
        if report.storage_id <= state.last_storage_id:
            continue
        state.last_storage_id = report.storage_id
        if report.verdict == "no verdict":
            reason = f"no drift verdict at {report.partition} (too little to test); episode state unchanged"
            continue
        if report.drifting and report.requests is not None and report.requests < min_requests:
            reason = (
                f"drift at {report.partition} over {report.requests} requests (< {min_requests}): too few to retrain on"
            )
            continue
        if not report.drifting:
            if state.in_episode:
                reason = f"drift episode from {state.episode_start} ended at {report.partition}"
            else:
                reason = f"no drift ({report.partition}: share {report.drift_share:.2f})"
            state.in_episode, state.episode_start = False, None
            continue
        if state.in_episode:
            reason = f"drift episode from {state.episode_start} continues ({report.partition}); already handled"
            continue
        state.in_episode, state.episode_start = True, report.partition
        if state.last_request_ts is not None and now - state.last_request_ts < cooldown_s:
            reason = (
                f"drift at {report.partition} (share {report.drift_share:.2f}) within the cooldown of "
                f"{cooldown_s:.0f} s after {state.last_run_key}: not retraining"
            )
            continue
        run_key = f"drift-{report.partition}"
        trigger, state.last_request_ts, state.last_run_key = report, now, run_key
        reason = f"drift at {report.partition} (share {report.drift_share:.2f}): retraining"
    return Decision(state, run_key, trigger, reason)
