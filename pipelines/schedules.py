"""Schedules (all start STOPPED; switch them on in the UI or with ``dagster schedule start``)."""

import dagster as dg

from pipelines.jobs import main_job

# A daily re-crawl: each day's partition is a new crawl (a re-run of a day resumes it).
daily_recrawl = dg.build_schedule_from_partitioned_job(
    main_job, name="daily_recrawl", hour_of_day=2, default_status=dg.DefaultScheduleStatus.STOPPED
)

schedules = [daily_recrawl]
