"""Sensors (all start STOPPED; switch them on in the UI or with ``dagster sensor start``; the daemon of
``dagster dev`` ticks them).

- ``drift_retraining``: new ``drift_report`` materializations → at most one ``retrain`` run per drift episode,
  with a cooldown, on the report's verdict ("no verdict" hours and drift over fewer than
  ``CRAWL2SERVE_RETRAIN_MIN_REQUESTS`` requests change nothing; ``assets.monitoring.retrain_policy``); the
  policy's state is the sensor's cursor.
- ``new_champion``: the registry's champion differs from what is served → a ``serve_champion`` run.
- ``canary_rollout``: a progressive rollout in ``routing.json`` → its stage's window of the inference log judged
  by ``serving.canary.decide``: wait, advance the canary's share, promote it, or roll it back (routing back to
  the stable version and the registry's ``champion`` alias back to it); every decision an observation on
  ``sglang_deployment`` with the figures that drove it; a promotion requests a ``serve_champion`` run (the
  LoRA-free SGLang engine takes the promoted weights).
- ``run_failure_alerts``: every failed run → an alert (log, ``{data_root}/alerts/alerts.jsonl``, an observation
  on the failed run's assets, and a webhook POST when ``CRAWL2SERVE_ALERT_WEBHOOK`` is set).
"""

import os
import time
from datetime import UTC, datetime

import dagster as dg

from crawl2serve.assets.metadata import readable
from crawl2serve.assets.metadata import table as typed_table
from crawl2serve.assets.monitoring.logs import read_spool
from crawl2serve.assets.monitoring.retrain_policy import DriftReport, PolicyState, decide
from crawl2serve.assets.release.registry import champion_version, rollback
from crawl2serve.pipelines.jobs import retrain_job, serve_champion_job
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.storage import DataRoot
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.serving.alerts import WEBHOOK_VAR, append_alert, post_webhook
from crawl2serve.serving.canary import PROMOTE, ROLLBACK, Decision, Policy, VersionStats, window
from crawl2serve.serving.canary import decide as decide_stage
from crawl2serve.serving.gateway.hours import hour_dirs, hour_of
from crawl2serve.serving.gateway.routing import read_routing

RETRAIN_COOLDOWN_S = float(os.environ.get("CRAWL2SERVE_RETRAIN_COOLDOWN_S", 6 * 3600))
RETRAIN_MIN_REQUESTS = int(os.environ.get("CRAWL2SERVE_RETRAIN_MIN_REQUESTS", "50"))


def _drift_reports(instance: dg.DagsterInstance, after_storage_id: int) -> list[DriftReport]:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("drift_report"), after_storage_id=after_storage_id or None),
        limit=500,
        ascending=True,
    )
    reports = []
    for record in result.records:
        mat = record.asset_materialization
        meta = mat.metadata if mat else {}
        share = meta.get("drift_share")
        drifting = meta.get("dataset_drift")
        verdict = meta.get("verdict")
        requests = meta.get("requests")
        if verdict is not None:
            verdict = str(verdict.value)
        elif meta.get("too_few_requests") is not None:  # a report from before verdicts were recorded
            verdict = "no verdict"
        reports.append(
            DriftReport(
                record.storage_id,
                mat.partition or "",
                float(share.value) if share else 0.0,
                bool(drifting.value) if drifting is not None else False,
                verdict,
                int(requests.value) if requests is not None else None,
            )
        )
    return reports


def _latest_crawl_partition(instance: dg.DagsterInstance) -> str | None:
    event = instance.get_latest_materialization_event(dg.AssetKey("raw_crawl"))
    return event.asset_materialization.partition if event and event.asset_materialization else None


# Sensors, not automation conditions: drift -> retraining keeps a policy state (drift episodes, a cooldown, a
# minimum of requests) across evaluations in its cursor and requests a job over a crawl partition of another
# partitions definition; new_champion watches the MLflow registry, which is outside Dagster's asset graph.
# (The Feast assets, which just follow their upstream, are declarative: AutomationCondition.eager().)
@dg.sensor(
    job=retrain_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Retrain when the drift report's verdict is drift: one run per drift episode, "
    f"at most one per CRAWL2SERVE_RETRAIN_COOLDOWN_S ({RETRAIN_COOLDOWN_S:.0f} s), only on an hour of at "
    f"least CRAWL2SERVE_RETRAIN_MIN_REQUESTS ({RETRAIN_MIN_REQUESTS}) requests",
)
def drift_retraining(context: dg.SensorEvaluationContext):
    state = PolicyState.from_cursor(context.cursor)
    decision = decide(
        state,
        _drift_reports(context.instance, state.last_storage_id),
        now=time.time(),
        cooldown_s=RETRAIN_COOLDOWN_S,
        min_requests=RETRAIN_MIN_REQUESTS,
    )
    context.update_cursor(decision.state.to_cursor())
    if decision.run_key is None:
        return dg.SkipReason(decision.reason)
    partition = _latest_crawl_partition(context.instance)
    if partition is None:
        return dg.SkipReason(f"{decision.reason}, but no crawl partition exists yet to retrain on")
    context.log.info(decision.reason)
    return dg.RunRequest(
        run_key=decision.run_key,
        partition_key=partition,
        tags={
            "crawl2serve/trigger": "drift",
            "crawl2serve/drift_partition": decision.report.partition,
            "crawl2serve/drift_share": f"{decision.report.drift_share:.3f}",
        },
    )


