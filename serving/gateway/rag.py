"""Retrieval-augmented generation at the gateway: the model ``crawl2serve-rag`` (``RagSettings.model``).

A request for it goes through :class:`Retrieve` after validation: the question (the last user message, or the
prompt) is searched in the served retrieval index (``assets/retrieval``: BM25 + dense, fused by RRF, optionally
reranked by a cross-encoder), the best chunks become a context of numbered sources, and the request goes on as
one for the base model (``crawl2serve``, or ``crawl2serve@N`` for ``crawl2serve-rag@N``) with that context: a
system message before the conversation, or a preamble before the prompt. The answer (whole, or the stream's
last content event) ends with the numbered source URLs it was given (:func:`citations`). Retrieval latency,
hits and the top score go to the metrics and the inference log row. A single-question, non-streamed request
first asks the semantic cache (:mod:`serving.gateway.semantic_cache`, on the index's own embeddings): a
question close enough to one answered before, under the same model, index version and sampling, gets that
answer (and its sources) without retrieval or generation.

The served version is the one ``served_retrieval_index`` switched to (its ``live.json``); the gateway checks
the file every ``reload_interval_s`` and loads a new version in a thread, then swaps it in whole (a request uses
one version from start to end). In Qdrant's local mode one process holds a version's folder: run one gateway
worker, or a Qdrant server (the version's ``qdrant_url``) for several.
"""

import asyncio
import json
import logging
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from .errors import ApiError
from .semantic_cache import SemanticCache

log = logging.getLogger("crawl2serve.gateway")
SYSTEM = (
    "Answer the question using only the numbered sources below, and cite them by number, like [1]. "
    "If they do not answer it, say so.\n\n"
)


class RagSettings(BaseModel):
    """The retrieval-augmented model: where the served index is named, and how much context a request gets."""

    model_config = ConfigDict(extra="forbid")

    live_file: str = Field(description="served_retrieval_index's live.json (the version served, relative to its root)")
    model: str = Field("crawl2serve-rag", description="The public model name that gets retrieval")
    top_k: int = Field(4, ge=1, le=20, description="Chunks in the context")
    mode: str = Field("hybrid", pattern="^(hybrid|bm25|dense)$", description="hybrid (RRF of both), bm25 or dense")
    max_context_chars: int = Field(
        2000, ge=200, description="The context's size at most, shared by its chunks (the tiny model reads 1,024 tokens)"
    )
    rerank_model: str = Field("", description="A sentence-transformers cross-encoder id; empty: RRF order")
    rerank_candidates: int = Field(20, ge=1, description="Fused chunks the cross-encoder reorders")
    reload_interval_s: float = Field(5.0, ge=0, description="How often live.json is checked for a new version")
    cache_threshold: float = Field(
        0.7, ge=0, le=1, description="Semantic cache: cosine for a hit (bench/bench_retrieval.py --cache); 0: off"
    )
    cache_ttl_s: float = Field(600.0, gt=0, description="Semantic cache: how long an answer is reused")
    cache_max_entries: int = Field(1024, ge=1, description="Semantic cache: answers kept per key, oldest dropped")


