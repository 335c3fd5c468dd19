"""A retrieval index version: its files, how one is built (in full or from the version before), and how it is
searched (BM25, dense, or both fused: fusion.py).

A version is a folder, written under a temporary name and renamed into place when complete, never changed
afterwards::

    versions/<version>/chunks.parquet    the chunk table (chunking.CHUNK_SCHEMA), row i = BM25 document i
                       vectors.npy       float32 embeddings, row i = chunk i (what the next incremental build reuses)
                       bm25/             the bm25s index and its tokenizer's vocabulary
                       embedder/         the fitted embedder (embedder.json names its kind)
                       qdrant/           the local-mode Qdrant collection chunks_<version> (none with a server)
                       version.json      facts: counts, settings, the version it was built from, what changed

An incremental build (the default when the embedder settings are unchanged) keeps the previous version's
fitted embedder and the vectors of chunks whose ``content_hash`` is unchanged, embeds only new and changed
chunks, and leaves out chunks whose documents are gone; a full re-index (``full=True``, or other embedder
settings) fits the embedder anew and embeds everything. Either way the result is a new collection, served only
after ``retrieval_eval`` passes and ``served_retrieval_index`` switches to it.
"""

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from .chunking import Chunker, indexed_text
from .embeddings import Embedder, load_embedder, make_embedder
from .fusion import Fusion, make_fusion
from .lexical import Bm25Index
from .vectors import VectorStore

CANDIDATES = 50  # each retriever's list, fused into the hybrid one
MODES = ("hybrid", "bm25", "dense")
TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class IndexSettings:
    """What a version is built with and searched by: chunking, the embedder, quantization, where its vectors
    live, and how hybrid search fuses its two lists (``fusion``: convex with BM25's weight ``fusion_alpha``, or
    rrf with ``rrf_k``; fusion.py says why convex 0.85 is the default)."""

    max_tokens: int = 200
    overlap: int = 40
    embedder: str = "projection"
    embedding_model: str = ""
    dimensions: int = 512
    quantization: bool = False
    qdrant_url: str = ""  # empty: local mode, in the version's folder
    fusion: str = "convex"
    fusion_alpha: float = 0.85
    rrf_k: int = 60

    def make_fusion(self) -> Fusion:
        return make_fusion(self.fusion, self.fusion_alpha, self.rrf_k)

    def embedder_key(self) -> dict:
        """The settings that make vectors comparable: a change means a full re-index."""
        return {"embedder": self.embedder, "embedding_model": self.embedding_model, "dimensions": self.dimensions}


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: where it comes from, its fused score, and its rank in each list (None: absent)."""

    chunk_id: str
    url: str
    title: str
    heading: str
    text: str
    score: float
    bm25_rank: int | None = None
    dense_rank: int | None = None
    dense_score: float | None = None


@dataclass
class RetrievalIndex:
    """A loaded version: its chunk table, BM25 index, embedder, vector store, and the fusion it was built with."""

    version: str
    folder: Path
    chunks: pl.DataFrame
    bm25: Bm25Index
    embedder: Embedder
    store: VectorStore
    facts: dict = field(default_factory=dict)
    fusion: Fusion | None = None

    def __post_init__(self):
        if self.fusion is None:
            known = IndexSettings.__dataclass_fields__
            saved = {k: v for k, v in self.facts.get("settings", {}).items() if k in known}
            self.fusion = IndexSettings(**saved).make_fusion()  # a version from before fusion settings: defaults
        self._ids = self.chunks["chunk_id"].to_list()
        self._row = {c: i for i, c in enumerate(self._ids)}
        self._columns = {c: self.chunks[c].to_list() for c in ("url", "title", "heading", "text")}

    @classmethod
    def load(cls, folder: str | Path, qdrant_url: str = "", qdrant_api_key: str = "") -> "RetrievalIndex":
        folder = Path(folder)
        facts = json.loads((folder / "version.json").read_text())
        version = facts["version"]
        store = VectorStore.open(version, path=str(folder / "qdrant"), url=qdrant_url, api_key=qdrant_api_key)
        return cls(
            version=version,
            folder=folder,
            chunks=pl.read_parquet(folder / "chunks.parquet"),
            bm25=Bm25Index.load(folder / "bm25"),
            embedder=load_embedder(folder / "embedder"),
            store=store,
            facts=facts,
        )

    def close(self) -> None:
        self.store.client.close()

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)

    def bm25_ranking(self, query: str, k: int = CANDIDATES) -> list[tuple[str, float]]:
        rows, scores = self.bm25.search(query, k)
        return [(self._ids[r], float(s)) for r, s in zip(rows, scores)]

    def dense_ranking(self, query: str, k: int = CANDIDATES, vector: np.ndarray | None = None):
        vector = self.embed([query])[0] if vector is None else vector
        if not np.any(vector):
            return []  # no known term: a zero vector is near nothing
        return self.store.search(vector, k)

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        vector: np.ndarray | None = None,
        fusion: Fusion | None = None,
    ) -> list[Hit]:
        """The ``k`` best chunks for ``query`` by ``mode``: ``bm25``, ``dense``, or ``hybrid`` (both lists of
        :data:`CANDIDATES`, fused by the version's fusion, or ``fusion``). ``vector``: the query's embedding, if
        already computed (the semantic cache embeds it once)."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {MODES}")
        lexical = self.bm25_ranking(query, max(k, CANDIDATES)) if mode != "dense" else []
        dense = self.dense_ranking(query, max(k, CANDIDATES), vector) if mode != "bm25" else []
        if mode == "bm25":
            fused = lexical
        elif mode == "dense":
            fused = dense
        else:
            fused = (fusion or self.fusion).fuse(lexical, dense)
        bm25_rank = {c: i + 1 for i, (c, _) in enumerate(lexical)}
        dense_rank = {c: i + 1 for i, (c, _) in enumerate(dense)}
        dense_score = dict(dense)
        hits = []
        for chunk, score in fused[:k]:
            row = self._row[chunk]
            hits.append(
                Hit(
                    chunk_id=chunk,
                    url=self._columns["url"][row],
                    title=self._columns["title"][row],
                    heading=self._columns["heading"][row],
                    text=self._columns["text"][row],
                    score=float(score),
                    bm25_rank=bm25_rank.get(chunk),
                    dense_rank=dense_rank.get(chunk),
                    dense_score=dense_score.get(chunk),
                )
            )
        return hits


