"""The corpus stages shard by shard on a real local Ray (the session's ``ray_session``): ingest from a
``warc.paths.gz`` list, one WARC file per shard, the same tables as in process, and a shard that fails for its own
data recorded while the others commit. The pages are real documentation pages (tests/corpus/fixtures)."""

import gzip
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from crawl2serve.assets.corpus.cleaned import clean_documents
from crawl2serve.assets.corpus.extracted import extracted_pages
from crawl2serve.assets.crawl.assets import raw_crawl
from crawl2serve.resources.corpus_executor import CorpusExecutor
from crawl2serve.resources.storage import DataRoot
from tests.support import PARTITION, checks, facts, load, records, resources, warc_bytes

FIXTURES = Path(__file__).parent / "fixtures"
PAGES = [
    "pg-btree-intro.html",
    "python-faq-installed.html",
    "sphinx-support.html",
    "javadoc-RandomAccess.html",
    "faq-ru-kernel.windows-1251.html",
]
FILES = 4
STAGES = [raw_crawl, extracted_pages, clean_documents]


@pytest.fixture(scope="module")
def inbox(tmp_path_factory) -> Path:
    """FILES WARC files of the real pages (each under URLs of its own), and a gzip path list naming them by
    relative path, plus one file that is missing."""
    inbox = tmp_path_factory.mktemp("inbox")
    (inbox / "segments").mkdir()
    for i in range(FILES):
        body = [(f"https://docs.example.org/{i}/{n}", "response", (FIXTURES / n).read_bytes()) for n in PAGES]
        (inbox / "segments" / f"{i}.warc.gz").write_bytes(warc_bytes(body))
    lines = [f"segments/{i}.warc.gz" for i in range(FILES)] + ["segments/missing.warc.gz"]
    (inbox / "warc.paths.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return inbox


def materialize(root: Path, inbox: Path, executor: CorpusExecutor, selection=STAGES):
    ops = {
        "raw_crawl": {"config": {"ingest_paths": [str(inbox / "warc.paths.gz")]}},
        "clean_documents": {"config": {"profile": "documentation", "languages": []}},
    }
    names = {a.op.name for a in selection}
    return dg.materialize(
        STAGES,
        resources=resources(root, executor),
        partition_key=PARTITION,
        run_config={"ops": {k: v for k, v in ops.items() if k in names}},
        selection=selection,
    )


def meta(result) -> dict:
    return {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}


@pytest.fixture(scope="module")
def runs(inbox, tmp_path_factory, ray_session):
    """(data root, result) in process and on Ray (2 workers), from the same files."""
    out = {}
    for name, executor in (("in_process", CorpusExecutor(backend="in_process")), ("ray", CorpusExecutor())):
        root = tmp_path_factory.mktemp(name)
        result = materialize(root, inbox, executor)
        assert result.success
        out[name] = (root, result)
    return out


def test_ray_gives_the_tables_the_stages_give_in_process(runs):
    (ref, _), (root, result) = runs["in_process"], runs["ray"]
    assert not {k: v for k, v in checks(result).items() if not v}
    for asset in ("raw_crawl", "extracted_pages", "clean_documents", "document_rejections"):
        ours, theirs = load(root, asset), load(ref, asset)
        if "fetch_time" in ours.columns and asset == "raw_crawl":
            ours, theirs = ours.drop("fetch_time"), theirs.drop("fetch_time")
        assert ours.height > 0, asset
        assert ours.drop("warc_file").equals(theirs.drop("warc_file")) if asset == "raw_crawl" else ours.equals(theirs)
    pages = load(root, "extracted_pages")
    assert pages.height == FILES * len(PAGES) == pages["url"].n_unique()
    kept, rejected = load(root, "clean_documents"), load(root, "document_rejections")
    assert kept.height + rejected.height == pages.height and kept.height > 0


def test_the_run_is_one_shard_per_warc_file_in_the_metadata_and_the_file(runs):
    root, result = runs["ray"]
    m = meta(result)
    for asset in ("extracted_pages", "clean_documents"):
        assert m[asset]["executor"].value == "ray, 2 CPUs"  # the session's local Ray
        assert (m[asset]["shards"].value, m[asset]["failed_shards"].value) == (FILES, 0)
        assert m[asset]["docs_per_s"].value > 0 and m[asset]["worker_peak_rss_mb"].value > 0
        assert m[asset]["docs_per_cpu_s"].value > 0 and m[asset]["cores_used"].value > 0
    parts = DataRoot(url=str(root)).parquet_parts(str(root / "extracted_pages" / PARTITION / "data.parquet"))
    assert [(label.rsplit("/", 1)[1], rows) for label, rows, _ in parts] == [
        (f"{i}.warc.gz", len(PAGES)) for i in range(FILES)
    ]
    for asset in ("extracted_pages", "clean_documents", "document_rejections"):
        assert sorted(p.name for p in (root / asset / PARTITION).iterdir()) == ["data.parquet"], "staging is gone"


def test_a_listed_file_that_is_missing_is_recorded_and_the_others_commit(runs, inbox):
    _, result = runs["ray"]
    crawl = meta(result)["raw_crawl"]
    summary = facts(crawl["summary"])
    assert (summary["files"], summary["failed_files"]) == (str(FILES + 1), "1")
    (failed,) = records(crawl["failed_files"])
    assert failed["file"] == str(inbox / "segments" / "missing.warc.gz") and "FileNotFoundError" in failed["error"]


def test_a_shard_that_fails_for_its_own_data_is_recorded_and_the_rest_commit(runs, inbox, tmp_path):
    root, _ = runs["in_process"]
    data = tmp_path / "data"
    result = materialize(data, inbox, CorpusExecutor(), selection=[raw_crawl])
    assert result.success
    (inbox / "segments" / "2.warc.gz").rename(tmp_path / "gone.warc.gz")  # listed in the manifest, now unreadable
    try:
        result = materialize(data, inbox, CorpusExecutor(), selection=[extracted_pages])
    finally:
        (tmp_path / "gone.warc.gz").rename(inbox / "segments" / "2.warc.gz")
    assert result.success
    m = meta(result)["extracted_pages"]
    assert (m["shards"].value, m["failed_shards"].value) == (FILES, 1)
    (failure,) = records(m["shard_failures"])
    assert failure["source"].endswith("/2.warc.gz") and "FileNotFoundError" in failure["error"]
    pages = load(data, "extracted_pages")
    assert pages.height == (FILES - 1) * len(PAGES)
    assert not pages["url"].str.contains("/2/").any()
    assert pages.equals(load(root, "extracted_pages").filter(~pl.col("url").str.contains("/2/")))
    assert m["failures"].value == len(PAGES)  # the lost shard's pages count as failed pages
    assert checks(result)["extracted_pages:extraction_failure_share"] is False  # 25% failed: the warning fires
