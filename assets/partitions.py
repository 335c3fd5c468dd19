"""Partitions shared across stages: one crawl per day (a re-run of a day resumes that crawl)."""

from datetime import timedelta

import dagster as dg

crawl_partitions = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)

# Each day's crawl and its corpus must land by 06:00 UTC and cover the day before it: the UI shows
# every stage's freshness (PASS / WARN / FAIL) against this policy.
DAILY_FRESHNESS = dg.FreshnessPolicy.cron(deadline_cron="0 6 * * *", lower_bound_delta=timedelta(hours=24))
