"""The response cache: its framework-free parts (request key, memory store, Redis store), then through the
gateway as its own process in front of the real CPU engine serving two versions, driven by the ``openai``
client (in memory, the embedded default; and in the real Redis at 127.0.0.1:6379, db 3)."""

import asyncio
import time
import uuid

import openai
import pytest
import redis
from prometheus_client import CollectorRegistry

from crawl2serve.serving.gateway.auth import ApiKey
from crawl2serve.serving.gateway.cache import (
    MemoryStore,
    RedisStore,
    ResponseCache,
    cache_key,
    canonical_request,
    deterministic,
)
from crawl2serve.serving.gateway.call import Call
from crawl2serve.serving.gateway.logstore import read_rows
from crawl2serve.serving.gateway.routing import Route, read_routing, write_routing
from crawl2serve.serving.gateway.schemas import ChatRequest, CompletionRequest
from crawl2serve.serving.gateway.settings import CacheSettings
from tests.serving.helpers import metric, silent_server, start_gateway

REDIS_URL = "redis://127.0.0.1:6379/3"
PREFIX = "c2s-test-cache-"


# -- the key -------------------------------------------------------------------------------------------------


def test_only_greedy_or_seeded_requests_are_deterministic():
    req = lambda **kw: CompletionRequest(model="crawl2serve", prompt="p", **kw)  # noqa: E731
    assert deterministic(req(temperature=0.0)) and deterministic(req(temperature=0.9, seed=7))
    assert deterministic(req(seed=0))  # seed 0 is a seed
    assert not deterministic(req()) and not deterministic(req(temperature=0.7))  # engine default: sampled
    assert deterministic(ChatRequest(model="crawl2serve", messages=[{"role": "user", "content": "p"}], temperature=0.0))


def test_the_key_holds_what_changes_the_answer_and_nothing_else():
    payload = {"prompt": "The library", "max_tokens": 8, "temperature": 0.0, "stop": "\n", "stream": False}
    base = canonical_request("/v1/completions", "1", {"primary": "/m/v1"}, payload)
    # a streamed request (with its options) and a single stop string given as a list share the answer
    streamed = {**payload, "stream": True, "stream_options": {"include_usage": True}, "stop": ["\n"]}
    assert canonical_request("/v1/completions", "1", {"primary": "/m/v1"}, dict(reversed(streamed.items()))) == base
    others = [
        canonical_request("/v1/chat/completions", "1", {"primary": "/m/v1"}, payload),
        canonical_request("/v1/completions", "2", {"primary": "/m/v1"}, payload),  # the router chose another version
        canonical_request("/v1/completions", "1", {"primary": "/m/v1-new"}, payload),  # the version's folder changed
        canonical_request("/v1/completions", "1", {"cpu": "/m/v1"}, payload),
        *(
            canonical_request("/v1/completions", "1", {"primary": "/m/v1"}, {**payload, k: v})
            for k, v in [("max_tokens", 9), ("prompt", "The library "), ("seed", 1), ("top_p", 0.5), ("stop", "x")]
        ),
    ]
    assert len({base, *others}) == len(others) + 1
    acme, globex = cache_key("p:", "acme", base), cache_key("p:", "globex", base)
    assert acme.startswith("p:acme:") and globex.startswith("p:globex:") and acme[7:] == globex[9:]
    assert len(acme) == len("p:acme:") + 64


# -- the stores ----------------------------------------------------------------------------------------------


