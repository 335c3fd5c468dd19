"""In-process materializations of the crawl and corpus assets on the real pydoc site (small page cap)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from support import (
    CORPUS,
    PARTITION,
    PROSE,
    REPO,
    assert_column_schemas,
    checks,
    facts,
    load,
    records,
    resources,
    run_config,
    warc_bytes,
)

from crawl2serve.assets.corpus.extracted import extracted_pages
from crawl2serve.assets.crawl.assets import raw_crawl


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    result = dg.materialize(CORPUS, resources=resources(root), partition_key=PARTITION, run_config=run_config(60))
    return root, result


def test_the_four_stages_materialize_on_pydoc(corpus):
    root, result = corpus
    assert result.success
    failed = {k: v for k, v in checks(result).items() if not v}
    assert not failed, failed

    manifest = load(root, "raw_crawl")
    assert manifest.height == 60
    assert manifest["url"].n_unique() == 60
    assert manifest["url"].str.starts_with("http://127.0.0.1:").all()
    stored = manifest.filter(pl.col("warc_file").is_not_null())
    assert stored.height >= 55 and (stored["status"] == 200).all()
    assert all(Path(p).exists() for p in stored["warc_file"].unique())
    assert not list((root / "raw_crawl" / PARTITION).rglob(".tmp-*")), "no temporaries left behind"

    pages = load(root, "extracted_pages")
    assert pages.height == stored.height
    assert (pages["language"] == "en").mean() > 0.8
    index = pages.filter(pl.col("url").str.ends_with("/index.html")).row(0, named=True)
    assert index["title"] == "Pydoc: Index of Modules"
    assert "Python 3." not in index["text"].splitlines()[0], "pydoc's banner is skipped"

    kept, rejected = load(root, "clean_documents"), load(root, "document_rejections")
    assert kept.height + rejected.height == pages.height
    assert kept.height > 0 and rejected.height > 0
    assert kept["quality_score"].is_between(0, 1).all()
    assert set(rejected["rule"]) <= {
        "language",
        "length_bounds",
        "c4_quality",
        "gopher_repetition",
        "gopher_quality",
        "fineweb_quality",
    }

    deduped, clusters = load(root, "deduplicated_documents"), load(root, "duplicate_clusters")
    assert clusters.height == kept.height
    assert deduped.height == clusters["kept"].sum()
    assert deduped["content_hash"].n_unique() == deduped.height
    assert set(deduped["doc_id"]) <= set(kept["doc_id"])

    mat = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert mat["raw_crawl"]["fetches"].value == 60
    funnel = {r["step"]: r for r in records(mat["clean_documents"]["funnel"])}
    assert {"language", "fineweb_quality"} <= set(funnel) and funnel["language"]["in"] == pages.height
    assert sum(r["docs"] for r in records(mat["clean_documents"]["quality_histogram"])) == kept.height
    by_host = records(mat["raw_crawl"]["by_host_status"])
    assert sum(r["fetches"] for r in by_host) == 60 and {r["host"] for r in by_host} == {
        manifest["url"][0].split("/")[2]
    }
    assert_column_schemas(root, result)


def test_rerunning_a_crawl_partition_resumes_without_refetching(corpus, tmp_path):
    root, _ = corpus
    before = load(root, "raw_crawl")
    # same partition, a larger cap: the 60 stored pages are kept and only new ones are fetched
    result = dg.materialize(
        [raw_crawl],
        resources=resources(root),
        partition_key=PARTITION,
        run_config={"ops": {"raw_crawl": {"config": {"max_pages": 70}}}},
    )
    assert result.success
    after = load(root, "raw_crawl")
    summary = facts(result.get_asset_materialization_events()[0].materialization.metadata["summary"])
    assert summary["resumed"] == "60" and summary["fetched"] == "10"
    assert after.height == 70
    old = after.filter(pl.col("url").is_in(before["url"].implode()))
    assert old.sort("url")["fetch_time"].to_list() == before.sort("url")["fetch_time"].to_list()


def test_a_crawl_that_stores_nothing_blocks_everything_downstream(tmp_path):
    result = dg.materialize(
        CORPUS,
        resources=resources(tmp_path),
        partition_key=PARTITION,
        raise_on_error=False,
        run_config=run_config(10, include_patterns=[r"/no-such-page-exists$"]),
    )
    assert not result.success
    assert checks(result)["raw_crawl:stored_pages"] is False
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"raw_crawl"}
    assert not (tmp_path / "extracted_pages").exists()


def test_ingest_mode_reads_existing_warc_and_wet_files(tmp_path):
    html = f"<html><head><title>Minutes</title></head><body><main><p>{PROSE * 3}</p></main></body></html>"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.warc.gz").write_bytes(
        warc_bytes([("https://example.org/minutes", "response", html.encode())])
    )
    (tmp_path / "in" / "b.wet.gz").write_bytes(
        warc_bytes([("https://example.net/notes", "conversion", (PROSE * 2).encode())])
    )
    result = dg.materialize(
        [raw_crawl, extracted_pages],
        resources=resources(tmp_path / "data"),
        partition_key=PARTITION,
        run_config={"ops": {"raw_crawl": {"config": {"ingest_paths": [str(tmp_path / "in" / "*.gz")]}}}},
    )
    assert result.success
    manifest = load(tmp_path / "data", "raw_crawl")
    assert sorted(manifest["record_type"]) == ["conversion", "response"]
    pages = load(tmp_path / "data", "extracted_pages").sort("url")
    assert pages["url"].to_list() == ["https://example.net/notes", "https://example.org/minutes"]
    assert pages["title"].to_list() == ["", "Minutes"]
    assert all("library should extend its opening hours" in t for t in pages["text"])
    assert (pages["language"] == "en").all()


def test_cli_materializes_from_the_definitions(tmp_path):
    env = {**os.environ, "CRAWL2SERVE_DATA_ROOT": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "asset",
            "materialize",
            "-m",
            "crawl2serve.definitions",
            "--select",
            "raw_crawl",
            "--partition",
            PARTITION,
            "--config-json",
            json.dumps({"ops": {"raw_crawl": {"config": {"max_pages": 5}}}}),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = pl.read_parquet(tmp_path / "data" / "raw_crawl" / PARTITION / "data.parquet")
    assert manifest.height == 5


def test_definitions_load_with_jobs_and_schedules():
    from crawl2serve.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "raw_crawl",
        "extracted_pages",
        "clean_documents",
        "document_rejections",
        "deduplicated_documents",
        "duplicate_clusters",
    } <= keys
    job = defs.resolve_job_def("main")
    config = job.partitioned_config.get_run_config_for_partition_key(PARTITION)
    assert config["ops"]["clean_documents"]["config"]["profile"] == "documentation"
    assert defs.resolve_schedule_def("daily_recrawl").job_name == "main"
