"""Text embedders for the dense half of the index and the gateway's semantic cache: one interface, three kinds.

- :class:`ProjectionEmbedder` (the embedded default): TF-IDF over words projected to 512 dimensions by a
  sparse random projection, L2-normalised; fitted on the corpus's chunks by the pipeline itself (vocabulary and
  a random matrix: seconds on 2 cores, offline) and saved with the index version it embeds (the vectors of one
  version come from one fitted model).
- :class:`LsaEmbedder`: TF-IDF over word uni- and bigrams reduced by a truncated SVD (latent semantic
  analysis), L2-normalised; fitted likewise (the SVD: tens of seconds at 10k chunks).
- :class:`SentenceTransformerEmbedder` (production): any sentence-transformers model id (``model``), loaded
  from the Hugging Face cache or a local folder; nothing to fit.

The default is chosen by measured retrieval quality on the generated queries (``bench/bench_retrieval.py
--embedders``; README, "Retrieval"): the projection's dense recall@10 beats LSA's on the embedded corpus and by
far at 10k chunks, builds 3-20x faster, and both beat the project's tiny Llama mean-pooled by a wide margin.
Every embedder gives float32 rows of unit length, so a dot product is the cosine similarity.
"""

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

SPEC_FILE = "embedder.json"


class Embedder(Protocol):
    """Texts to unit-length float32 vectors of ``dimensions`` columns."""

    kind: str

    @property
    def dimensions(self) -> int: ...

    def fit(self, texts: list[str]) -> "Embedder": ...

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def save(self, folder: Path) -> None: ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass
class LsaEmbedder:
    """TF-IDF (word 1-2-grams, sublinear tf, ``min_df`` documents) + truncated SVD to ``dimensions``
    (fewer when the corpus has fewer terms or chunks), L2-normalised. ``fit`` learns vocabulary and
    projection from the corpus's chunks."""

    dimensions_wanted: int = 256
    min_df: int = 1
    fit_sample: int = 2000
    """Chunks (a seeded sample) the SVD is fitted on: its cost grows with them, the projection hardly does."""
    seed: int = 0
    kind: str = "lsa"
    _pipeline: object = field(default=None, repr=False)

    @property
    def dimensions(self) -> int:
        if self._pipeline is None:
            raise RuntimeError("LsaEmbedder: not fitted (call fit on the corpus's texts, or load a saved one)")
        return int(self._pipeline[1].components_.shape[0])

    def fit(self, texts: list[str]) -> "LsaEmbedder":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline

        if not texts:
            raise ValueError("LsaEmbedder.fit: no texts (the corpus has no chunks)")
        tfidf = TfidfVectorizer(
            ngram_range=(1, 2), sublinear_tf=True, min_df=self.min_df, token_pattern=r"(?u)\b\w\w+\b", dtype=np.float32
        )
        matrix = tfidf.fit_transform(texts)
        if matrix.shape[0] > self.fit_sample:
            rows = np.random.default_rng(self.seed).choice(matrix.shape[0], self.fit_sample, replace=False)
            matrix = matrix[np.sort(rows)]
        k = max(1, min(self.dimensions_wanted, matrix.shape[0] - 1, matrix.shape[1] - 1))
        svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=5, random_state=self.seed)
        svd.fit(matrix)
        self._pipeline = make_pipeline(tfidf, svd)
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._pipeline is None:
            raise RuntimeError("LsaEmbedder: not fitted (call fit on the corpus's texts, or load a saved one)")
        return _normalise(self._pipeline.transform(texts))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lsa.pkl", "wb") as f:
            pickle.dump(self._pipeline, f)
        _write_spec(folder, {"kind": self.kind, "dimensions": self.dimensions})

    @classmethod
    def load(cls, folder: Path, spec: dict) -> "LsaEmbedder":
        with open(folder / "lsa.pkl", "rb") as f:  # our own file, written by save() with the index version
            pipeline = pickle.load(f)
        return cls(dimensions_wanted=spec["dimensions"], _pipeline=pipeline)


