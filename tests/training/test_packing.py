"""Unit tests for assets/training/packing.py: stable splits, document selection, sequence packing."""

from __future__ import annotations

import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from crawl2serve.assets.training.base_model import train_bpe_tokenizer
from crawl2serve.assets.training.packing import (
    assign_split,
    choose_split_key,
    newest_partitions,
    pack,
    pack_documents,
    select_documents,
    stable_bucket,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
KEYS = [f"https://site{i % 997}.example/page/{i}" for i in range(10_000)]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- splits ------------------------------------------------------------------------------------------


def test_stable_bucket_range_and_salt():
    values = [stable_bucket(k) for k in KEYS[:2000]]
    assert all(0.0 <= v < 1.0 for v in values)
    assert stable_bucket("a") == stable_bucket("a")
    assert stable_bucket("a", salt="x") != stable_bucket("a", salt="y")
    assert stable_bucket("ab", salt="") != stable_bucket("b", salt="a")  # salt and key cannot run together
    assert 0.45 < float(np.mean(values)) < 0.55


def test_split_is_stable_across_calls_and_processes():
    splits = assign_split(KEYS[:500], 0.3)
    assert assign_split(KEYS[:500], 0.3) == splits
    script = (
        "import json, sys\n"
        "from assets.training.packing import assign_split\n"
        "keys = json.load(sys.stdin)\n"
        "print(json.dumps(assign_split(keys, 0.3)))\n"
    )
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(KEYS[:500]),
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            check=True,
        )
        assert json.loads(out.stdout) == splits


def test_split_share_is_approximately_right():
    splits = assign_split(KEYS, 0.1)
    share = splits.count("validation") / len(splits)
    assert 0.08 <= share <= 0.12
    assert set(splits) == {"train", "validation"}
    assert set(assign_split(KEYS[:100], 0.0)) == {"train"}
    assert set(assign_split(KEYS[:100], 1.0)) == {"validation"}
    with pytest.raises(ValueError):
        assign_split(KEYS, 1.5)


def test_the_pretrain_share_takes_keys_from_train_only_and_never_moves_validation():
    plain = assign_split(KEYS, 0.1)
    three = assign_split(KEYS, 0.1, pretrain_share=0.5)
    assert [a for a, b in zip(plain, three) if b == "validation"] == ["validation"] * three.count("validation")
    assert three.count("validation") == plain.count("validation")  # the held-out pages are the same
    taken = three.count("pretrain") / plain.count("train")
    assert 0.45 <= taken <= 0.55 and set(three) == {"train", "validation", "pretrain"}
    assert assign_split(KEYS, 0.1, pretrain_share=0.5) == three  # stable
    with pytest.raises(ValueError, match="pretrain_share"):
        assign_split(KEYS, 0.1, pretrain_share=-0.1)


def test_no_key_lands_in_both_splits():
    rng = random.Random(0)
    hosts = [f"host{rng.randrange(300)}.example" for _ in range(5_000)]
    splits = assign_split(hosts, 0.2)
    split_of: dict[str, set[str]] = {}
    for host, split in zip(hosts, splits):
        split_of.setdefault(host, set()).add(split)
    assert all(len(s) == 1 for s in split_of.values())
    assert {next(iter(s)) for s in split_of.values()} == {"train", "validation"}


def test_choose_split_key_thresholds():
    hosts = [f"h{i}.example" for i in range(20)]
    urls = [f"https://{h}/p" for h in hosts]
    assert choose_split_key(urls, hosts) == "domain"  # exactly min_domains
    assert choose_split_key(urls[:19], hosts[:19]) == "url"
    assert choose_split_key(urls * 3, hosts * 3, min_domains=20) == "domain"  # distinct hosts count
    assert choose_split_key(urls[:5] * 10, hosts[:5] * 10, min_domains=5) == "domain"
    assert choose_split_key([], [], min_domains=1) == "url"
    with pytest.raises(ValueError):
        choose_split_key(urls, hosts[:3])


# --- selection ---------------------------------------------------------------------------------------


