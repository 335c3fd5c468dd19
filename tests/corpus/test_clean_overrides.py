"""Typed threshold overrides from run config, in a real in-process materialization of ``clean_documents``.

Two real pages of the fixture (``fixtures/fineweb_datatrove.jsonl.gz``) that the ``fineweb`` profile drops:
git's gitprotocol-http page (a kept line holds ``{``: C4's curly-bracket rule, a bool) and a javadoc page
whose repeated 5-grams cover more than 15% of it (Gopher's ``dup_n_grams``, a tuple of (n, share) pairs).
The run config switches the bool off and replaces the tuple; both pages are then kept, and the values
arrive typed (``false`` stays ``False``, ``[[5, 0.9]]`` becomes ``((5, 0.9),)``).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from crawl2serve.assets.corpus.cleaned import clean_documents
from crawl2serve.assets.corpus.cleaning import clean_document
from crawl2serve.assets.corpus.extract import content_hash, doc_id
from crawl2serve.assets.corpus.extracted import SCHEMA
from crawl2serve.assets.corpus.thresholds import PROFILES
from crawl2serve.assets.partitions import crawl_partitions
from crawl2serve.resources.corpus_executor import CorpusExecutor
from crawl2serve.resources.io_manager import ParquetIOManager
from crawl2serve.resources.storage import DataRoot

PARTITION = "2026-11-20"
FIXTURE = Path(__file__).parent / "fixtures" / "fineweb_datatrove.jsonl.gz"
PAGES = {
    "git-doc_1%3a2.39.5-0+deb12u3_all/usr/share/doc/git-doc/gitprotocol-http.html": "curly_bracket",
    "openjdk-17-doc_17.0.21.1+2-1~deb12u1_all/usr/share/doc/openjdk-17-jre-headless/api/java.management/java/lang/"
    "management/class-use/ThreadInfo.html": "dup_5_gram_chars>0.15",
}
OVERRIDES = {"c4_quality": {"filter_curly_bracket": False}, "gopher_repetition": {"dup_n_grams": [[5, 0.9]]}}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as fh:
        texts = {r["id"]: r["text"] for r in map(json.loads, fh) if r["id"] in PAGES}
    assert set(texts) == set(PAGES)
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    rows = [
        (
            doc_id(u),
            f"file:///{u}",
            f"file:///{u}",
            "localhost",
            u.rsplit("/", 1)[-1],
            t,
            "en",
            0.99,
            content_hash(t),
            "utf-8",
            len(t),
            len(t),
            now,
        )
        for u, t in texts.items()
    ]
    root = tmp_path_factory.mktemp("data")
    out = root / "extracted_pages" / PARTITION
    out.mkdir(parents=True)
    pl.DataFrame(rows, schema=SCHEMA, orient="row").write_parquet(out / "data.parquet")
    (root / "texts.json").write_text(json.dumps(texts))
    return root


def materialize(root: Path, config: dict, **kw):
    data_root = DataRoot(url=str(root))
    upstream = dg.SourceAsset(key="extracted_pages", partitions_def=crawl_partitions)  # read from the data root
    return dg.materialize(
        [upstream, clean_documents],
        partition_key=PARTITION,
        resources={
            "data_root": data_root,
            "io_manager": ParquetIOManager(data_root=data_root),
            "corpus_executor": CorpusExecutor(backend="in_process"),
        },
        run_config={"ops": {"clean_documents": {"config": config}}},
        **kw,
    )


def test_bool_and_tuple_thresholds_are_overridden_from_run_config(root):
    result = materialize(root, {"profile": "fineweb", "overrides": OVERRIDES})  # main: refused (no such schema)
    assert result.success
    kept = pl.read_parquet(root / "clean_documents" / PARTITION / "data.parquet")
    assert kept.height == 2
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["clean_documents"]["overrides"].value == {
        "c4_quality.filter_curly_bracket": False,
        "gopher_repetition.dup_n_grams": [[5, 0.9]],
    }
    order = "gopher_repetition -> gopher_quality -> c4_quality -> fineweb_quality"
    assert meta["clean_documents"]["rule_order"].value == order
    texts = json.loads((root / "texts.json").read_text())
    for page, reason in PAGES.items():  # without the overrides the profile drops both
        assert clean_document(texts[page], PROFILES["fineweb"]).reason == reason


def test_an_override_of_the_wrong_type_is_refused_naming_the_field(root):
    with pytest.raises(dg.DagsterInvalidConfigError, match=r"overrides:c4_quality:filter_curly_bracket.*Bool"):
        materialize(root, {"profile": "fineweb", "overrides": {"c4_quality": {"filter_curly_bracket": 0}}})
    bad_pair = {"gopher_repetition": {"dup_n_grams": [[5.5, 0.9]]}}
    result = materialize(root, {"profile": "fineweb", "overrides": bad_pair}, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "'gopher_repetition.dup_n_grams[0][0]': expected an int, got 5.5" in str(failure.event_specific_data.error)