class LiveIndex:
    """The served version of the index, reloaded when ``live.json`` names another one."""

    def __init__(self, live_file: str, reload_interval_s: float):
        self.live_file = Path(live_file)
        self.reload_interval_s = reload_interval_s
        self.index = None  # assets.retrieval.index.RetrievalIndex
        self._checked = 0.0
        self._lock = asyncio.Lock()

    def _wanted(self) -> dict | None:
        try:
            return json.loads(self.live_file.read_text())
        except FileNotFoundError:
            return None

    def _load(self, live: dict):
        from crawl2serve.assets.retrieval.index import RetrievalIndex

        root = self.live_file.parents[2]  # {data_root}/served_retrieval_index/_/live.json
        return RetrievalIndex.load(root / live["path"], qdrant_url=live.get("qdrant_url", ""))

    async def current(self):
        """The index to search now (loading or switching first when due); None when nothing is served yet."""
        now = time.monotonic()
        if self.index is not None and now - self._checked < self.reload_interval_s:
            return self.index
        async with self._lock:
            if self.index is not None and time.monotonic() - self._checked < self.reload_interval_s:
                return self.index
            live = await asyncio.to_thread(self._wanted)
            self._checked = time.monotonic()
            if live is None:
                return self.index
            if self.index is None or self.index.version != live["version"]:
                new = await asyncio.to_thread(self._load, live)
                old, self.index = self.index, new
                log.info("retrieval index version %s served", new.version)
                if old is not None:
                    old.close()
            return self.index

    def close(self) -> None:
        if self.index is not None:
            self.index.close()


class Reranker:
    """A sentence-transformers cross-encoder over (question, chunk) pairs; loaded on first use."""

    def __init__(self, model: str):
        self.model, self._encoder = model, None

    def order(self, question: str, hits: list) -> list:
        if self._encoder is None:
            from sentence_transformers import CrossEncoder

            self._encoder = CrossEncoder(self.model)
        scores = self._encoder.predict([(question, h.text) for h in hits])
        return [h for _, h in sorted(zip(scores, hits), key=lambda p: -p[0])]


def question_of(req) -> str:
    """What is searched: the last user message of a chat, else the prompt."""
    messages = getattr(req, "messages", None)
    if messages is None:
        return req.prompt_text()
    users = [m.text() for m in messages if m.role == "user"]
    return users[-1] if users else req.prompt_text()


def context_of(hits: list, max_chars: int) -> str:
    """The numbered sources, in order: each hit's title, URL and text, the text cut (at a word) to an equal
    share of ``max_chars``, so that every retrieved chunk is in the context and the context fits."""
    share = max_chars // max(len(hits), 1)
    parts = []
    for n, hit in enumerate(hits, start=1):
        head = f"[{n}] {hit.title} ({hit.url})\n"
        room = max(share - len(head), 0)
        text = hit.text if len(hit.text) <= room else hit.text[:room].rsplit(" ", 1)[0] + " …"
        parts.append(head + text + "\n")
    return "\n".join(parts)


