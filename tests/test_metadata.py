"""The metadata people read: typed tables, column schemas, owners, code versions, pools, MLflow links, the
instance's pool limit and the declarative automation of the Feast assets (no materialization needed)."""

import re
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from crawl2serve.assets.contracts import TableContract
from crawl2serve.assets.metadata import (
    COLUMN_SCHEMA,
    GPU_POOL,
    OWNERS,
    attribute_docs,
    code_version,
    column_schema,
    frame_column_schema,
    polars_type,
    readable,
    stage_facts,
    table,
)
from crawl2serve.definitions import defs
from crawl2serve.resources.storage import DataRoot
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.serving.gateway.logrow import LOG_FIELDS, LogRow

REPO = Path(__file__).resolve().parents[1]
# Every asset whose output is a polars DataFrame written by the Parquet IO manager.
TABLE_ASSETS = {
    "raw_crawl",
    "extracted_pages",
    "clean_documents",
    "document_rejections",
    "deduplicated_documents",
    "duplicate_clusters",
    "inference_log",
}
GPU_ASSETS = {"lora_adapter", "model_evaluation", "sglang_deployment"}


def _specs():
    return {s.key.to_user_string(): s for a in defs.assets for s in a.specs}


def _ops():
    return {k.to_user_string(): a.op for a in defs.assets for k in a.keys}


def test_readable_rounds_floats_to_four_significant_digits():
    assert readable(0.000123456) == 0.0001235 and readable(12345.678) == 12350.0 and readable(2 / 3) == 0.6667
    assert readable(3) == 3 and readable("x") == "x" and readable(None) is None and readable(True) is True


def test_table_types_columns_by_their_values():
    value = table(("name", "n", "share", "ok", "note"), [("a", 1, 0.123456, True, 3), ("b", 2, 1, False, "n/a")])
    types = {c.name: c.type for c in value.schema.columns}
    assert types == {"name": "string", "n": "int", "share": "float", "ok": "bool", "note": "string"}
    assert [dict(r.data) for r in value.records][0] == {"name": "a", "n": 1, "share": 0.1235, "ok": True, "note": "3"}
    with pytest.raises(ValueError, match="has 1 cells"):
        table(("a", "b"), [("only",)])


def test_polars_types_read_like_their_dtypes():
    assert polars_type(pl.String) == "string" and polars_type(pl.Int32) == "int32" and polars_type(pl.Boolean) == "bool"
    assert polars_type(pl.Datetime("us", "UTC")) == "timestamp[us, UTC]"
    assert (
        polars_type(pl.Array(pl.Int32, 256)) == "array<int32, 256>"
        and polars_type(pl.List(pl.String)) == "list<string>"
    )
    assert polars_type(pl.Struct({"a": pl.Float64})) == "struct<a: float64>"


def test_column_schema_needs_one_description_per_column_and_names_the_gaps():
    with pytest.raises(ValueError, match=r"b: no description; c: not a column"):
        column_schema({"a": pl.String, "b": pl.Int64}, {"a": "the a", "c": "no such column"})
    with pytest.raises(ValueError, match="b: no description"):
        TableContract(schema={"a": pl.String, "b": pl.Int64}, columns={"a": "the a"}).column_schema()


def test_the_written_schema_comes_from_the_frame_and_its_descriptions_from_the_declaration():
    declared = column_schema({"a": pl.String, "b": pl.Int64}, {"a": "the a", "b": "the b"}, not_null=("a",))
    frame = pl.DataFrame({"b": [1.5], "a": ["x"], "extra": [True]})
    cols = frame_column_schema(frame.schema, dg.MetadataValue.table_schema(declared)).columns
    assert [(c.name, c.type, c.description) for c in cols] == [
        ("b", "float64", "the b"),
        ("a", "string", "the a"),
        ("extra", "bool", None),
    ]
    assert cols[1].constraints.nullable is False


def test_inference_log_columns_are_described_by_logrow_docstrings():
    docs = attribute_docs(LogRow)
    assert set(docs) == set(LOG_FIELDS) and all(docs.values())
    assert docs["ttft_ms"].startswith("Time to the first streamed token")


def test_every_table_asset_declares_a_described_column_schema_and_no_other_does():
    declared = {k: s.metadata[COLUMN_SCHEMA] for k, s in _specs().items() if COLUMN_SCHEMA in s.metadata}
    assert set(declared) == TABLE_ASSETS
    for key, schema in declared.items():
        assert all(c.description for c in schema.columns), key


def test_every_asset_has_its_groups_owners_and_code_version():
    specs = _specs()
    assert len(specs) >= 18
    for key, spec in specs.items():
        assert spec.owners == OWNERS[spec.group_name], key
        assert spec.code_version == code_version(spec.group_name), key
    assert {k for k, op in _ops().items() if op.pool == GPU_POOL} == GPU_ASSETS
    assert re.fullmatch(r"[0-9a-f]{12}", code_version("crawl"))
    with pytest.raises(ValueError, match="stage 'nowhere'"):
        stage_facts("nowhere")


def test_code_version_follows_the_stage_source(tmp_path, monkeypatch):
    import crawl2serve.assets.metadata as metadata

    shutil.copytree(REPO / "assets" / "serving", tmp_path / "serving")
    monkeypatch.setattr(metadata, "_ASSETS_DIR", tmp_path)
    before = code_version("serving")
    assert before == metadata.code_version("serving")
    (tmp_path / "serving" / "assets.py").write_text((tmp_path / "serving" / "assets.py").read_text() + "\n# changed\n")
    assert code_version("serving") != before


def test_mlflow_links_follow_the_ui_url_format(tmp_path):
    tracking = MlflowTracking(data_root=DataRoot(url=str(tmp_path)), ui_url="http://mlflow.example:5000/")
    assert tracking.run_url("3", "abc") == "http://mlflow.example:5000/#/experiments/3/runs/abc"
    assert (
        tracking.model_version_url("crawl2serve-lora", 2)
        == "http://mlflow.example:5000/#/models/crawl2serve-lora/versions/2"
    )
    assert MlflowTracking(data_root=DataRoot(url=str(tmp_path))).ui_url == "http://127.0.0.1:5000"


def test_the_instance_limits_the_gpu_pool_to_one_step(tmp_path):
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1 and pools.pool_granularity.value == "op"


def _requested(result) -> set[str]:
    return {
        k
        for k in ("document_features", "feast_registry", "feast_online_store")
        if result.get_requested_partitions(dg.AssetKey(k))
    }


def test_feast_assets_follow_their_upstream_declaratively():
    """Eager: a new document_features requests the registry and the online store (one tick, so one run); a
    registry applied by hand requests the online store only; nothing new upstream requests nothing."""
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor=None):
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)

    result = tick()
    assert _requested(result) == set(), "nothing upstream has materialized"
    instance.report_runless_asset_event(dg.AssetMaterialization("document_features"))
    result = tick(result.cursor)
    assert _requested(result) == {"feast_registry", "feast_online_store"}
    for key in ("feast_registry", "feast_online_store"):
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    result = tick(result.cursor)
    assert _requested(result) == set(), "nothing new upstream"
    instance.report_runless_asset_event(dg.AssetMaterialization("feast_registry"))
    result = tick(result.cursor)
    assert _requested(result) == {"feast_online_store"}
