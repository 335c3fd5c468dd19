"""The response cache: exact-match answers of deterministic requests, per tenant, by routed version.

**What is cached.** Only a request whose answer is determined by its fields: temperature 0 (greedy), or a fixed
``seed``; any other is a ``bypass``. Its key is ``<prefix><tenant>:<sha256>`` of the canonical JSON (sorted
keys, no whitespace) of what changes the answer: the endpoint, the version the router chose and the model value
each engine is called with for it, and the engine payload (prompt or messages as the engine gets them,
``max_tokens`` as resolved, every sampling field; a single ``stop`` string as a list). ``stream`` and
``stream_options`` are not part of it: a streamed and a whole request share their answer. Tenants never share an
entry (their namespaces are separate key prefixes). A routing change invalidates by construction: a request the
router sends to another version (a new stable, a canary draw, a routing rule), or a version whose folder changed
in routing.json, has another key; old entries age out (TTL, and least recently used in memory).

**What is stored**: the answer's text, finish reason and usage, and the engine model that produced it, once
it was answered 200 and logged, and only a complete one (finish ``stop`` or ``length``; not blocked by the
output guardrail, not failed or cancelled, no tool calls), at most ``max_entry_bytes``. The request's
``response_format`` and ``tools`` are part of the key (they are in the engine payload); a replayed answer is
checked against its ``response_format`` again, like an engine's.

**A hit** is answered after everything before the engine ran (authentication, validation, routing, the rate
limit, which charges it like any answer: the tier bounds what a tenant is served, and the prompt guardrail),
and goes through the same output guardrail, accounting and inference-log row (``cache: "hit"``, ``engine``
"", ``cost_usd`` 0: no engine time) as an engine's answer; its response says ``X-Crawl2serve-Cache: hit`` (``miss``, ``bypass`` otherwise).
A streamed request replays as the same SSE events a live stream has (the role event, the text, the finish
event, usage when asked for, ``[DONE]``), the text in one event. Hits are not mirrored to a shadow
(:mod:`serving.gateway.shadow`): their latency is not the champion's.

Two stores behind one asynchronous interface: :class:`MemoryStore` (the embedded default; one process, bounded
by bytes, least recently used out; each worker of a multi-worker gateway has its own) and :class:`RedisStore`
(shared by every replica, ``redis.asyncio``, each call under a deadline: a Redis that fails or stalls makes a
miss, counted as ``error``, never a failed request).

``/metrics``: ``c2s_gateway_cache_lookups_total{outcome=hit|miss|bypass|error}``, ``c2s_gateway_cache_hit_ratio``
(hits / (hits + misses) of this process), ``c2s_gateway_cache_bytes`` (held in memory),
``c2s_gateway_cache_stores_total{outcome=stored|error}``, ``c2s_gateway_cache_stored_bytes_total``,
``c2s_gateway_cache_served_bytes_total`` and
``c2s_gateway_cache_saved_tokens_total{direction=in|out}`` (the tokens engines did not process because of hits).
"""

import asyncio
import collections
import hashlib
import json
import logging
import time
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from .call import Call
from .redis_client import deadline_redis
from .settings import CacheSettings
from .upstream import Served

log = logging.getLogger("crawl2serve.gateway")
ENTRY_FORMAT = 1  # part of every key: a change of what an entry holds invalidates the old ones
CACHEABLE_FINISH = ("stop", "length")
CACHE_HEADER = "X-Crawl2serve-Cache"  # the lookup's outcome in the response: hit, miss or bypass


def deterministic(req) -> bool:
    """Whether a request's answer is determined by its fields: greedy (temperature 0) or seeded."""
    return req.temperature == 0 or req.seed is not None


