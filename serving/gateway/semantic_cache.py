"""A semantic cache of RAG answers: a question whose embedding is close enough to one already answered gets
that answer back without retrieval or generation.

Questions are embedded with the served index's own embedder (the same vectors dense retrieval uses), so the
cache costs one matrix product a lookup. Entries are grouped by a key of everything else the answer depends on
(the model, the index version, the sampling parameters): a new index version starts an empty group, and a
question only ever matches answers produced the same way. A hit needs cosine similarity ≥ ``threshold``;
entries expire after ``ttl_s`` and the oldest go first beyond ``max_entries`` a group. The threshold is chosen
on a labelled paraphrase set (``bench/bench_retrieval.py --cache``: hit rate on paraphrases, false-hit rate on
different questions).
"""

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Group:
    vectors: np.ndarray
    answers: list = field(default_factory=list)
    born: list = field(default_factory=list)


@dataclass(frozen=True)
class Lookup:
    """The best match's similarity (None: the group is empty) and its answer when it is a hit."""

    similarity: float | None
    answer: object = None

    @property
    def hit(self) -> bool:
        return self.answer is not None


class SemanticCache:
    def __init__(self, threshold: float = 0.7, max_entries: int = 1024, ttl_s: float = 600.0, clock=time.monotonic):
        if not 0 < threshold <= 1:
            raise ValueError(f"semantic cache threshold {threshold}: must be in (0, 1]")
        self.threshold, self.max_entries, self.ttl_s, self.clock = threshold, max_entries, ttl_s, clock
        self.groups: dict[str, _Group] = {}

    def _expire(self, group: _Group) -> None:
        now = self.clock()
        keep = [i for i, t in enumerate(group.born) if now - t < self.ttl_s]
        if len(keep) < len(group.born):
            group.vectors = group.vectors[keep]
            group.answers = [group.answers[i] for i in keep]
            group.born = [group.born[i] for i in keep]

    def lookup(self, key: str, vector: np.ndarray) -> Lookup:
        """The cached answer of the most similar question under ``key``, if similar enough."""
        group = self.groups.get(key)
        if group is None:
            return Lookup(None)
        self._expire(group)
        if not group.answers:
            return Lookup(None)
        sims = group.vectors @ vector.astype(np.float32)
        best = int(np.argmax(sims))
        similarity = float(sims[best])
        return Lookup(similarity, group.answers[best] if similarity >= self.threshold else None)

    def store(self, key: str, vector: np.ndarray, answer) -> None:
        vector = vector.astype(np.float32)[None, :]
        group = self.groups.get(key)
        if group is None:
            self.groups[key] = _Group(vector, [answer], [self.clock()])
            return
        self._expire(group)
        group.vectors = np.concatenate([group.vectors, vector])[-self.max_entries :]
        group.answers = [*group.answers, answer][-self.max_entries :]
        group.born = [*group.born, self.clock()][-self.max_entries :]


def paraphrase_pairs(queries) -> list[tuple[str, str, bool]]:
    """A labelled pair set from a generated query set (assets/retrieval/evaluation.py): each chunk's sentence
    with its paraphrase is the same question (True); a sentence with the next chunk's paraphrase (often the same
    document's next section: a hard negative) is a different one (False)."""
    by_chunk: dict[str, dict[str, str]] = {}
    for kind, query, chunk in queries.select("kind", "query", "chunk_id").iter_rows():
        by_chunk.setdefault(chunk, {})[kind] = query
    complete = [q for q in by_chunk.values() if "sentence" in q and "paraphrase" in q]
    pairs = [(q["sentence"], q["paraphrase"], True) for q in complete]
    pairs += [(a["sentence"], b["paraphrase"], False) for a, b in zip(complete, complete[1:] + complete[:1])]
    return pairs


def rates(similarities: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(hit rate on same-question pairs, false-hit rate on different-question pairs) at ``threshold``."""
    hits = similarities >= threshold
    return float(hits[labels].mean()) if labels.any() else 0.0, float(hits[~labels].mean()) if (~labels).any() else 0.0