def make_docs() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": ["a1", "a2", "a3", "a4", "b1", "b2", "c1", "c2"],
            "host": ["a.com", "a.com", "a.com", "a.com", "b.com", "b.com", "c.com", "c.com"],
            "quality_score": [0.9, 0.5, 0.7, 0.7, 0.49, 0.8, None, float("nan")],
            "text": list("abcdefgh"),
        }
    )


def test_newest_partitions_keep_the_newest_crawl_days_that_hold_documents():
    frames = {
        "2026-11-21": pl.DataFrame({"doc_id": ["b"], "q": [0.5]}),
        "2026-11-20": pl.DataFrame({"doc_id": ["a"], "q": [0.9]}),
        "2026-11-22": pl.DataFrame({"doc_id": ["c"], "q": [0.7]}),
        "2026-11-23": pl.DataFrame(schema={"doc_id": pl.String, "q": pl.Float64}),  # crawled nothing yet
    }
    newest = newest_partitions(frames, 1)
    assert newest.to_dicts() == [{"doc_id": "c", "q": 0.7, "crawl_partition": "2026-11-22"}]
    assert newest_partitions(frames, 2)["crawl_partition"].to_list() == ["2026-11-21", "2026-11-22"]
    assert newest_partitions(frames, None)["doc_id"].to_list() == ["a", "b", "c"]
    with pytest.raises(ValueError, match="newest_partitions must be >= 1"):
        newest_partitions(frames, 0)
    with pytest.raises(ValueError, match="no documents in any partition"):
        newest_partitions({"2026-11-23": frames["2026-11-23"]}, 1)


def test_the_newest_crawl_brings_back_its_recrawls_of_pages_an_earlier_day_kept():
    """Global dedup keeps a re-crawled unchanged page on the day it was first kept; the newest crawl still holds it."""
    frames = {
        "2026-11-20": pl.DataFrame({"doc_id": ["a", "b", "x"], "q": [0.9, 0.5, 0.1]}),
        "2026-11-21": pl.DataFrame({"doc_id": ["c"], "q": [0.7]}),  # its one new page
        "2026-11-22": pl.DataFrame(schema={"doc_id": pl.String, "q": pl.Float64}),  # nothing new at all
    }
    clusters = {
        "2026-11-21": pl.DataFrame(
            {
                "doc_id": ["a2", "b", "c"],
                "cluster_id": ["a", "b", "c"],
                "duplicate_kind": ["earlier", "earlier", None],
                "earlier_partition": ["2026-11-20", "2026-11-20", None],
            }
        ),
        "2026-11-22": pl.DataFrame(
            {"doc_id": ["c"], "cluster_id": ["c"], "duplicate_kind": ["earlier"], "earlier_partition": ["2026-11-21"]}
        ),
    }
    upto21 = ("2026-11-20", "2026-11-21")
    day21 = newest_partitions(
        {k: frames[k] for k in upto21}, 1, earlier={k: v for k, v in clusters.items() if k in upto21}
    )
    assert sorted(day21.select("doc_id", "crawl_partition").rows()) == [
        ("a", "2026-11-20"),
        ("b", "2026-11-20"),
        ("c", "2026-11-21"),
    ]  # x was not crawled again: not in the newest crawl
    day22 = newest_partitions(frames, 1, earlier=clusters)  # kept nothing, re-crawled c
    assert day22.select("doc_id", "crawl_partition").rows() == [("c", "2026-11-21")]
    assert newest_partitions(frames, 1)["doc_id"].to_list() == ["c"]  # without the clusters: the newest day that kept


def test_select_threshold_is_inclusive():
    out = select_documents(make_docs(), min_quality=0.5, max_docs_per_domain=None)
    assert out["doc_id"].to_list() == ["a1", "a2", "a3", "a4", "b2"]  # == 0.5 kept; 0.49, null, NaN dropped
    assert out.columns == make_docs().columns


def test_select_caps_keep_the_best_per_domain():
    out = select_documents(make_docs(), min_quality=0.0, max_docs_per_domain=2)
    # a.com: 0.9 (a1) first, then the 0.7 tie goes to the smaller doc_id (a3 before a4)
    assert out["doc_id"].to_list() == ["a1", "a3", "b1", "b2"]
    assert select_documents(make_docs(), 0.0, 0).height == 0


