"""The run-failure sensor records an alert (alerts.jsonl, asset observation) and posts the webhook."""

import json
from datetime import UTC

import dagster as dg

from crawl2serve.pipelines.sensors import run_failure_alerts
from crawl2serve.resources.storage import DataRoot
from tests.support import webhook_receiver


@dg.asset
def broken_asset():
    raise RuntimeError("the disk is full")


def test_a_failed_run_is_alerted_to_file_observation_and_webhook(tmp_path, monkeypatch):
    with webhook_receiver() as (url, received):
        monkeypatch.setenv("CRAWL2SERVE_ALERT_WEBHOOK", url)
        _alert_a_failed_run(tmp_path, received)


def _alert_a_failed_run(tmp_path, received):
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([broken_asset], instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    with dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=failure,
        resources={"data_root": DataRoot(url=str(tmp_path))},
    ) as ctx:
        run_failure_alerts(ctx.for_run_failure())
    alerts = [json.loads(line) for line in (tmp_path / "alerts" / "_" / "alerts.jsonl").read_text().splitlines()]
    assert len(alerts) == 1 and alerts[0]["run_id"] == result.run_id and alerts[0]["job"] == result.job_def.name
    assert received and received[0]["run_id"] == result.run_id
    observed = instance.fetch_observations(dg.AssetKey("broken_asset"), limit=1).records
    assert observed and "failed" in observed[0].event_log_entry.asset_observation.metadata["alert"].value


def test_the_hourly_schedule_reports_the_hour_that_just_ended():
    from datetime import datetime

    from crawl2serve.pipelines.schedules import hourly_monitoring

    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 23, 7, 5, tzinfo=UTC))
    request = hourly_monitoring(ctx)
    assert request.partition_key == "2026-11-23-06:00" and request.run_key == "monitoring-2026-11-23-06:00"