@dataclass
class ProjectionEmbedder:
    """TF-IDF over words (sublinear tf) projected to ``dimensions`` by a sparse random projection
    (Achlioptas / Li et al.; scikit-learn's ``SparseRandomProjection``), L2-normalised: inner products
    approximate the TF-IDF cosine (Johnson-Lindenstrauss), so the dense half ranks like a lexical vector model
    at a fixed width. ``fit`` learns the vocabulary and draws the projection (seconds, no SVD)."""

    dimensions_wanted: int = 512
    seed: int = 0
    kind: str = "projection"
    _pipeline: object = field(default=None, repr=False)

    @property
    def dimensions(self) -> int:
        return self.dimensions_wanted

    def fit(self, texts: list[str]) -> "ProjectionEmbedder":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline
        from sklearn.random_projection import SparseRandomProjection

        if not texts:
            raise ValueError("ProjectionEmbedder.fit: no texts (the corpus has no chunks)")
        self._pipeline = make_pipeline(
            TfidfVectorizer(sublinear_tf=True, token_pattern=r"(?u)\b\w\w+\b", dtype=np.float32),
            SparseRandomProjection(self.dimensions_wanted, dense_output=True, random_state=self.seed),
        ).fit(texts)
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._pipeline is None:
            raise RuntimeError("ProjectionEmbedder: not fitted (call fit on the corpus's texts, or load a saved one)")
        return _normalise(self._pipeline.transform(texts))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "projection.pkl", "wb") as f:
            pickle.dump(self._pipeline, f)
        _write_spec(folder, {"kind": self.kind, "dimensions": self.dimensions})

    @classmethod
    def load(cls, folder: Path, spec: dict) -> "ProjectionEmbedder":
        with open(folder / "projection.pkl", "rb") as f:  # our own file, written by save() with the index version
            pipeline = pickle.load(f)
        return cls(dimensions_wanted=spec["dimensions"], _pipeline=pipeline)


@dataclass
class SentenceTransformerEmbedder:
    """A sentence-transformers model by id (``model``: "sentence-transformers/all-MiniLM-L6-v2", or a folder),
    on ``device``. Needs the ``sentence-transformers`` package and the model in the local cache."""

    model: str
    device: str = "cpu"
    batch_size: int = 64
    kind: str = "sentence-transformers"
    _model: object = field(default=None, repr=False)

    def _loaded(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise RuntimeError(
                    f"embedder kind 'sentence-transformers' (model {self.model!r}) needs the sentence-transformers "
                    "package: pip install sentence-transformers"
                ) from e
            self._model = SentenceTransformer(self.model, device=self.device)
        return self._model

    @property
    def dimensions(self) -> int:
        return int(self._loaded().get_sentence_embedding_dimension())

    def fit(self, texts: list[str]) -> "SentenceTransformerEmbedder":
        return self  # pretrained: nothing to learn from the corpus

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._loaded().encode(texts, batch_size=self.batch_size, normalize_embeddings=True)
        return _normalise(vectors)

    def save(self, folder: Path) -> None:
        _write_spec(folder, {"kind": self.kind, "model": self.model, "dimensions": self.dimensions})

    @classmethod
    def load(cls, folder: Path, spec: dict) -> "SentenceTransformerEmbedder":
        return cls(model=spec["model"])


KINDS = {"lsa": LsaEmbedder, "projection": ProjectionEmbedder, "sentence-transformers": SentenceTransformerEmbedder}


def make_embedder(kind: str, model: str = "", dimensions: int = 512) -> Embedder:
    """An unfitted embedder of ``kind`` (:data:`KINDS`): ``lsa`` with ``dimensions``, or ``sentence-transformers``
    with ``model`` (its id)."""
    if kind == "lsa":
        return LsaEmbedder(dimensions_wanted=dimensions)
    if kind == "projection":
        return ProjectionEmbedder(dimensions_wanted=dimensions)
    if kind == "sentence-transformers":
        if not model:
            raise ValueError("embedder kind 'sentence-transformers' needs a model id (embedding_model)")
        return SentenceTransformerEmbedder(model=model)
    raise ValueError(f"embedder kind {kind!r}: expected one of {sorted(KINDS)}")


def load_embedder(folder: Path) -> Embedder:
    """The embedder saved in ``folder`` (its ``embedder.json`` names the kind)."""
    spec = json.loads((folder / SPEC_FILE).read_text())
    kind = KINDS.get(spec.get("kind"))
    if kind is None:
        raise ValueError(f"{folder / SPEC_FILE}: unknown embedder kind {spec.get('kind')!r} (known: {sorted(KINDS)})")
    return kind.load(folder, spec)


def _write_spec(folder: Path, spec: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2))
