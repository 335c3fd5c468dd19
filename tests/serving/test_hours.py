"""The spool's hour folders: one home (serving/gateway/hours.py) for the writer and the monitoring readers."""

import ast
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from crawl2serve.serving.gateway.hours import HOUR_FORMAT, closed_hours, daily_hours, hour_dirs, hour_of, is_hour

REPO_ROOT = Path(__file__).resolve().parents[2]
HOME = REPO_ROOT / "serving" / "gateway" / "hours.py"


def test_hour_facts_have_one_home():
    """No module but hours.py defines the hour-folder functions or spells the folder format: the writer
    (logstore), the readers (monitoring) and the assets all import them (main had two of each, with
    different signatures)."""
    names = {"hour_of", "closed_hours", "hour_dirs", "hour_partitions", "daily_hours", "is_hour", "_is_hour"}
    found = []
    for folder in ("assets", "pipelines", "resources", "serving", "crawl2serve"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if path == HOME:
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef) and node.name in names:
                    found.append(f"{path.relative_to(REPO_ROOT)}: def {node.name}")
                if isinstance(node, ast.Constant) and node.value == HOUR_FORMAT:
                    found.append(f"{path.relative_to(REPO_ROOT)}: {HOUR_FORMAT!r}")
    assert found == []


def test_hour_of_takes_a_datetime_or_a_rows_ts():
    assert hour_of("2025-03-01T10:59:59.999999+00:00") == "2025-03-01T10"
    assert hour_of("2025-03-01T11:00:00.000000Z") == "2025-03-01T11"
    assert hour_of("2025-03-01T00:30:00.000000+02:00") == "2025-02-28T22"
    assert hour_of(datetime(2025, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))) == "2025-02-28T22"
    with pytest.raises(ValueError, match="naive"):
        hour_of(datetime(2025, 3, 1, 10))
    with pytest.raises(ValueError, match="no UTC offset"):
        hour_of("2025-03-01T10:00:00")
    with pytest.raises(ValueError, match="'yesterday' is not an ISO-8601 timestamp"):
        hour_of("yesterday")


def test_hour_dirs_and_closed_hours(tmp_path):
    for name in ("2026-11-23T07", "2026-11-23T05", "2026-11-23T06", "2026-11-22T23"):
        (tmp_path / name).mkdir()
    (tmp_path / "2026-13-01T00").mkdir()  # not a date
    (tmp_path / "tmp").mkdir()
    (tmp_path / "2026-11-23T04").write_text("a file, not a folder")
    assert hour_dirs(tmp_path) == ["2026-11-22T23", "2026-11-23T05", "2026-11-23T06", "2026-11-23T07"]
    assert hour_dirs(tmp_path / "missing") == []
    assert closed_hours(tmp_path / "missing", datetime(2026, 11, 23, 6, tzinfo=UTC)) == []

    now = datetime(2026, 11, 23, 6, 30, tzinfo=UTC)
    assert closed_hours(tmp_path, now) == ["2026-11-22T23", "2026-11-23T05"]  # 06 is still open
    plus2 = timezone(timedelta(hours=2))
    assert closed_hours(tmp_path, datetime(2026, 11, 23, 8, 30, tzinfo=plus2)) == ["2026-11-22T23", "2026-11-23T05"]
    at_seven = datetime(2026, 11, 23, 7, 0, 30, tzinfo=UTC)
    assert closed_hours(tmp_path, at_seven) == ["2026-11-22T23", "2026-11-23T05", "2026-11-23T06"]
    assert closed_hours(tmp_path, at_seven, grace_s=60) == ["2026-11-22T23", "2026-11-23T05"]  # 06 may still grow
    assert closed_hours(tmp_path) == hour_dirs(tmp_path)  # default now: every folder of 2026-11 is closed
    with pytest.raises(ValueError, match="timezone-aware"):
        closed_hours(tmp_path, datetime(2026, 11, 23, 7, 0))  # naive


def test_daily_hours_and_is_hour():
    hours = daily_hours("2026-11-23")
    assert len(hours) == 24 and hours[0] == "2026-11-23T00" and hours[-1] == "2026-11-23T23"
    assert hours == sorted(hours) and all(is_hour(h) for h in hours)
    assert not is_hour("2026-11-23T24") and not is_hour("../2026-11-23T06") and not is_hour("2026-11-23-06:00")
    with pytest.raises(ValueError):
        daily_hours("2026-11-31")
