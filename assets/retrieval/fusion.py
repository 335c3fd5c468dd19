"""How the hybrid search merges its two ranked lists (BM25's and the dense retriever's): one interface, two kinds.

- :class:`ConvexFusion` (the default): each list's scores min-max normalised over its candidates, then
  ``alpha * bm25 + (1 - alpha) * dense``; a chunk absent from a list scores 0 there. Bruch, Gai and Ingber
  ("An Analysis of Fusion Functions for Hybrid Retrieval", ACM TOIS 2023) found a convex combination tuned on a
  few queries better than RRF in and out of domain, because it keeps how far apart the scores are, not only
  their order.
- :class:`ReciprocalRankFusion`: ``sum(weight / (k + rank))`` over the lists (Cormack et al. 2009), k = 60 as
  the seeds give it, weights 1.

Why convex by default (``bench/bench_retrieval.py``, README "Retrieval"): on the generated queries RRF put
hybrid recall@10 below BM25's alone on every seed measured (0.897-0.957 against 0.947-0.973): a chunk ranked in
both top-50 lists, however low, outscores one ranked first by BM25 alone whenever the offline dense half misses
it, and that half is the weaker one. ``alpha`` 0.85 was the smallest value at which hybrid was at least
BM25 and dense on every tuning seed (1, 2, 3, 7, 11; the evaluation's own seed 0 held out). With a semantic
embedder (a sentence-transformers model) a lower ``alpha`` (0.5) gives the dense half more say.
"""

from dataclasses import dataclass
from typing import Protocol

Ranked = list[tuple[str, float]]  # (chunk id, score), best first


class Fusion(Protocol):
    """Two ranked lists, BM25's and the dense retriever's, into one, best first (ties: first seen)."""

    kind: str

    def fuse(self, lexical: Ranked, dense: Ranked) -> Ranked: ...


@dataclass(frozen=True)
class ReciprocalRankFusion:
    k: int = 60
    lexical_weight: float = 1.0
    dense_weight: float = 1.0
    kind: str = "rrf"

    def fuse(self, lexical: Ranked, dense: Ranked) -> Ranked:
        scores: dict[str, float] = {}
        for weight, ranking in ((self.lexical_weight, lexical), (self.dense_weight, dense)):
            for rank, (item, _) in enumerate(ranking, start=1):
                scores[item] = scores.get(item, 0.0) + weight / (self.k + rank)
        return sorted(scores.items(), key=lambda kv: -kv[1])


@dataclass(frozen=True)
class ConvexFusion:
    alpha: float = 0.85
    kind: str = "convex"

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"fusion_alpha {self.alpha}: expected a weight of BM25 between 0 and 1")

    def fuse(self, lexical: Ranked, dense: Ranked) -> Ranked:
        scores: dict[str, float] = {}
        for weight, ranking in ((self.alpha, lexical), (1.0 - self.alpha, dense)):
            for item, norm in _min_max(ranking):
                scores[item] = scores.get(item, 0.0) + weight * norm
        return sorted(scores.items(), key=lambda kv: -kv[1])


def _min_max(ranking: Ranked) -> list[tuple[str, float]]:
    """Scores mapped onto [0, 1] over the list's own candidates (all 1 where they are equal)."""
    if not ranking:
        return []
    values = [s for _, s in ranking]
    low, high = min(values), max(values)
    span = high - low
    return [(item, (s - low) / span if span > 0 else 1.0) for item, s in ranking]


KINDS = ("convex", "rrf")


def make_fusion(kind: str = "convex", alpha: float = 0.85, rrf_k: int = 60) -> Fusion:
    """The fusion of ``kind`` (:data:`KINDS`): ``convex`` with ``alpha`` (BM25's weight), ``rrf`` with ``rrf_k``."""
    if kind == "convex":
        return ConvexFusion(alpha=alpha)
    if kind == "rrf":
        if rrf_k < 1:
            raise ValueError(f"rrf_k {rrf_k}: expected a positive integer")
        return ReciprocalRankFusion(k=rrf_k)
    raise ValueError(f"fusion {kind!r}: expected one of {KINDS}")
