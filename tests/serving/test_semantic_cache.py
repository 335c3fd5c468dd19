"""The semantic cache alone: threshold edges, keys, expiry, eviction; and its hit and false-hit rates on a
labelled paraphrase set generated from real pydoc pages, with the embedder the index uses."""

import pydoc

import numpy as np
import polars as pl

from crawl2serve.assets.retrieval.chunking import Chunker, indexed_text
from crawl2serve.assets.retrieval.embeddings import make_embedder
from crawl2serve.assets.retrieval.evaluation import QuerySet
from crawl2serve.assets.retrieval.index import IndexSettings
from crawl2serve.serving.gateway.rag import RagSettings
from crawl2serve.serving.gateway.semantic_cache import SemanticCache, paraphrase_pairs, rates


def unit(*v) -> np.ndarray:
    x = np.array(v, dtype=np.float32)
    return x / np.linalg.norm(x)


def test_a_hit_needs_the_threshold_and_the_same_key():
    cache = SemanticCache(threshold=0.8)
    cache.store("k", unit(1, 0), "answer")
    exactly = unit(0.8, 0.6)  # cosine 0.8 with (1, 0)
    assert cache.lookup("k", exactly).answer == "answer"
    below = unit(0.79, (1 - 0.79**2) ** 0.5)
    found = cache.lookup("k", below)
    assert not found.hit and abs(found.similarity - 0.79) < 1e-6
    assert cache.lookup("other", unit(1, 0)).similarity is None  # another model, index version or sampling


def test_entries_expire_and_the_oldest_go_first():
    now = [0.0]
    cache = SemanticCache(threshold=0.99, max_entries=2, ttl_s=10, clock=lambda: now[0])
    for i, v in enumerate([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)]):
        cache.store("k", v, i)
    assert not cache.lookup("k", unit(1, 0, 0)).hit  # evicted: max_entries 2
    assert cache.lookup("k", unit(0, 0, 1)).answer == 2
    now[0] = 10.0
    assert cache.lookup("k", unit(0, 0, 1)).similarity is None  # expired


def test_paraphrases_hit_and_other_questions_do_not_at_the_default_threshold():
    modules = ("json", "csv", "hmac", "textwrap", "shlex", "fnmatch", "base64", "heapq", "difflib", "glob")
    docs = pl.DataFrame(
        [(f"doc-{m}", f"http://x/{m}", m, pydoc.render_doc(m, renderer=pydoc.plaintext)) for m in modules],
        schema=["doc_id", "url", "title", "text"],
        orient="row",
    )
    chunks = Chunker().chunk(docs)
    default = IndexSettings()  # the embedder the index (and so the cache) uses by default
    embedder = make_embedder(default.embedder, dimensions=default.dimensions).fit(indexed_text(chunks))
    pairs = paraphrase_pairs(QuerySet(per_kind=80, seed=3).generate(chunks))
    left, right = embedder.encode([p[0] for p in pairs]), embedder.encode([p[1] for p in pairs])
    labels = np.array([p[2] for p in pairs])
    assert labels.sum() >= 40 and (~labels).sum() >= 40
    hit_rate, false_hit_rate = rates((left * right).sum(1), labels, RagSettings(live_file="x").cache_threshold)
    assert hit_rate >= 0.6 and false_hit_rate <= 0.05, (hit_rate, false_hit_rate)
