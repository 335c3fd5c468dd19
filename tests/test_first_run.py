"""What a fresh `./dev.sh main` sets up before it runs: the instance config (no telemetry, no welcome dialog) and
where the partitions start (the first run's day and hour, stable across code-server restarts)."""

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from crawl2serve.assets.partitions import (
    DEFAULT_PARTITIONS_START,
    START_ENV,
    crawl_partitions,
    monitoring_partitions,
    partitions_start,
)

REPO = Path(__file__).resolve().parents[1]


def _dev_instance(home: Path, *start: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != START_ENV} | {"DAGSTER_HOME": str(home)}
    return subprocess.run(
        ["./dev.sh", "instance", *start], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout


def test_the_instance_dev_sh_creates_has_no_welcome_dialog_and_no_telemetry(tmp_path):
    """A fresh DAGSTER_HOME gets the repository's dagster.yaml (main left it without one: Dagster printed its
    telemetry notice, and the UI opened behind the community/onboarding dialog)."""
    home = tmp_path / "home"
    _dev_instance(home)
    assert (home / "dagster.yaml").read_text() == (REPO / "dagster_home" / "dagster.yaml").read_text()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.nux_enabled is False
        assert instance.telemetry_enabled is False
        assert instance.python_log_level == "INFO"  # no DEBUG step-worker lines on the console
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # a DAGSTER_HOME's own file is kept
    _dev_instance(home)
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


def test_dev_sh_records_the_start_once_and_only_moves_it_earlier(tmp_path):
    home = tmp_path / "home"
    assert _dev_instance(home, "2026-12-01-11:00").strip().endswith("partitions start: 2026-12-01-11:00")
    _dev_instance(home, "2026-12-02-09:00")  # a later run (or a code-server restart) keeps it
    assert (home / "partitions_start").read_text().strip() == "2026-12-01-11:00"
    _dev_instance(home, "2026-11-25")  # a run of an earlier crawl day needs its partition
    assert (home / "partitions_start").read_text().strip() == "2026-11-25"
    old = tmp_path / "old"  # an instance that has runs from before keeps the code's default start
    (old / "storage").mkdir(parents=True)
    assert "default" in _dev_instance(old, "2026-12-01-11:00") and not (old / "partitions_start").exists()


PROBE = """
import json
from datetime import datetime, UTC
import dagster as dg
from crawl2serve.assets.partitions import crawl_partitions, monitoring_partitions
from crawl2serve.pipelines.schedules import hourly_monitoring
now = datetime(2026, 12, 1, 12, 30)
tick = lambda h: hourly_monitoring(dg.build_schedule_context(scheduled_execution_time=datetime(2026, 12, 1, h, 5, tzinfo=UTC)))
print(json.dumps({
    "days": crawl_partitions.get_partition_keys(current_time=now),
    "hours": monitoring_partitions.get_partition_keys(current_time=now),
    "tick_11": type(tick(11)).__name__,
    "tick_12": tick(12).partition_key,
}))
"""


def test_partitions_start_where_the_instance_started(tmp_path):
    """main's partitions started on 2026-01-01 (days) and 2026-11-01 (hours): after a first run on 2026-12-01 the
    UI read "335 partitions, 0% filled". Started from the recorded start, the first run's day is the only one."""
    home = tmp_path / "home"
    _dev_instance(home, "2026-12-01-11:00")
    env = {**os.environ, START_ENV: (home / "partitions_start").read_text().strip()}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["days"] == ["2026-12-01"]
    assert probe["hours"] == ["2026-12-01-11:00", "2026-12-01-12:00"]
    assert probe["tick_11"] == "SkipReason"  # 10:00 ended before the first partition
    assert probe["tick_12"] == "2026-12-01-11:00"


def test_the_default_start_and_bad_values():
    if not os.environ.get(START_ENV):
        assert crawl_partitions.get_first_partition_key() == DEFAULT_PARTITIONS_START
        assert monitoring_partitions.get_first_partition_key() == f"{DEFAULT_PARTITIONS_START}-00:00"
    assert partitions_start("2026-12-01") == datetime(2026, 12, 1)
    assert partitions_start("2026-12-01-11:45") == datetime(2026, 12, 1, 11)
    for bad in ("2026-13-01", "yesterday", "2026-12-01T11"):
        with pytest.raises(ValueError, match=f"{START_ENV}='{bad}': expected a day YYYY-MM-DD"):
            partitions_start(bad)