class Retrieve:
    """The gateway step of the RAG model: search, build the context, re-address the request to the base model.
    Requests for other models pass untouched."""

    def __init__(self, settings: RagSettings, base_model: str, metrics):
        self.settings, self.base_model, self.metrics = settings, base_model, metrics
        self.live = LiveIndex(settings.live_file, settings.reload_interval_s)
        self.reranker = Reranker(settings.rerank_model) if settings.rerank_model else None
        self.cache = (
            SemanticCache(settings.cache_threshold, settings.cache_max_entries, settings.cache_ttl_s)
            if settings.cache_threshold > 0
            else None
        )

    def _cache_key(self, req, version: str, max_tokens: int) -> str | None:
        """What else a cached answer depends on; None when the request may not use the cache (a stream, or a
        conversation: only a single question is answered the same way whatever was said before)."""
        if self.cache is None or req.stream or len(getattr(req, "messages", [None])) != 1:
            return None
        sampling = {k: getattr(req, k, None) for k in ("temperature", "top_p", "seed", "stop")}
        return json.dumps([req.model, version, max_tokens, sampling], sort_keys=True, default=str)

    def remember(self, call, text: str, finish: str | None) -> None:
        """Keep a completed answer (its text before the citations) for the questions that will resemble it."""
        if call.semantic_key is not None and text and call.row.cache != "hit":  # a replay holds its citations
            self.cache.store(
                call.semantic_key, call.semantic_vector, {"text": text, "finish": finish, "sources": call.sources}
            )

    def wants(self, model: str) -> bool:
        name = self.settings.model
        return model == name or model.startswith(name + "@")

    async def __call__(self, call) -> None:
        req = call.req
        if not self.wants(req.model):
            return
        index = await self.live.current()
        if index is None:
            raise ApiError(
                503,
                f"model {req.model!r}: no retrieval index is served yet (materialize the retrieval job: "
                "retrieval_index → retrieval_eval → served_retrieval_index)",
                kind="server_error",
                code="retrieval_index_unavailable",
                headers={"Retry-After": "30"},
            )
        question = question_of(req)
        s = self.settings
        base = self.base_model + req.model[len(s.model) :]  # crawl2serve-rag@3 -> crawl2serve@3
        started = time.perf_counter()
        vector = await asyncio.to_thread(lambda: index.embed([question])[0])
        key = self._cache_key(req, index.version, call.max_tokens)
        if key is not None:
            found = self.cache.lookup(key, vector)
            call.row.semantic_cache_similarity = None if found.similarity is None else round(found.similarity, 6)
            if found.hit:
                call.semantic_hit, call.sources = found.answer, found.answer["sources"]
                call.row.update(retrieval_version=index.version, retrieval_urls=" ".join(call.sources))
                self.metrics.semantic_cache.labels("hit").inc()
                call.req = type(req).model_validate({**req.model_dump(exclude_none=True), "model": base})
                return
            self.metrics.semantic_cache.labels("miss").inc()
            call.semantic_key, call.semantic_vector = key, vector
        hits = await asyncio.to_thread(
            index.search, question, s.rerank_candidates if self.reranker else s.top_k, s.mode, vector
        )
        if self.reranker and hits:
            hits = await asyncio.to_thread(self.reranker.order, question, hits)
        hits = hits[: s.top_k]
        ms = (time.perf_counter() - started) * 1000
        used = hits
        context = context_of(used, s.max_context_chars)
        self.metrics.retrieval_seconds.observe(ms / 1000)
        self.metrics.retrieval_hits.observe(len(used))
        top = max((h.dense_score for h in used if h.dense_score is not None), default=None)
        call.row.update(
            retrieval_version=index.version,
            retrieval_ms=round(ms, 3),
            retrieval_hits=len(used),
            retrieval_top_score=None if top is None else round(top, 6),
            retrieval_urls=" ".join(h.url for h in used),
        )
        call.sources = [h.url for h in used]
        if hasattr(req, "messages"):
            messages = [m.model_dump(exclude_none=True) for m in req.messages]
            if used:
                messages = [{"role": "system", "content": SYSTEM + context}, *messages]
            call.req = type(req).model_validate(
                {**req.model_dump(exclude_none=True), "model": base, "messages": messages}
            )
        else:
            prompt = f"{SYSTEM}{context}\nQuestion: {req.prompt}\nAnswer:" if used else req.prompt
            call.req = type(req).model_validate({**req.model_dump(exclude_none=True), "model": base, "prompt": prompt})
        call.prompt = call.req.prompt_text()
        call.headers["X-Crawl2serve-Retrieval"] = f"{index.version}; hits={len(used)}; ms={ms:.1f}"


def semantic_answer(call):
    """The semantic cache's answer as an engine's (``upstream.Served``: no engine, position 0)."""
    from .upstream import Served

    hit = call.semantic_hit
    choice = {"index": 0, "finish_reason": hit["finish"]}
    choice.update({"message": {"role": "assistant", "content": hit["text"]}} if call.chat else {"text": hit["text"]})
    return Served(engine="", position=0, body={"choices": [choice]})


def citations(call) -> str:
    """The text that ends a RAG answer: its numbered source URLs ("" for other calls, none retrieved, or an
    answer replayed from the response cache, which holds them already)."""
    sources = getattr(call, "sources", None)
    if not sources or call.row.cache == "hit":
        return ""
    return "\n\nSources:\n" + "\n".join(f"[{i}] {url}" for i, url in enumerate(sources, start=1))
