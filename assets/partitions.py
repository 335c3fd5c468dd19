"""Partitions shared across stages: one crawl per day (a re-run of a day resumes that crawl), and the monitoring
stage's hours; both start at ``CRAWL2SERVE_PARTITIONS_START``.

Where the partitions start is the one fact here. It must stay the same across code-server restarts (a start that
moves, such as "today" at import, drops the partitions before it from the UI together with their materializations'
status), so it is a fixed date: ``CRAWL2SERVE_PARTITIONS_START`` (``YYYY-MM-DD``, or ``YYYY-MM-DD-HH:MM`` to start
the hourly partitions at that hour) or, unset, :data:`DEFAULT_PARTITIONS_START`, the first crawl day of the
project's data (the tests' crawl day). ``./dev.sh`` records the first run's day and hour in
``$DAGSTER_HOME/partitions_start`` and sets the variable from it, so a fresh instance's UI counts its partitions
from its own first crawl, and every later ``./dev.sh ui`` / ``./dev.sh main`` (every code-server start) reads the
same start. A deployment sets the variable to its first crawl day in the code location's environment.
"""

import os
from datetime import datetime, timedelta

import dagster as dg

START_ENV = "CRAWL2SERVE_PARTITIONS_START"
DEFAULT_PARTITIONS_START = "2026-11-20"
DAY_FORMAT = "%Y-%m-%d"  # daily partition keys: "2026-11-23"
HOUR_PARTITION_FORMAT = "%Y-%m-%d-%H:%M"  # hourly partition keys: "2026-11-23-06:00"
# An input of every crawl day's partition of its upstream (the corpus so far), as one dict or frame
EVERY_PARTITION = dg.AssetIn(partition_mapping=dg.AllPartitionMapping())


def partitions_start(value: str | None = None) -> datetime:
    """The first partition's start: ``value`` (default: ``$CRAWL2SERVE_PARTITIONS_START``, else
    :data:`DEFAULT_PARTITIONS_START`), a ``YYYY-MM-DD`` day or a ``YYYY-MM-DD-HH:MM`` hour (minutes dropped).
    Anything else is a ValueError naming the variable."""
    value = (os.environ.get(START_ENV) or DEFAULT_PARTITIONS_START) if value is None else value
    for fmt in (DAY_FORMAT, HOUR_PARTITION_FORMAT):
        try:
            return datetime.strptime(value.strip(), fmt).replace(minute=0)
        except ValueError:
            continue
    raise ValueError(f"{START_ENV}={value!r}: expected a day YYYY-MM-DD (2026-11-23) or an hour YYYY-MM-DD-HH:MM")


START = partitions_start()
crawl_partitions = dg.DailyPartitionsDefinition(start_date=START.strftime(DAY_FORMAT), end_offset=1)
# One partition per UTC hour from the start's hour; the current (open) hour is a partition too, so traffic can be
# looked at as it comes.
monitoring_partitions = dg.HourlyPartitionsDefinition(start_date=START.strftime(HOUR_PARTITION_FORMAT), end_offset=1)

# Each day's crawl and its corpus must land by 06:00 UTC and cover the day before it: the UI shows
# every stage's freshness (PASS / WARN / FAIL) against this policy.
DAILY_FRESHNESS = dg.FreshnessPolicy.cron(deadline_cron="0 6 * * *", lower_bound_delta=timedelta(hours=24))
