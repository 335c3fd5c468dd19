"""Schedules (all start STOPPED; switch them on in the UI or with ``dagster schedule start``)."""

from datetime import UTC, timedelta

import dagster as dg

from crawl2serve.assets.partitions import HOUR_PARTITION_FORMAT, START
from crawl2serve.pipelines.jobs import main_job, monitoring_job

# A daily re-crawl: each day's partition is a new crawl (a re-run of a day resumes it).
daily_recrawl = dg.build_schedule_from_partitioned_job(
    main_job, name="daily_recrawl", hour_of_day=2, default_status=dg.DefaultScheduleStatus.STOPPED
)


# A schedule, not AutomationCondition.on_cron: the monitoring partitions include the open hour (end_offset=1),
# and on_cron targets the newest partition, which would report an hour still filling up; this schedule names
# the hour that just ended, with a run key per hour.
@dg.schedule(
    cron_schedule="5 * * * *",
    job=monitoring_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every hour, five minutes past: compact the hour that just ended and report its drift.",
)
def hourly_monitoring(context: dg.ScheduleEvaluationContext):
    ended = (context.scheduled_execution_time - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    hour = ended.strftime(HOUR_PARTITION_FORMAT)
    if ended.astimezone(UTC).replace(tzinfo=None) < START:  # an hour before the partitions start has no partition
        return dg.SkipReason(f"{hour} is before the first monitoring partition ({START:{HOUR_PARTITION_FORMAT}})")
    return dg.RunRequest(run_key=f"monitoring-{hour}", partition_key=hour)


schedules = [daily_recrawl, hourly_monitoring]
