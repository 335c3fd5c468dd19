"""Benchmark MinHash signatures and the full near-duplicate pass on one CPU core.

    python bench/bench_minhash.py [N_DOCS]      # default 5,000 documents of ~1,000 words

Builds N synthetic documents from a fixed-seed Zipf vocabulary, ~10% of them near-duplicates of an
earlier document (5-15 words replaced), pins the process to one core, and times:

* ``minhash_signatures`` (112 permutations, word 5-grams);
* ``near_duplicate_clusters`` end to end (signatures, LSH, exact verification, union-find);
* a plain-Python baseline on a subset: ``re.findall`` words, a set of 5-gram hashes
  (blake2b, 8-byte digests), then numpy's min over 112 ``a*x+b`` permutations of the same form per document.

Each figure is the median of 3 runs.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from crawl2serve.assets.corpus.dedup import MinHashLSH, minhash_signatures, near_duplicate_clusters

WORDS_PER_DOC = 1_000
VOCAB_SIZE = 50_000
DUP_FRACTION = 0.10
BASELINE_DOCS = 500


def synthetic_corpus(n: int, seed: int = 7) -> tuple[list[str], list[str], list[float], dict[int, int]]:
    """n documents of ~1,000 Zipf-distributed words; returns texts, ids, quality, {duplicate: source}."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, size=rng.integers(2, 11))) for _ in range(VOCAB_SIZE)])
    p = 1.0 / np.arange(1, VOCAB_SIZE + 1)
    p /= p.sum()
    punct = np.array(["", "", "", "", "", "", ",", ".", ";"])
    texts: list[str] = []
    sources: dict[int, int] = {}
    for i in range(n):
        if i > 10 and rng.random() < DUP_FRACTION:
            sources[i] = int(rng.integers(0, i))
            words = texts[sources[i]].split(" ")
            for j in rng.choice(len(words), size=int(rng.integers(5, 16)), replace=False):
                words[j] = str(vocab[rng.integers(0, VOCAB_SIZE)])
            texts.append(" ".join(words))
            continue
        length = int(rng.integers(WORDS_PER_DOC * 9 // 10, WORDS_PER_DOC * 11 // 10))
        tokens = np.char.add(vocab[rng.choice(VOCAB_SIZE, size=length, p=p)], rng.choice(punct, size=length))
        texts.append(" ".join(tokens.tolist()).capitalize())
    ids = [f"doc-{i:06d}" for i in range(n)]
    quality = rng.random(n).round(3).tolist()
    return texts, ids, quality, sources


def baseline_signatures(texts: list[str], cfg: MinHashLSH) -> np.ndarray:
    """Straightforward per-document MinHash: Python shingle set, stable blake2b hashes, numpy min."""
    rng = np.random.default_rng(cfg.seed)
    a = rng.integers(0, 2**63, cfg.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, cfg.num_perm, dtype=np.uint64)
    word_re = re.compile(r"\w+")
    sig = np.empty((len(texts), cfg.num_perm), dtype=np.uint32)
    for i, text in enumerate(texts):
        words = word_re.findall(text.lower())
        grams = {" ".join(words[j : j + cfg.ngram]) for j in range(max(1, len(words) - cfg.ngram + 1))}
        x = np.fromiter(
            (int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") for g in grams),
            dtype=np.uint64,
            count=len(grams),
        )
        sig[i] = ((a[:, None] * x[None, :] + b[:, None]) >> np.uint64(32)).min(axis=1)
    return sig


def timed(fn, *args, repeat: int = 3):
    """Result and median wall time of `repeat` calls (the machine may be shared: the median resists noise)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - start)
    return out, float(np.median(times))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})  # one core: the docs/s figures below are per core
    cfg = MinHashLSH()

    texts, ids, quality, sources = synthetic_corpus(n)
    words = sum(len(t.split()) for t in texts) / n
    minhash_signatures(texts[:50], cfg)  # warm-up (constants, page faults)

    _, t_sig = timed(minhash_signatures, texts, cfg)
    result, t_full = timed(near_duplicate_clusters, texts, ids, quality, cfg)
    m = min(BASELINE_DOCS, n)
    _, t_base = timed(baseline_signatures, texts[:m], cfg)

    sig_rate, full_rate, base_rate = n / t_sig, n / t_full, m / t_base
    print(f"{n:,} docs, {words:,.0f} words/doc, {len(sources)} near-duplicates injected")
    print(f"pinned to CPU core {core}: every figure is for ONE core; median of 3 runs")
    print(
        f"config: {cfg.ngram}-grams, {cfg.bands} bands x {cfg.rows} rows = {cfg.num_perm} perms, "
        f"threshold {cfg.threshold}"
    )
    print()
    print(f"| {'measure':<48} | {'docs':>6} | {'seconds':>8} | {'docs/s/core':>11} |")
    print(f"|{'-' * 50}|{'-' * 8}|{'-' * 10}|{'-' * 13}|")
    rows = [
        ("minhash_signatures (vectorized)", n, t_sig, sig_rate),
        ("near_duplicate_clusters (end to end)", n, t_full, full_rate),
        ("baseline: Python shingle set + blake2b + np.min", m, t_base, base_rate),
    ]
    for name, docs, secs, rate in rows:
        print(f"| {name:<48} | {docs:>6,} | {secs:>8.3f} | {rate:>11,.0f} |")
    print()
    print(
        f"signatures vs baseline: {sig_rate / base_rate:.1f}x; "
        f"end to end vs baseline signatures: {full_rate / base_rate:.1f}x"
    )
    dup = result.cluster_size > 1
    found = sum(result.cluster_id[d] == result.cluster_id[src] for d, src in sources.items())
    print(
        f"dedup: {result.candidate_pairs} candidate pairs, {result.verified_pairs} verified, "
        f"{result.rejected_pairs} rejected; {int((~result.is_kept).sum())} docs removed from "
        f"{len(set(result.cluster_id[dup]))} clusters; injected duplicates clustered with their source: "
        f"{found}/{len(sources)}; largest bucket {result.largest_bucket}"
    )
    print(
        f"phases (last run): signatures {result.signature_seconds:.3f}s, lsh {result.lsh_seconds:.3f}s, "
        f"verify {result.verify_seconds:.3f}s"
    )


if __name__ == "__main__":
    main()