@dg.sensor(
    job=serve_champion_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Serve the new champion when the registry's champion alias moves (promotion or rollback)",
)
def new_champion(context: dg.SensorEvaluationContext, mlflow_tracking: MlflowTracking, serving_engine: ServingEngine):
    champion = champion_version(mlflow_tracking.client().MlflowClient())
    if champion is None:
        return dg.SkipReason("no champion in the registry yet")
    version = str(champion.version)
    routing = read_routing(f"{serving_engine.state_dir()}/routing.json") or {}
    if routing.get("stable") == version:
        context.update_cursor(version)
        return dg.SkipReason(f"champion v{version} is already served")
    if routing.get("canary") == version:
        return dg.SkipReason(f"champion v{version} is the canary of the rollout in progress")
    last = routing.get("last_rollout") or {}
    if last.get("version") == version and last.get("verdict") == ROLLBACK:
        return dg.SkipReason(
            f"champion v{version} was rolled back by the canary ({last.get('reason')}); its alias did not move "
            "back: set the champion alias by hand (or run rollback_model)"
        )
    if context.cursor == version:
        return dg.SkipReason(f"a serve_champion run for v{version} was already requested")
    context.update_cursor(version)
    return dg.RunRequest(
        run_key=f"champion-{version}-{routing.get('stable', 'none')}",
        tags={"crawl2serve/trigger": "new_champion", "crawl2serve/champion": version},
    )


SERVING_ASSET = dg.AssetKey("sglang_deployment")


# A sensor, not an automation condition: the decision reads the inference log (files outside Dagster's asset
# graph), runs on a clock whether or not anything materialized, and acts outside Dagster (routing.json and the
# MLflow alias) in a fraction of a second; a run per evaluation would add a run's start-up to every stage.
@dg.sensor(
    job=serve_champion_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Progressive canary: judge the rollout stage's window of the inference log (errors, success, p99 "
    "latency, unsafe outputs, guardrail blocks against the stable version) and advance the canary's share, "
    "promote it, or roll it back (routing and the registry's champion alias); each decision an observation "
    "on sglang_deployment",
)
def canary_rollout(context: dg.SensorEvaluationContext, mlflow_tracking: MlflowTracking, serving_engine: ServingEngine):
    deployment = serving_engine.deployment(log=context.log.info)
    table = read_routing(deployment.routing_file) or {}
    rollout, canary, stable = table.get("rollout"), table.get("canary"), table.get("stable")
    if not (rollout and canary):
        return dg.SkipReason("no progressive rollout in progress")
    policy = Policy.from_json(rollout["policy"])
    since = datetime.fromisoformat(rollout["stage_started"])
    spool = serving_engine.gateway_settings().log_dir
    log_rows, _ = read_spool(spool, [h for h in hour_dirs(spool) if h >= hour_of(since)])
    stats = window(log_rows, since, [canary, stable])
    age_s = (datetime.now(UTC) - since).total_seconds()
    decision = decide_stage(policy, float(table["canary_share"]), stats[canary], stats[stable], age_s)
    if deployment.apply_decision(canary, decision.verdict, decision.next_share, decision.reason) is None:
        return dg.SkipReason(f"v{canary} is no longer the canary: the decision ({decision.verdict}) is stale")
    alias = _rollback_alias(mlflow_tracking, canary) if decision.verdict == ROLLBACK else ""
    metadata = decision_metadata(decision, canary, stable, stats[canary], stats[stable], age_s, alias)
    metadata.update(stage=policy.stage_of(decision.share), stages=", ".join(f"{s:.0%}" for s in policy.stages))
    message = f"canary v{canary} vs stable v{stable}: {decision.verdict}: {decision.reason}" + (
        f"; alias: {alias}" if alias else ""
    )
    (context.log.warning if decision.verdict == ROLLBACK else context.log.info)(message)
    observation = dg.AssetObservation(asset_key=SERVING_ASSET, metadata=metadata, description=message)
    if decision.verdict != PROMOTE:  # no run to request: the tick's text in the UI is the decision
        return dg.SensorResult(asset_events=[observation], skip_reason=message)
    # the promoted version is served already (by the engines that served the canary); a serve_champion run moves
    # it onto the LoRA-free champion engine where there is one (SGLang's champion_engine_port)
    return dg.SensorResult(
        asset_events=[observation],
        run_requests=[
            dg.RunRequest(
                run_key=f"canary-promoted-{canary}-{rollout['started']}",
                tags={"crawl2serve/trigger": "canary_promoted", "crawl2serve/champion": canary},
            )
        ],
    )


