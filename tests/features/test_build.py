"""Offline feature history: recomputed values become new, later rows (point-in-time correct)."""

from datetime import UTC, datetime

import polars as pl

from crawl2serve.assets.features.build import merge_history

T1, T2, NOW = (datetime(2026, 3, d, tzinfo=UTC) for d in (1, 2, 9))
SCHEMA = {
    "doc_id": pl.String,
    "cluster_size": pl.Int64,
    "event_timestamp": pl.Datetime("us", "UTC"),
    "created_timestamp": pl.Datetime("us", "UTC"),
}


def frame(rows):
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def test_first_write_is_the_fresh_table():
    fresh = frame([("a", 1, T1, T1)])
    assert merge_history(None, fresh, "doc_id", NOW).equals(fresh)


def test_unchanged_rows_add_nothing_and_new_keys_or_times_are_appended():
    old = frame([("a", 1, T1, T1)])
    out = merge_history(old, frame([("a", 1, T1, NOW), ("b", 1, T2, NOW), ("a", 1, T2, NOW)]), "doc_id", NOW)
    assert sorted(out.select("doc_id", "event_timestamp").rows()) == [("a", T1), ("a", T2), ("b", T2)]


def test_a_recomputed_value_becomes_a_new_row_stamped_now():
    old = frame([("a", 1, T1, T1)])
    out = merge_history(old, frame([("a", 3, T1, NOW)]), "doc_id", NOW)
    assert out.sort("event_timestamp").select("cluster_size", "event_timestamp").rows() == [(1, T1), (3, NOW)]
