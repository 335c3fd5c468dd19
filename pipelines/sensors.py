"""Sensors (all start STOPPED; switch them on in the UI or with ``dagster sensor start``; the daemon of
``dagster dev`` ticks them).

- ``drift_retraining``: new ``drift_report`` materializations → at most one ``retrain`` run per drift episode,
  with a cooldown, on the report's verdict ("no verdict" hours and drift over fewer than
  ``CRAWL2SERVE_RETRAIN_MIN_REQUESTS`` requests change nothing; ``assets.monitoring.retrain_policy``); the
  policy's state is the sensor's cursor.
- ``new_champion``: the registry's champion differs from what is served → a ``serve_champion`` run.
- ``run_failure_alerts``: every failed run → an alert (log, ``{data_root}/alerts/alerts.jsonl``, an observation
  on the failed run's assets, and a webhook POST when ``CRAWL2SERVE_ALERT_WEBHOOK`` is set).
"""

import json
import os
import time
import urllib.request

import dagster as dg

from crawl2serve.assets.monitoring.retrain_policy import DriftReport, PolicyState, decide
from crawl2serve.assets.release.registry import champion_version
from crawl2serve.pipelines.jobs import retrain_job, serve_champion_job
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.storage import DataRoot
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.serving.gateway.routing import read_routing

RETRAIN_COOLDOWN_S = float(os.environ.get("CRAWL2SERVE_RETRAIN_COOLDOWN_S", 6 * 3600))
RETRAIN_MIN_REQUESTS = int(os.environ.get("CRAWL2SERVE_RETRAIN_MIN_REQUESTS", "50"))
WEBHOOK_VAR = "CRAWL2SERVE_ALERT_WEBHOOK"


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
    if context.cursor == version:
        return dg.SkipReason(f"a serve_champion run for v{version} was already requested")
    context.update_cursor(version)
    return dg.RunRequest(
        run_key=f"champion-{version}-{routing.get('stable', 'none')}",
        tags={"crawl2serve/trigger": "new_champion", "crawl2serve/champion": version},
    )


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


def post_webhook(url: str, payload: dict, timeout_s: float = 10.0) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return response.status


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    description="Record an alert for every failed run (log, alerts.jsonl, asset observation, webhook)",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, data_root: DataRoot):
    run = context.dagster_run
    alert = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition"),
        "error": context.failure_event.message,
    }
    context.log.error(f"run {run.run_id} of {run.job_name} failed: {alert['error']}")
    path = data_root.local_path(data_root.path("alerts", None, "alerts.jsonl"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(alert) + "\n")
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


sensors = [drift_retraining, new_champion, run_failure_alerts]
