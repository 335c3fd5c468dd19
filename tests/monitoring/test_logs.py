"""Inference-log spool: torn lines, schema, hour selection."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from crawl2serve.assets.monitoring.logs import LOG_SCHEMA, read_spool
from crawl2serve.serving.gateway.hours import daily_hours
from crawl2serve.serving.gateway.logrow import LOG_FIELDS, LogRow
from crawl2serve.serving.gateway.logstore import InferenceLog

DEFAULTS = {f.name: f.default for f in dataclasses.fields(LogRow)}


def row(i: int, ts: str, **over) -> dict:
    r = {
        **DEFAULTS,  # the fields this row leaves at the gateway's defaults
        "request_id": f"r{i}",
        "ts": ts,
        "tenant": "t1",
        "key_id": "k1",
        "endpoint": "chat.completions",
        "model": "m",
        "served_model": "m-lora",
        "model_version": "3",
        "adapter": "lora-3",
        "engine": "sglang",
        "route": "stable",
        "stream": True,
        "status": 200,
        "error": None,
        "prompt": f"prompt {i}",
        "output": f"output {i}",
        "prompt_tokens": 5,
        "completion_tokens": 7,
        "cost_usd": 0.0002,
        "latency_ms": 120.5,
        "ttft_ms": 30.25,
        "input_verdict": "allow",
        "output_verdict": "allow",
        "verdict_reasons": "",
        "finish_reason": "stop",
        "role": "primary",
        "experiment": "",
        "arm": "",
        "rating": None,
    }
    r.update(over)
    return r


def write(folder: Path, name: str, rows: list[dict], tail: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def test_read_spool_typed_sorted_and_torn_tail_skipped(tmp_path):
    hour = tmp_path / "2026-11-23T06"
    write(
        hour,
        "gw-a-11-1.jsonl",
        [row(1, "2026-11-23T06:05:03.000002+00:00"), row(2, "2026-11-23T06:05:01.123456+00:00")],
        tail='{"request_id": "torn", "ts": "2026-11-23T06:0',
    )
    write(
        hour,
        "gw-b-12-2.jsonl",
        [
            row(
                3,
                "2026-11-23T06:05:02.500000+00:00",
                stream=False,
                ttft_ms=None,
                status=503,
                error="upstream timeout",
                output="",
            )
        ],
    )
    df, skipped = read_spool(tmp_path, ["2026-11-23T06"])

    assert skipped == 1
    assert df.schema == LOG_SCHEMA
    assert df["request_id"].to_list() == ["r2", "r3", "r1"]  # by ts, across files
    assert df["ts"][0] == datetime(2026, 11, 23, 6, 5, 1, 123456, tzinfo=UTC)
    r3 = df.row(1, named=True)
    assert (r3["status"], r3["stream"], r3["ttft_ms"], r3["error"]) == (503, False, None, "upstream timeout")
    assert df["latency_ms"].to_list() == [120.5, 120.5, 120.5]


def test_a_whole_object_without_its_newline_is_still_torn(tmp_path):
    hour = tmp_path / "2026-11-23T06"
    write(
        hour,
        "gw.jsonl",
        [row(1, "2026-11-23T06:00:00.000000+00:00")],
        tail=json.dumps(row(2, "2026-11-23T06:00:01.000000+00:00")),
    )  # as the writer's own reader rules
    df, skipped = read_spool(tmp_path, ["2026-11-23T06"])
    assert (df["request_id"].to_list(), skipped) == (["r1"], 1)


def test_invalid_lines_skipped_and_counted_blank_lines_ignored(tmp_path):
    hour = tmp_path / "2026-11-23T07"
    good = [json.dumps(row(i, f"2026-11-23T07:00:0{i}.000000+00:00")) for i in range(3)]
    (hour).mkdir(parents=True)
    (hour / "gw.jsonl").write_text(f'{good[0]}\n{{"request_id": "half\n\n[1, 2]\n{good[1]}\n{good[2]}\n{{"x')
    df, skipped = read_spool(tmp_path, ["2026-11-23T07"])
    assert df["request_id"].to_list() == ["r0", "r1", "r2"]
    assert skipped == 3  # the half line, the JSON array, the torn tail


def test_extra_keys_dropped_missing_keys_null(tmp_path):
    r = row(1, "2026-11-23T06:00:00.000000+00:00", extra_field=42)
    del r["adapter"]
    write(tmp_path / "2026-11-23T06", "gw.jsonl", [r])
    df, _ = read_spool(tmp_path, ["2026-11-23T06"])
    assert df.columns == list(LOG_SCHEMA.names())
    assert df["adapter"].to_list() == [None]


def test_values_that_cannot_take_the_schema_raise(tmp_path):
    write(tmp_path / "2026-11-23T06", "gw.jsonl", [row(1, "2026-11-23T06:00:00.000000+00:00", status="abc")])
    with pytest.raises(pl.exceptions.PolarsError):  # a writer bug, never dropped silently
        read_spool(tmp_path, ["2026-11-23T06"])


def test_hours_select_folders_and_missing_ones_are_empty(tmp_path):
    write(tmp_path / "2026-11-23T05", "gw.jsonl", [row(1, "2026-11-23T05:59:59.999999+00:00")])
    write(tmp_path / "2026-11-23T06", "gw.jsonl", [row(2, "2026-11-23T06:00:00.000000+00:00")])
    df, _ = read_spool(tmp_path, ["2026-11-23T06", "2026-11-23T06"])
    assert df["request_id"].to_list() == ["r2"]
    df, _ = read_spool(tmp_path, ["2026-11-23T06", "2026-11-23T05"])
    assert df["request_id"].to_list() == ["r1", "r2"]

    empty, skipped = read_spool(tmp_path, ["2026-11-24T00"])
    assert (empty.height, skipped, empty.schema) == (0, 0, LOG_SCHEMA)
    empty, _ = read_spool(tmp_path / "no-such-spool", daily_hours("2026-11-23"))
    assert empty.schema == LOG_SCHEMA and empty.height == 0
    with pytest.raises(ValueError):
        read_spool(tmp_path, ["../2026-11-23T06"])


def test_schema_is_the_writers_row_type_and_round_trips(tmp_path):
    """LOG_SCHEMA is LogRow's fields, typed; a LogRow the gateway's log writes reads back as the same LogRow."""
    assert LOG_SCHEMA.names() == list(LOG_FIELDS)
    assert (
        LOG_SCHEMA["ts"],
        LOG_SCHEMA["stream"],
        LOG_SCHEMA["status"],
        LOG_SCHEMA["ttft_ms"],
        LOG_SCHEMA["error"],
    ) == (pl.Datetime("us", "UTC"), pl.Boolean(), pl.Int64(), pl.Float64(), pl.String())
    rows = [
        LogRow.from_json(row(1, "2026-11-23T06:00:00.000001+00:00")),
        LogRow.from_json(
            row(
                2,
                "2026-11-23T06:00:00.000002+00:00",
                stream=False,
                ttft_ms=None,
                status=503,
                error="log_unavailable",
                finish_reason=None,
            )
        ),
    ]
    with InferenceLog(tmp_path) as log:
        for r in rows:
            log.append(r)
    df, skipped = read_spool(tmp_path, ["2026-11-23T06"])
    assert skipped == 0 and df.schema == LOG_SCHEMA
    back = [LogRow.from_json({**d, "ts": d["ts"].isoformat(timespec="microseconds")}) for d in df.iter_rows(named=True)]
    assert back == rows
