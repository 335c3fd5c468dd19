"""The dense half of the index: one Qdrant collection of chunk vectors per index version.

Qdrant in local mode (``qdrant-client``'s embedded engine: a folder, no server) by default; a Qdrant server by
``url`` in production, through the same client API. Collections are created with the seeds' HNSW settings
(``m`` = 16, ``ef_construct`` = 100) and optional int8 scalar quantization. The server builds that HNSW graph;
local mode keeps the settings in the collection's config but searches exactly (brute force over numpy arrays),
which for the embedded index's sizes is both exact and within the latency goal (bench/bench_retrieval.py).

Blue/green: a version's collection is named ``chunks_<version>``; the alias ``chunks`` points at the served
one and is switched with one ``update_collection_aliases`` call (atomic on the server). Local mode keeps each
version in its own folder (one local client holds a folder's lock, so the gateway reads the served version's
folder while the pipeline writes the next one in another).
"""

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

ALIAS = "chunks"
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
UPSERT_BATCH = 512


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of a chunk: a UUID derived from its chunk id (Qdrant ids are integers or UUIDs)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, chunk_id))


def collection_name(version: str) -> str:
    return f"{ALIAS}_{version}"


@dataclass
class VectorStore:
    """One version's collection in a Qdrant client (local folder or server)."""

    client: QdrantClient
    collection: str
    path: str | None = None  # the local-mode folder (None on a server)

    @classmethod
    def open(cls, version: str, *, path: str | None = None, url: str | None = None, api_key: str | None = None):
        """The client for ``version``: a server at ``url``, else local mode in ``path`` (the version's folder)."""
        if url:
            client = QdrantClient(url=url, api_key=api_key or None)
        elif path:
            client = QdrantClient(path=path)
        else:
            raise ValueError("VectorStore.open: give a local path or a Qdrant server url")
        return cls(client, collection_name(version), None if url else path)

    def create(self, dimensions: int, quantization: bool = False) -> None:
        """The version's collection, dot product on unit vectors (cosine), HNSW m=16 / ef_construct=100, int8 scalar quantization
        (kept in RAM, rescored) if ``quantization``. Refuses an existing collection: a version is written once."""
        if self.client.collection_exists(self.collection):
            raise FileExistsError(f"collection {self.collection} exists: a version is written once")
        self.client.create_collection(
            self.collection,
            # Every embedder gives unit vectors, so the dot product is the cosine; Qdrant's local mode re-normalizes
            # the whole collection on each cosine query (20 ms at 12k x 512 here), a dot product it does not.
            vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.DOT),
            hnsw_config=models.HnswConfigDiff(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT),
            quantization_config=models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
            )
            if quantization
            else None,
        )
        self._fast_local_writes()

    def _fast_local_writes(self) -> None:
        """Local mode commits every point to SQLite with a sync (~400 points/s); a version being built is not
        served until it is complete and switched to, so its writes need no per-point sync. The file is synced
        when the client closes (:meth:`close`)."""
        local = getattr(self.client, "_client", None)
        collection = getattr(local, "collections", {}).get(self.collection) if local is not None else None
        storage = getattr(getattr(collection, "storage", None), "storage", None)
        if storage is not None:
            storage.execute("PRAGMA synchronous=OFF")

    def upsert(self, chunk_ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        for start in range(0, len(chunk_ids), UPSERT_BATCH):
            stop = start + UPSERT_BATCH
            self.client.upsert(
                self.collection,
                points=models.Batch(
                    ids=[point_id(c) for c in chunk_ids[start:stop]],
                    vectors=vectors[start:stop].tolist(),
                    payloads=payloads[start:stop],
                ),
                wait=True,
            )

    def delete(self, chunk_ids: list[str]) -> None:
        if chunk_ids:
            self.client.delete(
                self.collection, points_selector=models.PointIdsList(points=[point_id(c) for c in chunk_ids])
            )

    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def settings(self) -> dict:
        """The collection's HNSW and quantization settings as stored (what the index promises)."""
        info = self.client.get_collection(self.collection)
        hnsw = info.config.hnsw_config
        return {
            "hnsw_m": hnsw.m,
            "hnsw_ef_construct": hnsw.ef_construct,
            "quantization": type(info.config.quantization_config).__name__
            if info.config.quantization_config
            else "none",
        }

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """``(chunk_id, cosine)`` of the ``k`` nearest chunks to ``vector``, nearest first."""
        hits = self.client.query_points(
            self.collection, query=vector.tolist(), limit=k, with_payload=["chunk_id"]
        ).points
        return [(h.payload["chunk_id"], float(h.score)) for h in hits]

    def switch_alias(self) -> None:
        """Point the alias ``chunks`` at this collection, in one call (the server applies it atomically)."""
        ops: list = [
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=self.collection, alias_name=ALIAS)
            )
        ]
        if any(a.alias_name == ALIAS for a in self.client.get_aliases().aliases):
            ops.insert(0, models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=ALIAS)))
        self.client.update_collection_aliases(change_aliases_operations=ops)

    def close(self) -> None:
        """Close the client; in local mode, sync the folder's files to disk (its writes skipped the per-point
        sync)."""
        self.client.close()
        if self.path:
            for file in Path(self.path).rglob("*"):
                if file.is_file():
                    with open(file, "rb+") as f:
                        os.fsync(f.fileno())
