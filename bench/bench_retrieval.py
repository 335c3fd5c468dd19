"""Retrieval: quality of BM25, dense and hybrid search, latency of a 10k-chunk index, and index build speed.

    .venv/bin/python bench/bench_retrieval.py                         # 10,000 chunks: recall, p50, build rate
    .venv/bin/python bench/bench_retrieval.py --embedders --model data/base_model/_   # + the embedder candidates
    .venv/bin/python bench/bench_retrieval.py --cache --corpus /tmp/pydoc-pages.parquet   # + the semantic cache

The corpus is what the pydoc crawl serves: the plain-text documentation of every importable standard-library
module and submodule (then a few installed libraries': numpy, polars, yaml, httpx, pydantic, fsspec) (``pydoc.render_doc(..., renderer=pydoc.plaintext)``), chunked as ``retrieval_index`` chunks
(200 tokens, overlap 40, headings), cut at ``--chunks``. Documents are the modules' pages, URLs their names.

* **build**: ``build_version`` (chunking, the embedder's fit + encode, bm25s, Qdrant local
  upserts) timed ``--repeats`` times; chunks/s of wall time and per CPU-second of the process (user + sys:
  per core, whatever the threads);
* **quality**: recall@5, recall@10 and MRR of bm25 / dense / hybrid on the generated query set
  (``assets/retrieval/evaluation.py``: sentence, heading, paraphrase; ``--queries`` of each; ``--seeds``), the
  hybrid both by the version's fusion (convex, alpha 0.85) and by the others (``hybrid-rrf60``, convex alphas);
* **latency**: one search at a time through ``RetrievalIndex.search`` (query embedding, BM25, Qdrant, RRF),
  the three modes alternating, ``--repeats`` passes over 200 queries; p50 and p95 in ms;
* ``--embedders``: the candidates for the embedded default on the same query set over the first 2,000
  chunks: LSA 256 (word 1-2-grams; the default), LSA 128, LSA 256 unigrams, and the project's tiny Llama
  (``--model``: a ``base_model`` folder) mean-pooled over its last hidden states; dense recall@10 and MRR each;
* ``--cache``: the semantic cache's hit rate on same-question pairs (a chunk's sentence and its paraphrase) and
  false-hit rate on different-question pairs (a sentence and the next sampled chunk's paraphrase), by threshold.

The machine is shared (2 cores, other work running): figures vary between runs; the script prints the load.
"""

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crawl2serve.assets.retrieval.chunking import Chunker, indexed_text
from crawl2serve.assets.retrieval.embeddings import LsaEmbedder, ProjectionEmbedder
from crawl2serve.assets.retrieval.evaluation import QuerySet, evaluate, summarize
from crawl2serve.assets.retrieval.fusion import ConvexFusion, ReciprocalRankFusion
from crawl2serve.assets.retrieval.index import MODES, IndexSettings, RetrievalIndex, build_version

EXTRA = ("numpy", "polars", "yaml", "httpx", "pydantic", "fsspec")  # installed libraries' pages after the stdlib's
SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3", "ensurepip"}


def stdlib_modules() -> list[str]:
    """The standard library's public modules and their public submodules (``email.mime.text``, ``os.path``...)."""
    import importlib
    import pkgutil

    names = []
    for top in sorted(sys.stdlib_module_names):
        if top.startswith("_") or top in SKIP:
            continue
        names.append(top)
        try:
            package = importlib.import_module(top)
        except Exception:
            continue
        for info in pkgutil.walk_packages(getattr(package, "__path__", []), prefix=top + "."):
            if not any(part.startswith("_") or part in SKIP or part == "tests" for part in info.name.split(".")):
                names.append(info.name)
    return names + list(EXTRA)


def pydoc_corpus() -> pl.DataFrame:
    """One document per standard-library module: its pydoc page as plain text (what the pydoc crawl serves)."""
    import contextlib
    import io
    import pydoc
    import warnings

    rows = []
    for name in stdlib_modules():
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                text = pydoc.render_doc(name, renderer=pydoc.plaintext)
        except BaseException:
            continue
        rows.append((f"doc-{name}", f"http://127.0.0.1/{name}.html", f"Pydoc: module {name}", text))
    return pl.DataFrame(rows, schema=["doc_id", "url", "title", "text"], orient="row")


def cut(documents: pl.DataFrame, chunks: int) -> pl.DataFrame:
    """The first documents whose chunks add up to at least ``chunks`` (all of them if they make fewer)."""
    chunker = Chunker()
    kept, total = [], 0
    for row in documents.iter_rows(named=True):
        kept.append(row)
        total += chunker.chunk(pl.DataFrame([row])).height
        if total >= chunks:
            break
    return pl.DataFrame(kept)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench_build(documents: pl.DataFrame, repeats: int) -> Path:
    root = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    for i in range(repeats):
        wall, cpu = time.perf_counter(), cpu_seconds()
        facts = build_version(root, f"v{i}", documents, IndexSettings())
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        print(
            f"build {i}: {facts['chunks']} chunks in {wall:.1f} s wall, {cpu:.1f} CPU-s: "
            f"{facts['chunks'] / wall:.0f} chunks/s, {facts['chunks'] / cpu:.0f} chunks per CPU-second; "
            f"phases {facts['seconds']}"
        )
        if i:
            shutil.rmtree(root / f"v{i}")
    return root / "v0"