def build_version(
    versions: Path,
    version: str,
    documents: pl.DataFrame,
    settings: IndexSettings,
    previous: Path | None = None,
    full: bool = False,
) -> dict:
    """Build version ``version`` of the index over ``documents`` under ``versions/``; its facts.

    ``previous``: the served (or last built) version's folder, reused unless ``full`` or its embedder settings
    differ. The folder is written as ``.tmp-<version>`` and renamed when complete."""
    started = time.perf_counter()
    settings.make_fusion()  # a bad fusion setting fails here, before any work
    chunks = Chunker(settings.max_tokens, settings.overlap).chunk(documents)
    prior = json.loads((previous / "version.json").read_text()) if previous else None
    incremental = prior is not None and not full and prior["settings_key"] == settings.embedder_key()
    folder = versions / f"{TMP_PREFIX}{version}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    texts = indexed_text(chunks)
    timings = {}

    t = time.perf_counter()
    if incremental:
        embedder = load_embedder(previous / "embedder")
        old = pl.read_parquet(previous / "chunks.parquet", columns=["chunk_id", "content_hash"])
        old_vectors = np.load(previous / "vectors.npy")
        old_row = {(c, h): i for i, (c, h) in enumerate(old.iter_rows())}
        reuse = [old_row.get(key) for key in chunks.select("chunk_id", "content_hash").iter_rows()]
        todo = [i for i, r in enumerate(reuse) if r is None]
        vectors = np.zeros((chunks.height, old_vectors.shape[1]), dtype=np.float32)
        kept = [(i, r) for i, r in enumerate(reuse) if r is not None]
        if kept:
            vectors[[i for i, _ in kept]] = old_vectors[[r for _, r in kept]]
        if todo:
            vectors[todo] = embedder.encode([texts[i] for i in todo])
        current = set(chunks["chunk_id"].to_list())
        changes = {
            "upserted": len(todo),
            "unchanged": len(kept),
            "deleted": int(sum(1 for c in old["chunk_id"].to_list() if c not in current)),
        }
    else:
        embedder = make_embedder(settings.embedder, settings.embedding_model, settings.dimensions).fit(texts)
        vectors = embedder.encode(texts) if texts else np.zeros((0, embedder.dimensions), dtype=np.float32)
        changes = {"upserted": chunks.height, "unchanged": 0, "deleted": 0}
    timings["embed_s"] = time.perf_counter() - t

    t = time.perf_counter()
    Bm25Index.build(texts).save(folder / "bm25")
    timings["bm25_s"] = time.perf_counter() - t

    t = time.perf_counter()
    store = VectorStore.open(version, path=str(folder / "qdrant"), url=settings.qdrant_url)
    try:
        store.create(vectors.shape[1], quantization=settings.quantization)
        store.upsert(
            chunks["chunk_id"].to_list(),
            vectors,
            [{"chunk_id": c, "url": u} for c, u in chunks.select("chunk_id", "url").iter_rows()],
        )
        store_facts = {"points": store.count(), **store.settings()}
    finally:
        store.close()
    timings["vectors_s"] = time.perf_counter() - t

    embedder.save(folder / "embedder")
    np.save(folder / "vectors.npy", vectors)
    chunks.write_parquet(folder / "chunks.parquet")
    facts = {
        "version": version,
        "mode": "incremental" if incremental else "full",
        "built_from": prior["version"] if incremental else None,
        "chunks": chunks.height,
        "documents": int(chunks["doc_id"].n_unique()),
        "dimensions": int(vectors.shape[1]),
        **changes,
        **store_facts,
        "settings": asdict(settings),
        "settings_key": settings.embedder_key(),
        "seconds": {k: round(v, 3) for k, v in timings.items()} | {"total": round(time.perf_counter() - started, 3)},
    }
    (folder / "version.json").write_text(json.dumps(facts, indent=2))
    os.replace(folder, versions / version)
    return facts
