"""The retrieval evaluation: a query set generated from the index's own chunks, and recall@k / MRR per mode.

Queries (each labelled with the chunk it was taken from; a query is answered when that chunk is retrieved):

- ``sentence``: a sentence of the chunk (8-40 words), verbatim: the exact-lookup case;
- ``heading``: the document's title and the section heading with a few content words of the chunk (a heading
  alone names many chunks of a long section);
- ``paraphrase``: a sentence reworded without a model: stopwords dropped, the content words shuffled and every
  third one left out (a user's keyword query about the passage, not its wording).

Chunks are sampled with a fixed seed; a query that occurs in several chunks verbatim (boilerplate) is skipped,
since it has no single right answer.
"""

import random
import re
from dataclasses import dataclass

import polars as pl

from .fusion import Fusion
from .index import MODES, RetrievalIndex

KINDS = ("sentence", "heading", "paraphrase")
QUERY_SCHEMA = {"query_id": pl.Int64, "kind": pl.String, "query": pl.String, "chunk_id": pl.String}
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"(?u)\b\w\w+\b")
# scikit-learn's English stopword list (what the BM25 tokenizer drops too: bm25s "en")
_STOP = None


def _stopwords() -> frozenset[str]:
    global _STOP
    if _STOP is None:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        _STOP = frozenset(ENGLISH_STOP_WORDS)
    return _STOP


@dataclass(frozen=True)
class QuerySet:
    """``per_kind`` queries of each kind from chunks sampled with ``seed``."""

    per_kind: int = 100
    seed: int = 0
    min_words: int = 8
    max_words: int = 40

    def generate(self, chunks: pl.DataFrame) -> pl.DataFrame:
        rng = random.Random(self.seed)
        order = list(range(chunks.height))
        rng.shuffle(order)
        texts = chunks["text"].to_list()
        ids = chunks["chunk_id"].to_list()
        rows = []
        counts = dict.fromkeys(KINDS, 0)
        for i in order:
            if all(n >= self.per_kind for n in counts.values()):
                break
            sentences = [s for s in _SENTENCE.split(texts[i]) if self.min_words <= len(s.split()) <= self.max_words]
            sentences = [s for s in sentences if sum(s in t for t in texts) == 1]
            if not sentences:
                continue
            sentence = rng.choice(sentences)
            content = [w for w in _WORD.findall(sentence) if w.lower() not in _stopwords()]
            candidates = {
                "sentence": sentence,
                "heading": " ".join(p for p in (chunks["title"][i], chunks["heading"][i], " ".join(content[:3])) if p),
                "paraphrase": _paraphrase(content, rng),
            }
            for kind, query in candidates.items():
                if counts[kind] < self.per_kind and len(query.split()) >= 2:
                    rows.append((len(rows), kind, query, ids[i]))
                    counts[kind] += 1
        return pl.DataFrame(rows, schema=QUERY_SCHEMA, orient="row")


def _paraphrase(content: list[str], rng: random.Random) -> str:
    words = [w for j, w in enumerate(content) if j % 3 != 2]
    rng.shuffle(words)
    return " ".join(words)


def evaluate(
    index: RetrievalIndex, queries: pl.DataFrame, k: int = 10, fusions: dict[str, Fusion] | None = None
) -> pl.DataFrame:
    """One row per query and mode: the rank (1-based) of the query's source chunk in the top ``k``, or null.
    ``fusions``: other hybrid fusions to compare with the version's own, each a mode of its own name."""
    rows = []
    searches = [(mode, mode, None) for mode in MODES] + [(name, "hybrid", f) for name, f in (fusions or {}).items()]
    for query_id, kind, query, chunk in queries.iter_rows():
        vector = index.embed([query])[0]
        for name, mode, fusion in searches:
            ranked = [h.chunk_id for h in index.search(query, k=k, mode=mode, vector=vector, fusion=fusion)]
            rows.append((query_id, kind, name, ranked.index(chunk) + 1 if chunk in ranked else None))
    return pl.DataFrame(
        rows, schema={"query_id": pl.Int64, "kind": pl.String, "mode": pl.String, "rank": pl.Int64}, orient="row"
    )


def summarize(ranks: pl.DataFrame, by: tuple[str, ...] = ("mode",)) -> pl.DataFrame:
    """recall@5, recall@10 and MRR@10 per ``by`` (a missing rank counts 0 for MRR)."""
    return (
        ranks.group_by(list(by))
        .agg(
            queries=pl.len(),
            recall_at_5=(pl.col("rank") <= 5).fill_null(False).mean(),
            recall_at_10=(pl.col("rank") <= 10).fill_null(False).mean(),
            mrr=(1.0 / pl.col("rank")).fill_null(0.0).mean(),
        )
        .sort(list(by))
    )