def _rollback_alias(mlflow_tracking: MlflowTracking, canary: str) -> str:
    """Move the registry's ``champion`` back from the rolled-back canary (``registry.rollback``); left alone when
    another version holds it by now. Says what it did (a registry error is reported, not raised: routing is
    already back on the stable version, and ``new_champion`` will not serve the rolled-back version again)."""
    try:
        client = mlflow_tracking.client().MlflowClient()
        champion = champion_version(client)
        if champion is None or str(champion.version) != canary:
            return f"champion is {'unset' if champion is None else 'v' + str(champion.version)}, not the canary: left"
        before, after = rollback(client)
        return f"champion v{before} -> v{after}"
    except Exception as exc:  # the routing rollback stands; the operator moves the alias
        return f"moving the champion alias failed: {exc}"


def decision_metadata(
    decision: Decision,
    canary: str,
    stable: str,
    canary_stats: VersionStats,
    stable_stats: VersionStats,
    stage_age_s: float,
    alias: str,
) -> dict:
    """What the observation shows in the UI: the verdict, the shares, and per version the counts and metrics."""
    per_version = [
        (
            role,
            version,
            s.requests,
            s.errors,
            readable(s.error_rate),
            readable(s.success_rate),
            readable(s.latency_p99_ms),
            readable(s.unsafe_output_rate),
            readable(s.guardrail_block_rate),
        )
        for role, version, s in (("canary", canary, canary_stats), ("stable", stable, stable_stats))
    ]
    return {
        "verdict": decision.verdict,
        "reason": decision.reason,
        "canary": canary,
        "stable": stable,
        "share": decision.share,
        "next_share": decision.next_share,
        "stage_age_s": round(stage_age_s, 1),
        "canary_requests": canary_stats.requests,
        "stable_requests": stable_stats.requests,
        "canary_error_rate": readable(canary_stats.error_rate),
        "canary_p99_ms": readable(canary_stats.latency_p99_ms),
        "alias": alias,
        "versions": typed_table(
            (
                "role",
                "version",
                "requests",
                "errors",
                "error_rate",
                "success_rate",
                "latency_p99_ms",
                "unsafe_output_rate",
                "guardrail_block_rate",
            ),
            per_version,
        ),
        "checks": typed_table(
            ("metric", "canary", "stable", "limit", "failed", "note"),
            [(c.metric, readable(c.canary), readable(c.stable), c.limit, c.failed, c.note) for c in decision.checks],
        ),
    }


def _unmaterialized_assets(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetKey]:
    """Assets the run planned to materialize and did not: where the failure shows in the asset catalog."""

    def keys(event_type):
        return {
            e.dagster_event.asset_key
            for e in instance.all_logs(run_id, of_type=event_type)
            if e.dagster_event and e.dagster_event.asset_key
        }

    return sorted(
        keys(dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED) - keys(dg.DagsterEventType.ASSET_MATERIALIZATION),
        key=lambda k: k.to_user_string(),
    )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    description="Record an alert for every failed run (log, alerts.jsonl, asset observation, webhook)",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, data_root: DataRoot):
    run = context.dagster_run
    alert = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": "run_failure",
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition"),
        "error": context.failure_event.message,
    }
    context.log.error(f"run {run.run_id} of {run.job_name} failed: {alert['error']}")
    append_alert(data_root.local_path(data_root.path("alerts", None, "alerts.jsonl")), alert)
    for key in _unmaterialized_assets(context.instance, run.run_id):
        context.instance.report_runless_asset_event(
            dg.AssetObservation(
                asset_key=key, metadata={"alert": f"run {run.run_id} failed", "error": alert["error"] or ""}
            )
        )
    url = os.environ.get(WEBHOOK_VAR)
    if url:
        try:
            alert["webhook_status"] = post_webhook(url, alert)
        except OSError as exc:
            context.log.warning(f"alert webhook {url} failed: {exc}")


sensors = [drift_retraining, new_champion, canary_rollout, run_failure_alerts]