def test_select_is_deterministic_and_order_independent():
    df = make_docs()
    first = select_documents(df, 0.0, 1)
    assert first.equals(select_documents(df, 0.0, 1))
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=3)
    again = select_documents(shuffled, 0.0, 1)
    assert sorted(again["doc_id"].to_list()) == sorted(first["doc_id"].to_list()) == ["a1", "b2"]
    assert select_documents(df, 0.0, 1, seed=7).equals(first)


# --- packing -----------------------------------------------------------------------------------------


def test_pack_shapes_and_separators():
    docs = [[10, 11, 12], [20], [30, 31, 32, 33, 34], []]
    rows = pack(docs, seq_len=4, eos_id=1)
    # stream: 10 11 12 1 | 20 1 30 31 | 32 33 34 1 | 1 (tail of 1 dropped)
    assert rows.dtype == np.int32 and rows.shape == (3, 4)
    assert rows.tolist() == [[10, 11, 12, 1], [20, 1, 30, 31], [32, 33, 34, 1]]


def test_pack_with_bos_and_padding():
    docs = [[10, 11], [20]]
    rows = pack(docs, seq_len=3, eos_id=1, bos_id=0, drop_remainder=False)
    # stream: 0 10 11 1 0 20 1 -> padded with eos to 9
    assert rows.tolist() == [[0, 10, 11], [1, 0, 20], [1, 1, 1]]
    assert pack(docs, seq_len=7, eos_id=1, bos_id=0, drop_remainder=False).shape == (1, 7)  # exact: no pad row


def test_pack_conserves_tokens_on_random_documents():
    rng = np.random.default_rng(0)
    docs = [rng.integers(5, 1000, size=int(n)).tolist() for n in rng.integers(0, 300, size=500)]
    seq_len, eos = 128, 2
    rows = pack((d for d in docs), seq_len, eos)  # any iterable
    stream = np.concatenate([np.array(d + [eos], dtype=np.int32) for d in docs])
    n_rows = stream.size // seq_len
    assert rows.shape == (n_rows, seq_len)
    assert rows.size == stream.size - stream.size % seq_len  # only the tail is lost
    assert np.array_equal(rows.ravel(), stream[: rows.size])
    # every complete document ends with eos at its stream position
    ends = np.cumsum([len(d) + 1 for d in docs]) - 1
    assert np.all(rows.ravel()[ends[ends < rows.size]] == eos)


def test_pack_accepts_numpy_documents():
    docs = [np.arange(5, 10), np.arange(20, 23, dtype=np.int64)]
    assert pack(docs, 3, eos_id=1).tolist() == [[5, 6, 7], [8, 9, 1], [20, 21, 22]]


def test_pack_empty_input():
    for docs in ([], [[]], [[1, 2]]):
        rows = pack(docs, seq_len=8, eos_id=0)
        assert rows.shape == (0, 8) and rows.dtype == np.int32
    with pytest.raises(ValueError):
        pack([[1]], seq_len=0, eos_id=0)


def test_pack_documents_with_trained_tokenizer():
    rng = random.Random(0)
    words = ["packing", "tokens", "into", "rows", "café", "😀", "def", "return\tx\n"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 60))) for _ in range(400)]
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    rows, n_tokens = pack_documents(texts, tok, seq_len=64, batch_size=37)
    expected = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert n_tokens == sum(map(len, expected))
    stream = [i for ids in expected for i in ids + [tok.eos_token_id]]
    assert rows.shape == (len(stream) // 64, 64)
    assert rows.ravel().tolist() == stream[: rows.size]
    # decoding the concatenated rows gives the texts back, joined by eos
    decoded = tok.decode(rows.ravel().tolist())
    assert decoded.split(tok.eos_token)[:5] == texts[:5]

    with_bos, _ = pack_documents(texts[:10], tok, seq_len=16, add_bos=True)
    assert with_bos[0, 0] == tok.bos_token_id
    empty, n_empty = pack_documents([], tok, seq_len=16)
    assert empty.shape == (0, 16) and n_empty == 0
