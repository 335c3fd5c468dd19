"""Unit tests for assets/corpus/dedup.py: exact groups, MinHash signatures, LSH + verification, clusters."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from crawl2serve.assets.corpus import dedup
from crawl2serve.assets.corpus.dedup import (
    EMPTY_SIGNATURE_VALUE,
    MinHashLSH,
    candidate_probability,
    exact_duplicate_groups,
    jaccard,
    minhash_signatures,
    near_duplicate_clusters,
    shingle_sets,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
CFG = MinHashLSH()


def _vocab(rng: np.random.Generator, size: int = 5_000) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=int(rng.integers(3, 10)))) for _ in range(size)]


VOCAB = _vocab(np.random.default_rng(0))


def random_words(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [VOCAB[i] for i in rng.integers(0, len(VOCAB), n)]


def edit(words: list[str], positions: list[int], seed: int) -> list[str]:
    """Replace the words at `positions` with words from outside the vocabulary (digits: never in VOCAB)."""
    out = list(words)
    for k, p in enumerate(positions):
        out[p] = f"x{seed}y{k}"
    return out


def spread(count: int, length: int, offset: int = 0) -> list[int]:
    """`count` positions far apart, so each edit removes `ngram` distinct shingles."""
    step = length // (count + 1)
    return [offset + step * (i + 1) for i in range(count)]


# ---------------------------------------------------------------- exact duplicates


def test_exact_duplicate_groups_keeps_best_quality_then_smallest_id():
    hashes = ["h1", "h2", "h1", "h1", "h3", "h2"]
    quality = [0.5, 0.9, 0.7, 0.7, 0.1, float("nan")]
    ids = ["d", "a", "c", "b", "e", "0"]
    rep = exact_duplicate_groups(hashes, quality, ids)
    # h1: docs 0, 2, 3 -> 2 and 3 tie on 0.7, id "b" < "c" -> doc 3. h2: NaN ranks lowest despite id "0".
    assert rep.tolist() == [3, 1, 3, 3, 4, 1]
    assert (rep == np.arange(6)).tolist() == [False, True, False, True, True, False]
    assert np.bincount(rep)[rep].tolist() == [3, 2, 3, 3, 1, 2]


def test_exact_duplicate_groups_edge_cases():
    assert exact_duplicate_groups([], [], []).size == 0
    assert exact_duplicate_groups(["a", "b"], [1.0, 1.0], ["x", "y"]).tolist() == [0, 1]
    with pytest.raises(ValueError):
        exact_duplicate_groups(["a"], [1.0, 2.0], ["x"])


# ---------------------------------------------------------------- near duplicates


def test_near_duplicate_pair_is_clustered_and_better_copy_kept():
    base = random_words(500, seed=1)
    near = edit(base, spread(4, 500), seed=1)  # 4 words changed in 500
    other = random_words(500, seed=2)
    texts = [" ".join(base), " ".join(near), " ".join(other)]
    res = near_duplicate_clusters(texts, ["orig", "copy", "other"], [0.4, 0.6, 0.9], CFG)

    exact = jaccard(*shingle_sets(texts[:2], CFG))
    assert 0.9 < exact < 1.0
    assert res.cluster_id.tolist() == ["copy", "copy", "other"]
    assert res.cluster_size.tolist() == [2, 2, 1]
    assert res.is_kept.tolist() == [False, True, True]
    assert res.max_similarity[:2] == pytest.approx([exact, exact])
    assert res.max_similarity[2] == 0.0
    assert (res.candidate_pairs, res.verified_pairs, res.rejected_pairs) == (1, 1, 0)


def test_dissimilar_documents_are_not_clustered():
    texts = [" ".join(random_words(300, seed=100 + i)) for i in range(30)]
    res = near_duplicate_clusters(texts, [f"d{i}" for i in range(30)], [0.5] * 30, CFG)
    assert res.candidate_pairs == 0 and res.verified_pairs == 0
    assert res.is_kept.all()
    assert (res.cluster_size == 1).all()
    assert res.cluster_id.tolist() == [f"d{i}" for i in range(30)]


def test_band_collision_below_threshold_is_rejected_and_both_kept():
    shared = random_words(600, seed=3)
    a = shared + random_words(200, seed=4)
    b = shared + random_words(200, seed=5)
    texts = [" ".join(a), " ".join(b)]
    exact = jaccard(*shingle_sets(texts, CFG))
    assert 0.5 < exact < 0.7  # clearly below the 0.8 threshold
    # 40 one-row bands: P(candidate) = 1 - (1 - s)**40 ~ 1 at s ~ 0.6, so LSH proposes the pair.
    loose = MinHashLSH(bands=40, rows=1, threshold=0.8)
    res = near_duplicate_clusters(texts, ["a", "b"], [0.1, 0.9], loose)
    assert (res.candidate_pairs, res.verified_pairs, res.rejected_pairs) == (1, 0, 1)
    assert res.is_kept.tolist() == [True, True]
    assert res.cluster_size.tolist() == [1, 1]
    assert res.cluster_id.tolist() == ["a", "b"]
    assert res.max_similarity.tolist() == [0.0, 0.0]
    # Same candidates, lower threshold: now the verification accepts the pair.
    res = near_duplicate_clusters(texts, ["a", "b"], [0.1, 0.9], MinHashLSH(bands=40, rows=1, threshold=0.5))
    assert (res.verified_pairs, res.rejected_pairs) == (1, 0)
    assert res.is_kept.tolist() == [False, True]


def test_transitive_clusters_with_stable_ids():
    a = random_words(500, seed=6)
    b = edit(a, spread(5, 500, offset=0), seed=7)
    c = edit(b, spread(5, 500, offset=20), seed=8)
    cfg = MinHashLSH(threshold=0.85)
    sets = shingle_sets([" ".join(w) for w in (a, b, c)], cfg)
    assert jaccard(sets[0], sets[1]) >= 0.85 and jaccard(sets[1], sets[2]) >= 0.85
    assert jaccard(sets[0], sets[2]) < 0.85  # A and C only meet through B

    docs = {"A": " ".join(a), "B": " ".join(b), "C": " ".join(c), "Z": " ".join(random_words(500, seed=9))}
    quality = {"A": 0.5, "B": 0.5, "C": 0.2, "Z": 0.1}  # A and B tie: smallest id "A" is kept
    outcomes = []
    for order in (["A", "B", "C", "Z"], ["Z", "C", "B", "A"], ["B", "Z", "A", "C"]):
        res = near_duplicate_clusters([docs[k] for k in order], order, [quality[k] for k in order], cfg)
        assert res.verified_pairs == 2  # A-B and B-C; A-C is never an edge
        outcomes.append(
            {k: (res.cluster_id[i], int(res.cluster_size[i]), bool(res.is_kept[i])) for i, k in enumerate(order)}
        )
    expected = {"A": ("A", 3, True), "B": ("A", 3, False), "C": ("A", 3, False), "Z": ("Z", 1, True)}
    assert outcomes == [expected] * 3


def test_large_bucket_uses_star_and_chain_and_stays_one_cluster():
    text = " ".join(random_words(200, seed=10))
    m = 30  # > full_pairs_max_bucket = 16
    res = near_duplicate_clusters([text] * m, [f"id{i:02d}" for i in range(m)], [0.5] * m, CFG)
    assert res.largest_bucket == m
    assert res.candidate_pairs == 2 * m - 3  # star from the first member + chain, not m(m-1)/2 = 435
    assert res.verified_pairs == 2 * m - 3
    assert res.is_kept.sum() == 1 and res.is_kept[0]
    assert set(res.cluster_id) == {"id00"} and (res.cluster_size == m).all()
    assert (res.max_similarity == 1.0).all()

    small = near_duplicate_clusters([text] * 5, list("abcde"), [0.5] * 5, CFG)
    assert small.candidate_pairs == 10  # all pairs in a small bucket


def test_star_and_chain_survive_one_dissimilar_member_anywhere():
    members = np.arange(100, 120)  # 20 members > full_pairs_max_bucket
    pairs = dedup._bucket_pairs(members, full_max=16)
    assert len(pairs) == 2 * 20 - 3
    for outlier in members:  # every pair touching the outlier is rejected by verification
        edges = pairs[(pairs != outlier).all(axis=1)] - 100
        root = dedup._connected_components(20, edges)
        others = np.flatnonzero(members != outlier)
        assert len(set(root[others])) == 1, outlier


# ---------------------------------------------------------------- signatures


def test_signatures_shape_dtype_and_determinism_within_process():
    texts = [" ".join(random_words(300, seed=s)) for s in range(5)]
    s1 = minhash_signatures(texts, CFG)
    s2 = minhash_signatures(list(texts), CFG)
    assert s1.shape == (5, 112) and s1.dtype == np.uint32
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, minhash_signatures(texts, MinHashLSH(seed=7)))  # the seed matters


def test_signatures_identical_in_a_fresh_process_with_another_hash_seed():
    texts = [" ".join(random_words(300, seed=s)) for s in range(5)] + ["Short text", "", "Ünïcödé — text"]
    local = hashlib.sha256(minhash_signatures(texts, CFG).tobytes()).hexdigest()
    code = (
        "import hashlib, json, sys\n"
        "from assets.corpus.dedup import minhash_signatures, MinHashLSH\n"
        "texts = json.loads(sys.stdin.read())\n"
        "print(hashlib.sha256(minhash_signatures(texts, MinHashLSH()).tobytes()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=True,
    )
    assert out.stdout.strip() == local


def test_signatures_match_brute_force_minimum_over_shingle_sets(monkeypatch):
    texts = [" ".join(random_words(n, seed=20 + n)) for n in (1, 3, 7, 400, 1500)] + ["", "a b"]
    h = dedup._Hashers.of(CFG)
    expected = np.full((len(texts), CFG.num_perm), EMPTY_SIGNATURE_VALUE, dtype=np.uint32)
    for i, s in enumerate(shingle_sets(texts, CFG)):
        if s.size:
            expected[i] = ((h.perm_a * s[None, :] + h.perm_b) >> np.uint64(32)).min(axis=1)
    np.testing.assert_array_equal(minhash_signatures(texts, CFG), expected)
    # Tiny tokenizer chunks and permutation blocks that cut through documents give the same result.
    monkeypatch.setattr(dedup, "_CHUNK_BYTES", 50)
    monkeypatch.setattr(dedup, "_PERM_BLOCK_BYTES", 1)
    np.testing.assert_array_equal(minhash_signatures(texts, CFG), expected)
    assert [x.tolist() for x in shingle_sets(texts, CFG)] == [x.tolist() for x in shingle_sets(texts, MinHashLSH())]


def test_signature_agreement_estimates_jaccard():
    base = random_words(1000, seed=11)
    variants = [edit(base, spread(k, 1000), seed=12 + k) for k in (10, 30, 60)]
    texts = [" ".join(base)] + [" ".join(v) for v in variants]
    sets = shingle_sets(texts, CFG)
    sig = minhash_signatures(texts, CFG)
    exact = [jaccard(sets[0], sets[i]) for i in (1, 2, 3)]
    estimate = [float(np.mean(sig[0] == sig[i])) for i in (1, 2, 3)]
    assert exact[0] > 0.85 and 0.6 < exact[1] < 0.8 and exact[2] < 0.55  # a spread of similarities
    for e, x in zip(estimate, exact):
        assert abs(e - x) < 0.1, (estimate, exact)


def test_short_and_empty_documents():
    texts = ["", "   ", "!!! ...", "hello", "hello", "Hello, World!", "hello world", "one two three four five six"]
    sets = shingle_sets(texts, CFG)
    assert [s.size for s in sets] == [0, 0, 0, 1, 1, 1, 1, 2]  # short docs: one shingle of all words
    sig = minhash_signatures(texts, CFG)
    assert (sig[:3] == EMPTY_SIGNATURE_VALUE).all()
    assert (sig[3:] != EMPTY_SIGNATURE_VALUE).any(axis=1).all()

    res = near_duplicate_clusters(texts, [f"t{i}" for i in range(8)], [0.5] * 8, CFG)
    assert res.empty_documents == 3
    assert res.is_kept[:3].all() and (res.cluster_size[:3] == 1).all()  # empties are never candidates
    assert res.cluster_id[3:7].tolist() == ["t3", "t3", "t5", "t5"]  # punctuation and case do not matter
    assert res.is_kept.tolist() == [True, True, True, True, False, True, False, True]
    assert (res.candidate_pairs, res.verified_pairs) == (2, 2)

    cased = near_duplicate_clusters(texts, [f"t{i}" for i in range(8)], [0.5] * 8, MinHashLSH(lowercase=False))
    assert cased.cluster_id[5:7].tolist() == ["t5", "t6"]

    empty = near_duplicate_clusters([], [], [], CFG)
    assert empty.cluster_id.size == 0 and empty.candidate_pairs == 0


def test_tokenizer_matches_regex_words():
    text = "Café naïve—résumé: “quoted” words… emoji 😀 here; snake_case, 3.14 and x×y ÷ z ¡olé! «guillemets» done."
    words = re.findall(r"\w+", text.lower())
    assert shingle_sets([text])[0].tolist() == shingle_sets([" ".join(words)])[0].tolist()
    assert shingle_sets([text])[0].size == len(words) - CFG.ngram + 1


# ---------------------------------------------------------------- maths and helpers


def test_jaccard_and_candidate_probability():
    assert jaccard(np.array([1, 2, 3], np.uint64), np.array([2, 3, 4], np.uint64)) == 0.5
    assert jaccard(np.array([3, 1, 2, 2]), np.array([1, 2, 3])) == 1.0  # unsorted input is made a set
    assert jaccard(np.array([], np.uint64), np.array([1], np.uint64)) == 0.0
    assert candidate_probability(0.8) == pytest.approx(0.9235, abs=1e-4)
    assert candidate_probability(0.685) == pytest.approx(0.5, abs=0.01)  # the 14 x 8 half point
    assert candidate_probability(0.5) < 0.06
    with pytest.raises(ValueError):
        MinHashLSH(threshold=1.5)