def bench_latency(index: RetrievalIndex, queries: list[str], repeats: int) -> None:
    times = {m: [] for m in MODES}
    for _ in range(repeats):
        for q in queries:
            for mode in MODES:  # alternating
                t = time.perf_counter()
                index.search(q, k=10, mode=mode)
                times[mode].append((time.perf_counter() - t) * 1000)
    for mode, ts in times.items():
        ts.sort()
        print(
            f"latency {mode:6s}: p50 {statistics.median(ts):.2f} ms, p95 {ts[int(0.95 * len(ts))]:.2f} ms "
            f"({len(ts)} searches, {index.chunks.height} chunks)"
        )


def llama_mean_pooled(model_dir: str, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), 32):
            enc = tok(texts[start : start + 32], return_tensors="pt", padding=True, truncation=True, max_length=256)
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
    x = np.concatenate(out).astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def bench_embedders(documents: pl.DataFrame, model_dir: str | None, per_kind: int, embedder_chunks: int) -> None:
    chunks = Chunker().chunk(documents).head(embedder_chunks)
    texts = indexed_text(chunks)
    queries = QuerySet(per_kind=per_kind, seed=1).generate(chunks)
    qtexts, targets = queries["query"].to_list(), queries["chunk_id"].to_list()
    ids = chunks["chunk_id"].to_list()

    def score(name, doc_vectors, query_vectors):
        sims = query_vectors @ doc_vectors.T
        top = np.argsort(-sims, axis=1)[:, :10]
        ranks = [next((r + 1 for r, j in enumerate(row) if ids[j] == t), None) for row, t in zip(top, targets)]
        recall = sum(r is not None for r in ranks) / len(ranks)
        mrr = sum(1 / r for r in ranks if r) / len(ranks)
        print(
            f"embedder {name:28s}: dense recall@10 {recall:.3f}, MRR {mrr:.3f} ({len(ranks)} queries, {len(ids)} chunks)"
        )

    for name, embedder in (
        ("lsa-256 (1-2-grams)", LsaEmbedder(256)),
        ("lsa-128 (1-2-grams)", LsaEmbedder(128)),
        ("projection-512", ProjectionEmbedder(512)),
        ("projection-256", ProjectionEmbedder(256)),
    ):
        t = time.perf_counter()
        embedder.fit(texts)
        score(name, embedder.encode(texts), embedder.encode(qtexts))
        print(f"    fit + encode {time.perf_counter() - t:.1f} s")
    if model_dir:
        t = time.perf_counter()
        score("tiny-llama mean-pooled", llama_mean_pooled(model_dir, texts), llama_mean_pooled(model_dir, qtexts))
        print(f"    encode {time.perf_counter() - t:.1f} s")


def bench_cache(index: RetrievalIndex, per_kind: int) -> None:
    """Hit and false-hit rates of the semantic cache on a labelled pair set (semantic_cache.paraphrase_pairs)."""
    from crawl2serve.serving.gateway.semantic_cache import paraphrase_pairs, rates

    pairs = paraphrase_pairs(QuerySet(per_kind=per_kind, seed=3).generate(index.chunks))
    left, right = index.embed([p[0] for p in pairs]), index.embed([p[1] for p in pairs])
    labels = np.array([p[2] for p in pairs])
    sims = (left * right).sum(1)
    print(f"semantic cache: {labels.sum()} same-question pairs, {(~labels).sum()} different-question pairs")
    for threshold in (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9):
        hit, false_hit = rates(sims, labels, threshold)
        print(f"  threshold {threshold:.2f}: hit rate {hit:.3f}, false-hit rate {false_hit:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=100, help="queries of each kind")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="query-set seeds (0: retrieval_eval's)")
    parser.add_argument("--embedders", action="store_true")
    parser.add_argument("--model", help="a base_model folder (the tiny Llama) for --embedders")
    parser.add_argument("--embedder-chunks", type=int, nargs="+", default=[2000, 10000], help="--embedders sizes")
    parser.add_argument("--cache", action="store_true", help="the semantic cache's hit / false-hit rates too")
    parser.add_argument("--corpus", help="a Parquet file to keep the rendered pydoc pages in between runs")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    t = time.perf_counter()
    if args.corpus and Path(args.corpus).exists():
        pages = pl.read_parquet(args.corpus)
    else:
        pages = pydoc_corpus()
        if args.corpus:
            pages.write_parquet(args.corpus)
    documents = cut(pages, args.chunks)
    print(f"corpus: {documents.height} pydoc pages in {time.perf_counter() - t:.1f} s")
    if args.embedders:
        for size in args.embedder_chunks:
            bench_embedders(documents, args.model if size == min(args.embedder_chunks) else None, args.queries, size)
    folder = bench_build(documents, args.repeats)
    index = RetrievalIndex.load(folder)
    fusions = {"hybrid-rrf60": ReciprocalRankFusion(60)} | {
        f"hybrid-convex{a}": ConvexFusion(a) for a in (0.5, 0.7, 0.8, 0.9)
    }
    for seed in args.seeds:
        queries = QuerySet(per_kind=args.queries, seed=seed).generate(index.chunks)
        print(f"queries of seed {seed} (hybrid = the version's fusion, {index.fusion})")
        with pl.Config(tbl_rows=20):
            print(summarize(evaluate(index, queries, fusions=fusions)))
    bench_latency(index, queries["query"].to_list()[:200], args.repeats)
    if args.cache:
        bench_cache(index, args.queries)
    index.close()
    shutil.rmtree(folder.parent)


if __name__ == "__main__":
    main()