def test_memory_store_evicts_least_recently_used_by_bytes_and_expires():
    now = [0.0]
    store = MemoryStore(max_bytes=100, clock=lambda: now[0])
    run = asyncio.run
    run(store.set("a", b"x" * 39, ttl_s=10))  # 40 bytes with its key
    run(store.set("b", b"y" * 39, ttl_s=10))
    assert store.bytes == 80 and run(store.get("a")) == b"x" * 39  # "a" is now the most recently used
    run(store.set("c", b"z" * 39, ttl_s=10))  # 120 > 100: the least recently used ("b") goes
    assert run(store.get("b")) is None and run(store.get("a")) and run(store.get("c")) and store.bytes == 80
    run(store.set("c", b"w" * 9, ttl_s=10))  # replacing a key counts only its new value
    assert store.bytes == 50 and len(store) == 2
    run(store.set("big", b"q" * 100, ttl_s=10))  # larger than the whole store: not kept, nothing evicted
    assert run(store.get("big")) is None and len(store) == 2
    now[0] = 10.0  # at its TTL an entry is gone
    assert run(store.get("a")) is None and store.bytes == 10


@pytest.fixture(scope="module")
def redis_client():
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at 127.0.0.1:6379 (db 3): {exc}")
    yield client
    keys = list(client.scan_iter(match=PREFIX + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_redis_store_sets_with_ttl_and_reads_back(redis_client):
    key = f"{PREFIX}{uuid.uuid4().hex}:unit"

    async def go():
        store = RedisStore(REDIS_URL, timeout_s=1.0)
        try:
            assert await store.get(key) is None
            await store.set(key, b'{"text": "hi"}', ttl_s=30)
            return await store.get(key)
        finally:
            await store.aclose()

    assert asyncio.run(go()) == b'{"text": "hi"}'
    assert 29_000 < redis_client.pttl(key) <= 30_000


def _call(prompt: str = "p") -> Call:
    call = Call(None, "completions")
    call.req = CompletionRequest(model="crawl2serve", prompt=prompt, temperature=0.0)
    call.route = Route("crawl2serve", "1", "stable", {"primary": "/m/v1"})
    call.api_key = ApiKey("k1", "acme")
    call.engine_path, call.engine_payload = "/v1/completions", {"prompt": prompt, "max_tokens": 8, "temperature": 0.0}
    return call


def test_a_silent_redis_makes_a_miss_within_the_deadline_not_a_failure():
    with silent_server() as url:
        registry = CollectorRegistry()

        async def go():
            cache = ResponseCache(CacheSettings(enabled=True, redis_url=url, timeout_s=0.2), registry)
            start = time.perf_counter()
            call = _call()
            hit = await cache.lookup(call)
            elapsed = time.perf_counter() - start
            call.row.update(status=200, output="out", completion_tokens=1)
            cache.store(call, "out", "length")  # fails in its own task, logged and counted
            await cache.aclose()
            return hit, call.row.cache, elapsed

        hit, outcome, elapsed = asyncio.run(go())
    assert (hit, outcome) == (False, "miss") and elapsed < 2.0
    assert registry.get_sample_value("c2s_gateway_cache_lookups_total", {"outcome": "error"}) == 1
    assert registry.get_sample_value("c2s_gateway_cache_stores_total", {"outcome": "error"}) == 1


# -- through the gateway -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, cpu_engine, tiny_model, small_model):
    gw = start_gateway(
        tmp_path_factory.mktemp("gw-cache"),
        [("primary", cpu_engine.url)],
        tiny_model,
        versions={"2": small_model},
        cache={"enabled": True},
        shadow={"version": "2", "share": 1.0},  # every answer mirrored to version 2, but those of the cache
        tiers={"tiny": {"requests_per_minute": 3, "tokens_per_minute": 100_000}},
    )
    yield gw
    gw.stop()


def _client(gw, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key or gw.key, max_retries=0)


def _rows(gw, ids: list[str], timeout_s: float = 10.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = {r["request_id"]: r for r in read_rows(gw.settings.log_dir)[0] if r["role"] == "primary"}
        if all(i in rows for i in ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def _shape(chunks) -> list[str]:
    """A stream's event kinds in order, consecutive text events as one."""
    kinds = []
    for c in chunks:
        if not c.choices:
            kind = "usage"
        elif c.choices[0].finish_reason:
            kind = "finish"
        elif getattr(c.choices[0], "delta", None) is not None and c.choices[0].delta.role:
            kind = "role"
        else:
            kind = "text"
        if not (kinds and kinds[-1] == kind == "text"):
            kinds.append(kind)
    return kinds


COMPLETION = {"model": "crawl2serve", "prompt": "The committee reviewed", "max_tokens": 8, "temperature": 0}
CHAT = {
    "model": "crawl2serve",
    "messages": [{"role": "user", "content": "The library"}],
    "max_tokens": 6,
    "temperature": 0,
}
USAGE = {"stream_options": {"include_usage": True}}


def test_repeated_deterministic_requests_are_answered_from_the_cache(gateway):
    client = _client(gateway)
    first, again = client.completions.create(**COMPLETION), client.completions.create(**COMPLETION)
    assert again.choices[0].text == first.choices[0].text and again.usage == first.usage and again.id != first.id
    raw = client.completions.with_raw_response.create(**COMPLETION)
    assert raw.headers["x-crawl2serve-cache"] == "hit" and raw.parse().choices[0].text == first.choices[0].text
    chat1, chat2 = client.chat.completions.create(**CHAT), client.chat.completions.create(**CHAT)
    assert chat2.choices[0].message.content == chat1.choices[0].message.content and chat2.usage == chat1.usage
    # a stream of a cached answer replays it as a stream, with a live stream's events
    replay = list(client.completions.create(**COMPLETION, stream=True, **USAGE))
    live = list(client.completions.create(**{**COMPLETION, "prompt": "A river runs"}, stream=True, **USAGE))
    assert "".join(c.choices[0].text for c in replay if c.choices) == first.choices[0].text
    assert replay[-1].usage == first.usage and _shape(replay) == _shape(live) == ["text", "finish", "usage"]
    chat_replay = list(client.chat.completions.create(**CHAT, stream=True))
    chat_live = list(client.chat.completions.create(**{**CHAT, "max_tokens": 5}, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chat_replay) == chat1.choices[0].message.content
    assert _shape(chat_replay) == _shape(chat_live) == ["role", "text", "finish"]
    assert chat_replay[0].id == chat_replay[-1].id != chat1.id
    # sampled requests are not cached; seeded ones are
    sampled = client.completions.create(**{**COMPLETION, "temperature": 1.0})
    seeded = [client.completions.create(**{**COMPLETION, "temperature": 0.9, "seed": 7}) for _ in range(2)]
    assert seeded[0].choices[0].text == seeded[1].choices[0].text
    answers = [first, again, raw.parse(), chat1, chat2, replay[0], live[0], chat_replay[0], chat_live[0], sampled]
    answers += seeded
    rows = _rows(gateway, [a.id for a in answers])
    assert [rows[a.id]["cache"] for a in answers] == [
        "miss", "hit", "hit", "miss", "hit", "hit", "miss", "hit", "miss", "bypass", "miss", "hit"
    ]  # fmt: skip
    hit, miss = rows[again.id], rows[first.id]
    assert (hit["engine"], miss["engine"]) == ("", "primary") and hit["model_version"] == miss["model_version"] == "1"
    assert hit["output"] == miss["output"] and hit["status"] == 200 and hit["stream"] is False
    assert hit["cost_usd"] == 0 < miss["cost_usd"]  # a hit took no engine time
    assert (hit["prompt_tokens"], hit["completion_tokens"]) == (miss["prompt_tokens"], miss["completion_tokens"])
    assert rows[replay[0].id]["stream"] is True and rows[replay[0].id]["ttft_ms"] is not None
    hits = [rows[a.id] for a in answers if rows[a.id]["cache"] == "hit"]
    assert metric(gateway.url, "c2s_gateway_cache_lookups_total", outcome="hit") == len(hits) == 6
    assert metric(gateway.url, "c2s_gateway_cache_lookups_total", outcome="bypass") == 1
    assert metric(gateway.url, "c2s_gateway_cache_hit_ratio") == pytest.approx(6 / 11)
    assert metric(gateway.url, "c2s_gateway_cache_saved_tokens_total", direction="out") == sum(
        r["completion_tokens"] for r in hits
    )
    assert metric(gateway.url, "c2s_gateway_cache_bytes") > 0
    assert metric(gateway.url, "c2s_gateway_cache_stores_total", outcome="stored") == 5
    # a cached answer says nothing of the champion's engine: not mirrored to the shadow
    assert metric(gateway.url, "c2s_gateway_shadow_requests_total", outcome="queued") == len(answers) - len(hits)


def test_a_hit_is_rate_limited_and_tenants_do_not_share_entries(gateway):
    key, _ = gateway.keys.add("tinyco", "tiny")  # 3 requests a minute
    time.sleep(1.1)  # the gateway re-reads its key file at most once a second
    client = _client(gateway, key)
    answers = [client.completions.create(**COMPLETION) for _ in range(3)]
    with pytest.raises(openai.RateLimitError):  # cached, and still the tier's limit
        client.completions.create(**COMPLETION)
    rows = _rows(gateway, [a.id for a in answers])
    # acme cached this request before: tinyco's first one is a miss of its own namespace
    assert [rows[a.id]["cache"] for a in answers] == ["miss", "hit", "hit"]
    limited = [r for r in rows.values() if r["tenant"] == "tinyco" and r["status"] == 429]
    assert len(limited) == 1 and limited[0]["cache"] == ""  # rejected before the lookup


def test_a_routing_change_to_another_version_is_a_miss(gateway):
    client = _client(gateway)
    cached = client.completions.create(**COMPLETION)  # version 1's answer (cached now if it was not)
    path = gateway.settings.routing_file
    table = read_routing(path)
    write_routing(path, {**table, "stable": "2"})
    time.sleep(0.7)  # the router re-reads routing.json when it changed, checked every 0.5 s
    try:
        moved = client.completions.create(**COMPLETION)
        pinned = client.completions.create(**{**COMPLETION, "model": "crawl2serve@2"})
    finally:
        write_routing(path, table)
        time.sleep(0.7)
    back = client.completions.create(**COMPLETION)
    rows = _rows(gateway, [cached.id, moved.id, pinned.id, back.id])
    assert rows[cached.id]["model_version"] == "1"
    assert [(rows[a.id]["model_version"], rows[a.id]["cache"]) for a in (moved, pinned, back)] == [
        ("2", "miss"),
        ("2", "hit"),  # version 2's answer, cached by the request just before (same version, same request)
        ("1", "hit"),
    ]
    assert moved.choices[0].text == pinned.choices[0].text != cached.choices[0].text == back.choices[0].text


@pytest.fixture(scope="module")
def redis_gateway(tmp_path_factory, cpu_engine, tiny_model, redis_client):
    prefix = f"{PREFIX}{uuid.uuid4().hex}:"
    gw = start_gateway(
        tmp_path_factory.mktemp("gw-cache-redis"),
        [("primary", cpu_engine.url)],
        tiny_model,
        cache={"enabled": True, "redis_url": REDIS_URL, "prefix": prefix, "ttl_s": 60},
    )
    yield gw
    gw.stop()


def test_the_cache_in_redis(redis_gateway, redis_client):
    gw = redis_gateway
    client = _client(gw)
    first, again = client.completions.create(**COMPLETION), client.completions.create(**COMPLETION)
    (key,) = redis_client.keys(gw.settings.cache.prefix + "*")
    assert key.decode().startswith(gw.settings.cache.prefix + "acme:")
    assert 55_000 < redis_client.pttl(key) <= 60_000 and first.choices[0].text.encode() in redis_client.get(key)
    redis_client.delete(key)  # the gateway holds nothing itself: without the key, a miss
    third = client.completions.create(**COMPLETION)
    rows = _rows(gw, [first.id, again.id, third.id])
    assert [rows[a.id]["cache"] for a in (first, again, third)] == ["miss", "hit", "miss"]
    assert again.choices[0].text == third.choices[0].text == first.choices[0].text
    assert metric(gw.url, "c2s_gateway_cache_lookups_total", outcome="hit") == 1