def canonical_request(endpoint: str, version: str, models: dict[str, str], payload: dict) -> bytes:
    """The canonical JSON of what changes a request's answer (see the module docstring)."""
    fields = {k: v for k, v in payload.items() if k not in ("stream", "stream_options")}
    if isinstance(fields.get("stop"), str):
        fields["stop"] = [fields["stop"]]
    doc = {"format": ENTRY_FORMAT, "endpoint": endpoint, "version": version, "models": models, "request": fields}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def cache_key(prefix: str, tenant: str, canonical: bytes) -> str:
    """``<prefix><tenant>:<sha256 of the canonical request>``: one namespace per tenant."""
    return f"{prefix}{tenant}:{hashlib.sha256(canonical).hexdigest()}"


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """Entries in this process's memory: at most ``max_bytes`` of values (and keys), the least recently used
    evicted first, each gone after its TTL (checked when read; expired ones are also evicted first as the LRU
    end is reached)."""

    def __init__(self, max_bytes: int, clock=time.monotonic):
        self.max_bytes, self.clock = max_bytes, clock
        self._entries: collections.OrderedDict[str, tuple[float, bytes]] = collections.OrderedDict()
        self.bytes = 0

    @staticmethod
    def _size(key: str, value: bytes) -> int:
        return len(key) + len(value)

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.bytes -= self._size(key, value)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if self.clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        size = self._size(key, value)
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        while self.bytes + size > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._entries[key] = (self.clock() + ttl_s, value)
        self.bytes += size

    async def aclose(self) -> None:
        self._entries.clear()
        self.bytes = 0


