"""The BM25 half of the index: bm25s (BM25 "Lucene" variant, k1 = 1.5, b = 0.75) over the chunks' indexed text,
English stopwords removed, with its tokenizer's vocabulary saved beside the scores."""

from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np


@dataclass
class Bm25Index:
    """A fitted bm25s index over ``n`` texts, the ``i``-th being row ``i`` of the version's chunk table."""

    retriever: bm25s.BM25
    tokenizer: bm25s.tokenization.Tokenizer

    @classmethod
    def build(cls, texts: list[str]) -> "Bm25Index":
        tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
        ids = tokenizer.tokenize(texts, show_progress=False, return_as="tuple")
        retriever = bm25s.BM25()
        retriever.index(ids, show_progress=False)
        return cls(retriever, tokenizer)

    @property
    def size(self) -> int:
        return int(self.retriever.scores["num_docs"])

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers and BM25 scores of the (up to) ``k`` best texts for ``query``, best first; texts that share
        no term with the query are left out."""
        ids = self.tokenizer.tokenize([query], update_vocab=False, show_progress=False)
        known = [t for t in ids[0] if t != self.tokenizer.word_to_id.get("")]
        if not known or self.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        rows, scores = self.retriever.retrieve([known], k=min(k, self.size), show_progress=False, n_threads=0)
        rows, scores = rows[0], scores[0]
        keep = scores > 0
        return rows[keep].astype(np.int64), scores[keep].astype(np.float32)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(folder))
        self.tokenizer.save_vocab(str(folder))
        self.tokenizer.save_stopwords(str(folder))

    @classmethod
    def load(cls, folder: Path) -> "Bm25Index":
        retriever = bm25s.BM25.load(str(folder), show_progress=False)
        tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
        tokenizer.load_vocab(str(folder))
        tokenizer.load_stopwords(str(folder))
        return cls(retriever, tokenizer)
