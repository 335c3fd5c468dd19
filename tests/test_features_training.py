"""Feast features and the training dataset: in-process materializations on the embedded crawl, point-in-time
correctness, online/offline agreement, `feast serve`, and the Redis online store."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from support import DOWNSTREAM, SEQ_LEN

from crawl2serve.assets.features.build import (
    DOCUMENT_FEATURES,
    DOMAIN_FEATURES,
    empty_tenant_spend,
    empty_tenant_stats,
)
from crawl2serve.resources.feast_store import FeastStore
from crawl2serve.resources.storage import DataRoot


def test_corpus_to_training_dataset_on_the_embedded_crawl(lineage):
    root, _, result = lineage
    assert result.success
    failed = [
        f"{e.asset_key.to_user_string()}:{e.check_name}" for e in result.get_asset_check_evaluations() if not e.passed
    ]
    assert not failed
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert set(meta) == {a.key.to_user_string() for a in DOWNSTREAM}

    ds = root / "training_dataset" / "_"
    manifest = json.loads((ds / "dataset.json").read_text())
    assert manifest["seq_len"] == SEQ_LEN and manifest["split_key"] == "url"  # one host: split by URL
    for split in ("train", "validation"):
        frame = pl.read_parquet(ds / f"{split}.parquet")
        assert frame.height == manifest["splits"][split]["sequences"] > 0
        assert frame.schema["input_ids"] == pl.Array(pl.Int32, SEQ_LEN)
    docs = pl.read_parquet(ds / "documents.parquet")
    train, val = (set(docs.filter(pl.col("split") == s)["url"]) for s in ("train", "validation"))
    assert train and val and not train & val
    assert (docs["quality_score"] >= 0.3).all()
    assert meta["training_dataset"]["train_tokens"].value > meta["training_dataset"]["validation_tokens"].value > 0

    from crawl2serve.assets.training.base_model import load_base

    model, tok = load_base(str(root / "base_model" / "_"))
    assert model.config.vocab_size == len(tok) <= 1024
    train_ids = pl.read_parquet(ds / "train.parquet")["input_ids"].to_numpy()
    assert train_ids.max() < len(tok) and (train_ids == tok.eos_token_id).any()


def test_online_store_agrees_with_the_newest_offline_rows(lineage):
    _, res, _ = lineage
    store = res["feast_store"].store()
    offline = pl.read_parquet(res["feast_store"].offline_dir / "document_features.parquet")
    latest = offline.sort("event_timestamp").unique("doc_id", keep="last").sort("doc_id")
    online = store.get_online_features(
        features=["document_features:quality_score", "document_features:cluster_size"],
        entity_rows=[{"doc_id": d} for d in latest["doc_id"]],
    ).to_dict()
    assert online["doc_id"] == latest["doc_id"].to_list()
    assert online["cluster_size"] == latest["cluster_size"].to_list()
    assert max(abs(a - b) for a, b in zip(online["quality_score"], latest["quality_score"])) < 1e-6


def _feast_dir_with(tmp_path: Path, docs: list[dict]) -> FeastStore:
    fs = FeastStore(data_root=DataRoot(url=str(tmp_path)))
    fs.offline_dir.mkdir(parents=True)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    base = {
        "domain": "example.org",
        "url": "https://example.org/",
        "word_count": 100,
        "char_count": 600,
        "language": "en",
        "language_score": 0.99,
        "cluster_size": 1,
        "c4_lines_removed": 0,
        "pii_replacements": 0,
        "created_timestamp": created,
    }
    pl.DataFrame([{**base, **d} for d in docs], schema=DOCUMENT_FEATURES).write_parquet(
        fs.offline_dir / "document_features.parquet"
    )
    pl.DataFrame(
        [
            {
                "domain": "example.org",
                "documents_kept": 1,
                "documents_rejected": 0,
                "rejection_share": 0.0,
                "duplicate_share": 0.0,
                "mean_quality": 0.5,
                "event_timestamp": created,
                "created_timestamp": created,
            }
        ],
        schema=DOMAIN_FEATURES,
    ).write_parquet(fs.offline_dir / "domain_features.parquet")
    empty_tenant_stats().write_parquet(fs.offline_dir / "tenant_stats.parquet")
    empty_tenant_spend().write_parquet(fs.offline_dir / "tenant_spend.parquet")
    fs.store().apply(fs.definitions())
    return fs


def test_the_gateway_pushes_each_tenants_spend_to_the_tenant_spend_view(tmp_path):
    """Budgets.push_spend (the gateway's spend pusher) writes the hour/day/month spend of every tenant it
    charged to the online store, where ``tenant_spend`` serves it."""
    import asyncio

    from crawl2serve.serving.gateway.budgets import Budgets, BudgetSettings, MemorySpendStore
    from crawl2serve.serving.gateway.metrics import GatewayMetrics
    from crawl2serve.serving.gateway.settings import FeastSettings
    from crawl2serve.serving.gateway.tiers import TierSource

    fs = _feast_dir_with(tmp_path, [{"doc_id": "d1", "quality_score": 0.5, "event_timestamp": datetime.now(UTC)}])
    store = MemorySpendStore()
    budgets = Budgets(BudgetSettings(), store, GatewayMetrics())
    now = datetime.now(UTC)

    async def charge_and_push() -> int:
        budgets.observe("acme", await store.add("acme", 0.125, now))
        budgets.observe("globex", await store.add("globex", 0.5, now - timedelta(hours=1)))
        source = TierSource(FeastSettings(repo_path=fs.repo_path, feast_dir=str(fs.feast_dir), redis=fs.redis))
        return await budgets.push_spend(source)

    assert asyncio.run(charge_and_push()) == 2
    online = (
        fs.store()
        .get_online_features(
            features=["tenant_spend:spend_usd_hour", "tenant_spend:spend_usd_day", "tenant_spend:spend_usd_month"],
            entity_rows=[{"tenant_id": "acme"}, {"tenant_id": "globex"}],
        )
        .to_dict()
    )
    assert online["spend_usd_hour"][0] == pytest.approx(0.125) and online["spend_usd_month"][0] == pytest.approx(0.125)
    same_day = (now - timedelta(hours=1)).date() == now.date()
    assert online["spend_usd_hour"][1] == 0 and online["spend_usd_day"][1] == pytest.approx(0.5 if same_day else 0)


def test_point_in_time_join_never_returns_a_value_written_after_the_entity_timestamp(tmp_path):
    t1, t3 = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)
    fs = _feast_dir_with(
        tmp_path,
        [
            {"doc_id": "d1", "quality_score": 0.2, "event_timestamp": t1},
            {"doc_id": "d1", "quality_score": 0.9, "event_timestamp": t3},
        ],
    )
    import pandas as pd

    entities = pd.DataFrame(
        {
            "doc_id": ["d1", "d1", "d1"],
            "domain": ["example.org"] * 3,
            "event_timestamp": [t1 - timedelta(days=1), t1 + timedelta(days=4), t3 + timedelta(days=1)],
        }
    )
    out = fs.store().get_historical_features(entity_df=entities, features=["document_features:quality_score"]).to_df()
    by_time = dict(zip(out["event_timestamp"], out["quality_score"]))
    before = by_time.get(t1 - timedelta(days=1))  # nothing existed yet (Feast's file store drops such rows)
    assert before is None or pd.isna(before)
    assert by_time[t1 + timedelta(days=4)] == pytest.approx(0.2)  # the later 0.9 is not visible
    assert by_time[t3 + timedelta(days=1)] == pytest.approx(0.9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_feast_serve_answers_get_online_features(lineage):
    _, res, _ = lineage
    fs = res["feast_store"]
    latest = (
        pl.read_parquet(fs.offline_dir / "document_features.parquet")
        .sort("event_timestamp")
        .unique("doc_id", keep="last")
        .head(3)
    )
    port = _free_port()
    feast_bin = str(Path(sys.executable).with_name("feast"))
    proc = subprocess.Popen(
        [feast_bin, "-c", fs.repo_path, "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log"],
        env={**os.environ, **fs.environment()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = json.dumps(
            {
                "features": ["document_features:quality_score", "document_features:word_count"],
                "entities": {"doc_id": latest["doc_id"].to_list()},
            }
        ).encode()
        deadline, answer = time.monotonic() + 90, None
        while time.monotonic() < deadline and answer is None:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/get-online-features",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                answer = json.loads(urllib.request.urlopen(req, timeout=5).read())
            except OSError:
                time.sleep(0.5)
        assert answer is not None, "feast serve did not answer within 90 s"
        names = answer["metadata"]["feature_names"]
        values = dict(zip(names, (r["values"] for r in answer["results"])))
        assert values["doc_id"] == latest["doc_id"].to_list()
        assert values["word_count"] == latest["word_count"].to_list()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379 (CI has one; start redis-server to run this)")
def test_redis_online_store_production_variant(lineage, tmp_path):
    _, res, _ = lineage
    shutil.copytree(res["feast_store"].offline_dir, tmp_path / "feast" / "offline")
    fs = FeastStore(
        data_root=DataRoot(url=str(tmp_path)), yaml_file="feature_store.redis.yaml", redis="127.0.0.1:6379,db=11"
    )
    store = fs.store()
    assert type(store.config.online_store).__name__ == "RedisOnlineStoreConfig"
    store.apply(fs.definitions())
    store.materialize_incremental(end_date=datetime.now(UTC))
    latest = (
        pl.read_parquet(fs.offline_dir / "document_features.parquet")
        .sort("event_timestamp")
        .unique("doc_id", keep="last")
        .sort("doc_id")
    )
    online = store.get_online_features(
        features=["document_features:word_count"], entity_rows=[{"doc_id": d} for d in latest["doc_id"]]
    ).to_dict()
    assert online["word_count"] == latest["word_count"].to_list()