class RedisStore:
    """Entries in Redis (``SET key value PX ttl``; ``GET``), shared by every gateway replica. Redis bounds its
    memory itself (``maxmemory`` with an ``allkeys-lru`` or ``volatile-ttl`` policy). Every call has a deadline
    of ``timeout_s`` and no retries; its errors propagate (:class:`ResponseCache` counts them as misses)."""

    def __init__(self, url: str, timeout_s: float = 0.25, max_connections: int = 64):
        self.timeout_s = timeout_s
        self._redis = deadline_redis(url, timeout_s, max_connections)

    async def get(self, key: str) -> bytes | None:
        async with asyncio.timeout(self.timeout_s):
            return await self._redis.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        async with asyncio.timeout(self.timeout_s):
            await self._redis.set(key, value, px=max(1, int(ttl_s * 1000)))

    async def aclose(self) -> None:
        await self._redis.aclose(close_connection_pool=True)


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.lookups = Counter(
            "c2s_gateway_cache_lookups", "Response-cache lookups by outcome", ["outcome"], registry=r
        )
        self.hit_ratio = Gauge(
            "c2s_gateway_cache_hit_ratio",
            "Response cache: hits / (hits + misses) of this process since it started",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.bytes = Gauge(
            "c2s_gateway_cache_bytes", "Response cache: bytes held in memory", registry=r, multiprocess_mode="livesum"
        )
        self.stored_bytes = Counter("c2s_gateway_cache_stored_bytes", "Response cache: bytes stored", registry=r)
        self.served_bytes = Counter("c2s_gateway_cache_served_bytes", "Response cache: bytes answered", registry=r)
        self.stores = Counter(
            "c2s_gateway_cache_stores", "Response-cache stores by outcome: stored, error", ["outcome"], registry=r
        )
        self.saved_tokens = Counter(
            "c2s_gateway_cache_saved_tokens",
            "Tokens engines did not process thanks to cache hits: in (prompt), out (completion)",
            ["direction"],
            registry=r,
        )
        self._hits = self._misses = 0

    def looked_up(self, outcome: str) -> None:
        self.lookups.labels(outcome).inc()
        self._hits += outcome == "hit"
        self._misses += outcome in ("miss", "error")
        if self._hits + self._misses:
            self.hit_ratio.set(self._hits / (self._hits + self._misses))


def make_store(settings: CacheSettings) -> Store:
    """A RedisStore when the cache names a Redis URL, else a MemoryStore."""
    if settings.redis_url:
        return RedisStore(settings.redis_url, settings.timeout_s)
    return MemoryStore(settings.max_bytes)


class ResponseCache:
    """The gateway's cache: :meth:`lookup` before the engine, :meth:`store` once an answer is logged."""

    def __init__(self, settings: CacheSettings, registry: CollectorRegistry, store: Store | None = None):
        self.settings = settings
        self.backend = store if store is not None else make_store(settings)
        self.metrics = CacheMetrics(registry)
        self._storing: set[asyncio.Task] = set()

    def _held(self) -> None:
        if isinstance(self.backend, MemoryStore):
            self.metrics.bytes.set(self.backend.bytes)

    @property
    def enabled(self) -> bool:
        """Whether calls are looked up (else every call goes to the engine)."""
        return self.settings.enabled

    async def lookup(self, call: Call) -> bool:
        """Look the call up (its engine request must be prepared): True when it is answered from the cache
        (``call.served`` then holds the cached answer, shaped as an engine's), else False (a miss or bypass,
        the row says which)."""
        if not self.settings.enabled:
            return False
        if not deterministic(call.req):
            self._outcome(call, "bypass", "bypass")
            return False
        canonical = canonical_request(call.engine_path, call.route.version, call.route.models, call.engine_payload)
        call.cache_key = cache_key(self.settings.prefix, call.api_key.tenant, canonical)
        try:
            raw = await self.backend.get(call.cache_key)
            self._held()  # a read may have dropped an expired entry
        except Exception as exc:
            log.warning("response cache unavailable, request %s goes to the engine: %s", call.request_id, exc)
            self._outcome(call, "miss", "error")
            return False
        entry = _decode(raw) if raw is not None else None
        if entry is None:
            self._outcome(call, "miss", "miss")
            return False
        self._outcome(call, "hit", "hit")
        self.metrics.served_bytes.inc(len(raw))
        usage = entry["usage"]
        self.metrics.saved_tokens.labels("in").inc(usage.get("prompt_tokens") or 0)
        self.metrics.saved_tokens.labels("out").inc(usage.get("completion_tokens") or 0)
        call.row.update(served_model=entry["served_model"], adapter=entry["served_model"])
        call.served = Served(engine="", position=0, body=_engine_body(call.chat, entry))
        return True

    def _outcome(self, call: Call, row_value: str, counted: str) -> None:
        call.row.cache = row_value
        call.headers[CACHE_HEADER] = row_value
        self.metrics.looked_up(counted)

    def store(self, call: Call, text: str, finish: str | None) -> None:
        """Keep the answer of a logged, answered (200) call for its key, if it is complete and within
        ``max_entry_bytes``. Runs as a task of its own (a Redis round trip is not awaited by the answer)."""
        if call.cache_key is None or call.row.cache != "miss" or call.row.status != 200:
            return
        if finish not in CACHEABLE_FINISH or call.row.output_verdict == "block" or call.row.tool_calls:
            return  # an entry holds text only: an answer with tool calls is not replayed
        entry = {
            "text": text,
            "finish_reason": finish,
            "usage": {"prompt_tokens": call.row.prompt_tokens, "completion_tokens": call.row.completion_tokens},
            "served_model": call.row.served_model,
        }
        value = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if len(value) > self.settings.max_entry_bytes:
            return
        task = asyncio.get_running_loop().create_task(self._set(call.cache_key, value))
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def _set(self, key: str, value: bytes) -> None:
        try:
            await self.backend.set(key, value, self.settings.ttl_s)
        except Exception as exc:
            log.warning("response cache unavailable, answer not stored: %s", exc)
            self.metrics.stores.labels("error").inc()
            return
        self.metrics.stores.labels("stored").inc()
        self.metrics.stored_bytes.inc(len(value))
        self._held()

    @staticmethod
    async def batches(served: Served):
        """A cached answer as the JSON events of an engine's stream (text, finish, usage), in one batch (as
        :meth:`~serving.gateway.upstream.EnginePool.iter_batches` gives the events of one read)."""
        choice = served.body["choices"][0]
        if "message" in choice:
            text, delta = choice["message"]["content"], lambda t: {"delta": {"content": t} if t is not None else {}}
        else:
            text, delta = choice["text"], lambda t: {"text": t or ""}
        yield [
            {"choices": [{"index": 0, "finish_reason": None, **delta(text)}]},
            {"choices": [{"index": 0, "finish_reason": choice["finish_reason"], **delta(None)}]},
            {"choices": [], "usage": served.body["usage"]},
        ]

    async def aclose(self) -> None:
        if self._storing:
            await asyncio.gather(*self._storing, return_exceptions=True)
        await self.backend.aclose()


def _decode(raw: bytes) -> dict | None:
    """A stored entry, or None for one that cannot be read (treated as a miss and overwritten)."""
    try:
        entry = json.loads(raw)
        if isinstance(entry, dict) and isinstance(entry.get("text"), str) and isinstance(entry.get("usage"), dict):
            entry.setdefault("served_model", "")
            return entry
    except ValueError:
        pass
    return None


def _engine_body(chat: bool, entry: dict) -> dict:
    """A cached entry shaped as an engine's whole (non-streamed) answer."""
    choice = {"index": 0, "finish_reason": entry["finish_reason"]}
    if chat:
        choice["message"] = {"role": "assistant", "content": entry["text"]}
    else:
        choice["text"] = entry["text"]
    return {"choices": [choice], "usage": entry["usage"]}
