"""Per-tenant token buckets: the in-memory limiter and the Redis one (real Redis, db 15), reserve → settle with
debt, the budget invariant on simulated traffic counted by a real tokenizer, and a Redis that never answers."""

import asyncio
import heapq
import math
import random
import threading
import time
import uuid

import pytest
import redis

from crawl2serve.serving.gateway.ratelimit import (
    DEFAULT_TIERS,
    Decision,
    MemoryLimiter,
    RedisLimiter,
    Tier,
    make_limiter,
)
from crawl2serve.serving.gateway.tokens import TokenCounter
from tests.serving.helpers import longest_loop_stall, silent_server

REDIS_URL = "redis://127.0.0.1:6379/15"

# 60 requests/min = 1/s, 600 tokens/min = 10/s; bursts: 3 requests, 100 tokens.
SMALL = Tier("small", requests_per_minute=60, tokens_per_minute=600, burst_requests=3, burst_tokens=100)


def test_default_tiers():
    assert set(DEFAULT_TIERS) == {"free", "pro", "enterprise"}
    free, pro, ent = DEFAULT_TIERS["free"], DEFAULT_TIERS["pro"], DEFAULT_TIERS["enterprise"]
    assert (free.requests_per_minute, free.tokens_per_minute) == (60, 20_000)
    assert (pro.requests_per_minute, pro.tokens_per_minute) == (600, 200_000)
    assert (ent.requests_per_minute, ent.tokens_per_minute) == (6000, 2_000_000)
    for tier in DEFAULT_TIERS.values():
        assert tier.burst_requests == tier.requests_per_minute
        assert tier.burst_tokens == tier.tokens_per_minute
        assert DEFAULT_TIERS[tier.name] is tier


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"tokens_per_minute": -1}, "tokens_per_minute"),
        ({"burst_tokens": 0}, "burst_tokens"),
        ({"burst_requests": 0.5}, "burst_requests"),
    ],
)
def test_tier_validation(kwargs, word):
    args = {"requests_per_minute": 60, "tokens_per_minute": 600, "burst_requests": 3, "burst_tokens": 100}
    with pytest.raises(ValueError, match=word):
        Tier("bad", **(args | kwargs))


def test_make_limiter():
    assert isinstance(make_limiter(None), MemoryLimiter)
    assert isinstance(make_limiter(""), MemoryLimiter)
    limiter = make_limiter(REDIS_URL, timeout_s=0.5)  # constructing does not connect
    assert isinstance(limiter, RedisLimiter) and limiter.timeout_s == 0.5
    asyncio.run(limiter.aclose())


# -- shared behaviour, run against both limiters ----------------------------------------------------


@pytest.fixture(scope="module")
def redis_client():
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.skip(f"Redis not reachable at 127.0.0.1:6379: {e}")
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client):
    """A random key prefix; only its keys are deleted afterwards."""
    p = f"c2s:test:{uuid.uuid4().hex}:"
    yield p
    keys = list(redis_client.scan_iter(match=p + "*"))
    if keys:
        redis_client.delete(*keys)


class Sync:
    """A limiter driven from synchronous test code, on an event loop of its own (the Redis limiter's
    connections belong to one loop)."""

    def __init__(self, make):
        self.loop = asyncio.new_event_loop()
        self.limiter = self.run(_build(make))

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def reserve(self, *args, **kwargs) -> Decision:
        return self.run(self.limiter.reserve(*args, **kwargs))

    def settle(self, *args, **kwargs) -> float:
        return self.run(self.limiter.settle(*args, **kwargs))

    def close(self):
        self.run(self.limiter.aclose())
        self.loop.close()


async def _build(make):
    return make()


@pytest.fixture(params=["memory", "redis"])
def limiter(request):
    if request.param == "memory":
        lim = Sync(MemoryLimiter)
    else:
        p = request.getfixturevalue("prefix")
        lim = Sync(lambda: RedisLimiter(REDIS_URL, prefix=p, timeout_s=2.0))
    yield lim
    lim.close()


def test_burst_then_deny_on_requests(limiter):
    results = [limiter.reserve("acme", SMALL, 1, now=0.0) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining_requests for r in results[:3]] == pytest.approx([2, 1, 0])
    denied = results[3]
    assert denied.limit == "requests"
    assert denied.retry_after_s == pytest.approx(1.0)  # 1 request/s
    assert results[0].limit is None and results[0].retry_after_s == 0


def test_refill_over_time(limiter):
    for _ in range(3):
        assert limiter.reserve("acme", SMALL, 0, now=0.0).allowed
    assert not limiter.reserve("acme", SMALL, 0, now=0.5).allowed
    d = limiter.reserve("acme", SMALL, 0, now=0.5)
    assert d.retry_after_s == pytest.approx(0.5)
    assert limiter.reserve("acme", SMALL, 0, now=1.0).allowed
    # refill is capped at the burst
    d = limiter.reserve("acme", SMALL, 0, now=1000.0)
    assert d.allowed and d.remaining_requests == pytest.approx(2)
    assert d.remaining_tokens == pytest.approx(100)


def test_deny_on_tokens_takes_nothing(limiter):
    d = limiter.reserve("acme", SMALL, 80, now=0.0)
    assert d.allowed and d.remaining_tokens == pytest.approx(20)
    d = limiter.reserve("acme", SMALL, 50, now=0.0)
    assert not d.allowed and d.limit == "tokens"
    assert d.retry_after_s == pytest.approx(3.0)  # 30 missing tokens at 10/s
    # neither bucket was touched by the denied call
    assert d.remaining_requests == pytest.approx(2) and d.remaining_tokens == pytest.approx(20)
    d = limiter.reserve("acme", SMALL, 20, now=0.0)
    assert d.allowed and d.remaining_requests == pytest.approx(1) and d.remaining_tokens == pytest.approx(0)
    assert not limiter.reserve("acme", SMALL, 50, now=3.0).allowed  # 30 tokens back
    assert limiter.reserve("acme", SMALL, 50, now=5.0).allowed  # 50 tokens back


def test_retry_after_reports_the_binding_limit(limiter):
    for _ in range(3):
        limiter.reserve("acme", SMALL, 30, now=0.0)  # requests 0, tokens 10
    d = limiter.reserve("acme", SMALL, 100, now=0.0)  # needs 1 s for a request, 9 s for tokens
    assert not d.allowed and d.limit == "tokens" and d.retry_after_s == pytest.approx(9.0)
    d = limiter.reserve("acme", SMALL, 5, now=0.0)
    assert not d.allowed and d.limit == "requests" and d.retry_after_s == pytest.approx(1.0)
    # waiting the advertised time is enough
    assert limiter.reserve("acme", SMALL, 5, now=1.0).allowed


def test_request_larger_than_bucket_never_fits(limiter):
    d = limiter.reserve("acme", SMALL, 101, now=0.0)
    assert not d.allowed and d.limit == "tokens" and math.isinf(d.retry_after_s)
    assert limiter.reserve("acme", SMALL, 100, now=0.0).allowed  # exactly the capacity fits
    limiter.settle("acme", SMALL, 100, 150, now=0.0)  # in debt, a too-large request still says "never"
    d = limiter.reserve("acme", SMALL, 101, now=0.0)
    assert not d.allowed and math.isinf(d.retry_after_s)


def test_tenants_are_independent(limiter):
    for _ in range(3):
        limiter.reserve("a", SMALL, 0, now=0.0)
    assert not limiter.reserve("a", SMALL, 0, now=0.0).allowed
    assert limiter.reserve("b", SMALL, 0, now=0.0).allowed


def test_settle_gives_back_unused_tokens_up_to_capacity(limiter):
    assert limiter.reserve("acme", SMALL, 90, now=0.0).allowed  # reserve prompt + max_tokens
    assert limiter.settle("acme", SMALL, 90, 30, now=0.0) == pytest.approx(70)  # used only 30
    assert limiter.reserve("acme", SMALL, 70, now=0.0).allowed
    assert limiter.settle("acme", SMALL, 1000, 0, now=0.0) == pytest.approx(100)  # capped
    assert limiter.reserve("acme", SMALL, 100, now=0.0).remaining_tokens == pytest.approx(0)


def test_settle_charges_the_overrun_as_debt_repaid_by_refill(limiter):
    assert limiter.reserve("acme", SMALL, 60, now=0.0).allowed
    assert limiter.settle("acme", SMALL, 60, 150, now=0.0) == pytest.approx(-50)  # 90 more than reserved
    d = limiter.reserve("acme", SMALL, 10, now=0.0)
    assert not d.allowed and d.limit == "tokens" and d.remaining_tokens == pytest.approx(-50)
    assert d.retry_after_s == pytest.approx(6.0)  # 50 of debt + 10 wanted, at 10/s
    assert not limiter.reserve("acme", SMALL, 10, now=5.5).allowed
    d = limiter.reserve("acme", SMALL, 10, now=6.0)
    assert d.allowed and d.remaining_tokens == pytest.approx(0)


def test_settle_unknown_tenant_starts_full(limiter):
    assert limiter.settle("nobody", SMALL, 50, 0, now=0.0) == pytest.approx(100)
    assert limiter.settle("other", SMALL, 0, 30, now=0.0) == pytest.approx(70)


def test_negative_tokens_rejected(limiter):
    with pytest.raises(ValueError, match="tokens"):
        limiter.reserve("acme", SMALL, -1, now=0.0)
    with pytest.raises(ValueError, match="reserved"):
        limiter.settle("acme", SMALL, -1, 0, now=0.0)
    with pytest.raises(ValueError, match="used"):
        limiter.settle("acme", SMALL, 0, -1, now=0.0)


def test_clock_going_backwards_adds_nothing(limiter):
    for _ in range(3):
        limiter.reserve("acme", SMALL, 0, now=10.0)
    assert not limiter.reserve("acme", SMALL, 0, now=5.0).allowed
    assert not limiter.reserve("acme", SMALL, 0, now=10.5).allowed
    assert limiter.reserve("acme", SMALL, 0, now=11.0).allowed


def test_tier_upgrade_applies_immediately(limiter):
    for _ in range(3):
        limiter.reserve("acme", SMALL, 0, now=0.0)
    big = Tier("big", 60, 600, burst_requests=10, burst_tokens=100)
    assert not limiter.reserve("acme", big, 0, now=0.0).allowed  # levels carry over...
    assert limiter.reserve("acme", big, 0, now=1.0).allowed  # ...and refill toward the new capacity


def test_parallel_reservations_admit_exactly_what_fits(limiter):
    """asyncio.gather of 160 reservations of 7 tokens from a 1000-token bucket: 142 fit, never more."""
    tier = Tier("t", requests_per_minute=1e6, tokens_per_minute=1e-6, burst_requests=1e6, burst_tokens=1000)

    async def burst():
        return await asyncio.gather(*[limiter.limiter.reserve("acme", tier, 7, now=0.0) for _ in range(160)])

    results = limiter.run(burst())
    assert sum(d.allowed for d in results) == 1000 // 7
    assert min(d.remaining_tokens for d in results if d.allowed) == pytest.approx(1000 - 7 * 142)


def test_memory_limiter_is_thread_safe():
    lim = MemoryLimiter()
    tier = Tier("t", requests_per_minute=1e-6, tokens_per_minute=1e6, burst_requests=50, burst_tokens=1e6)
    results: list[Decision] = []
    lock = threading.Lock()

    def work():
        loop = asyncio.new_event_loop()
        for _ in range(20):
            d = loop.run_until_complete(lim.reserve("acme", tier, 1, now=0.0))
            with lock:
                results.append(d)
        loop.close()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 160 and sum(d.allowed for d in results) == 50


def test_real_clock_default(limiter):
    """Without ``now`` each limiter uses its own clock (monotonic / Redis TIME)."""
    d = limiter.reserve("acme", SMALL, 10)
    assert d.allowed and d.remaining_tokens == pytest.approx(90, abs=0.5)
    assert limiter.settle("acme", SMALL, 10, 4) == pytest.approx(96, abs=0.5)


# -- the budget invariant, on simulated traffic counted by a real tokenizer -------------------------


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> str:
    """A byte-level BPE tokenizer trained on English prose (emoji and CJK fall apart into bytes), with a
    chat template that adds role markers, as ``build_merged`` saves one."""
    from crawl2serve.assets.training.base_model import train_bpe_tokenizer
    from tests.support import PROSE

    tok = train_bpe_tokenizer([PROSE] * 20, vocab_size=300)
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant: {% endif %}"
    )
    folder = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(folder)
    return str(folder)


ASCII = [
    "The committee reviewed the budget",
    "Summarize the report in two lines",
    "Why is the sky blue?",
    "Write a haiku about the sea and the wind over the harbour at night",
]
EMOJI = ["😀", "🚀", "👍🏽", "🇫🇷", "🧑‍💻", "❤️"]
CJK = "数据中心的模型训练需要大量计算资源東京の天気は晴れです서울은한국의수도입니다"


def random_prompt(rng: random.Random) -> str:
    kind = rng.choice(["ascii", "emoji", "cjk", "mixed"])
    if kind == "ascii":
        return " ".join(rng.choice(ASCII) for _ in range(rng.randint(1, 6)))
    if kind == "emoji":
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(5, 60)))
    if kind == "cjk":
        return "".join(rng.choice(CJK) for _ in range(rng.randint(5, 80)))
    return " ".join(
        rng.choice([rng.choice(ASCII), rng.choice(EMOJI) * 3, CJK[: rng.randint(2, 20)]])
        for _ in range(rng.randint(2, 8))
    )


def window_excess(admitted: list[tuple[float, int]], tier: Tier, windows: list[float]) -> float:
    """The largest ``used - (burst + rate·T)`` over windows of each length T starting at each admission."""
    admitted = sorted(admitted)
    worst = -math.inf
    for T in windows:
        j, total = 0, 0
        for i, (start, _) in enumerate(admitted):  # two pointers: window [start, start + T]
            while j < len(admitted) and admitted[j][0] <= start + T:
                total += admitted[j][1]
                j += 1
            worst = max(worst, total - (tier.burst_tokens + tier.tokens_per_s * T))
            total -= admitted[i][1]
    return worst


async def simulate(
    limiter,
    tier: Tier,
    tenant: str,
    *,
    clients: int,
    duration_s: float,
    count,
    engine_count,
    seed: int,
    debt: bool = True,
    max_tokens: int = 32,
) -> tuple[list[tuple[float, int]], int]:
    """``clients`` parallel clients on a simulated clock, each sending a request, waiting for its answer
    (0.05-3 s) and sending the next, a denied one retrying after the advertised time (capped at 1 s), now and
    then idle. Requests due at the same instant are reserved concurrently (asyncio.gather). The limiter is
    told ``count(prompt) + max_tokens``; the engine uses ``engine_count(prompt)`` + up to max_tokens.
    ``debt=False`` settles like the gateway before this change (a refund when under, the overrun never charged).
    Returns [(admitted at, tokens used)] and the largest tokens one request used."""
    rng = random.Random(seed)
    tick = 0.05  # times are multiples of 50 ms, so that requests often fall due together

    def at(t: float) -> int:
        return max(1, round(t / tick))

    events = [(at(rng.uniform(0, 0.5)), i, "send", None) for i in range(clients)]
    heapq.heapify(events)
    admitted, biggest = [], 0
    while events:
        step = events[0][0]
        now = step * tick
        due = []
        while events and events[0][0] == step:
            due.append(heapq.heappop(events))
        sends = [
            (c, rng.choice([random_prompt(rng), random_prompt(rng)]))
            for _, c, kind, _ in due
            if kind == "send" and now < duration_s
        ]
        settles = [(c, info) for _, c, kind, info in due if kind == "settle"]
        for c, (reserved, used) in settles:
            if not debt:
                used_charged = min(used, reserved)
                await limiter.settle(tenant, tier, reserved, used_charged, now=now)
            else:
                await limiter.settle(tenant, tier, reserved, used, now=now)
            pause = rng.uniform(2, 8) if rng.random() < 0.05 else rng.uniform(0, 0.2)
            heapq.heappush(events, (step + at(pause), c, "send", None))
        wants = [count(p) + max_tokens for _, p in sends]
        decisions = await asyncio.gather(*[limiter.reserve(tenant, tier, w, now=now) for w in wants])
        for (c, prompt), want, d in zip(sends, wants, decisions):
            if d.allowed:
                used = engine_count(prompt) + rng.randint(0, max_tokens)
                admitted.append((now, used))
                biggest = max(biggest, used)
                heapq.heappush(events, (step + at(rng.uniform(0.05, 3.0)), c, "settle", (want, used)))
            else:
                assert not math.isinf(d.retry_after_s), "every simulated request fits the burst"
                heapq.heappush(events, (step + at(min(d.retry_after_s, 1.0)), c, "send", None))
    return admitted, biggest


# 600 tokens a minute with a 600-token burst: the tier of the observation ("180-emoji prompts used 12,257 tokens
# in a minute"); requests of 20-400 tokens.
MINUTE = Tier("minute", requests_per_minute=1e6, tokens_per_minute=600, burst_requests=1e6, burst_tokens=600)
WINDOWS = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0]


@pytest.fixture(scope="module")
def counts(tokenizer_dir):
    """The gateway's count (tokenizers + the chat template) and the engine's (transformers' tokenizer)."""
    from transformers import AutoTokenizer

    counter, hf = TokenCounter(), AutoTokenizer.from_pretrained(tokenizer_dir)
    assert counter.load(tokenizer_dir) is not None
    return (lambda p: counter.count(tokenizer_dir, prompt=p)), (lambda p: len(hf(p)["input_ids"]))


@pytest.mark.parametrize("clients", [1, 8])
def test_tokens_used_within_budget_plus_one_request_over_every_window(limiter, counts, clients):
    count, engine_count = counts
    admitted, biggest = limiter.run(
        simulate(
            limiter.limiter,
            MINUTE,
            "acme",
            clients=clients,
            duration_s=180,
            count=count,
            engine_count=engine_count,
            seed=clients,
        )
    )
    assert len(admitted) > 20
    assert max(u for _, u in admitted) > 200 and min(u for _, u in admitted) < 60, "large and small requests"
    used = sum(u for _, u in admitted)
    assert used > 0.8 * (MINUTE.burst_tokens + MINUTE.tokens_per_s * 180), "the clients kept the bucket busy"
    excess = window_excess(admitted, MINUTE, WINDOWS)
    assert excess <= biggest, f"a window used {excess:.0f} tokens beyond burst + rate·T (one request: {biggest})"


def test_an_underestimating_count_is_caught_up_by_debt(counts):
    """With the prompt estimated at len/4 (what the gateway did), a client waiting for each answer still stays
    within the budget plus one request: each overrun is charged before its next request."""
    _, engine_count = counts
    admitted, biggest = asyncio.run(
        simulate(
            MemoryLimiter(),
            MINUTE,
            "acme",
            clients=1,
            duration_s=180,
            count=lambda p: len(p) // 4 + 1,
            engine_count=engine_count,
            seed=3,
        )
    )
    assert window_excess(admitted, MINUTE, WINDOWS) <= biggest


def test_without_debt_the_budget_is_bypassed(counts):
    """The accounting before this change (len/4 estimate, overrun never charged): the same check fails by far."""
    _, engine_count = counts
    admitted, biggest = asyncio.run(
        simulate(
            MemoryLimiter(),
            MINUTE,
            "acme",
            clients=8,
            duration_s=180,
            count=lambda p: len(p) // 4 + 1,
            engine_count=engine_count,
            seed=8,
            debt=False,
        )
    )
    used = sum(u for _, u in admitted)
    budget = MINUTE.burst_tokens + MINUTE.tokens_per_s * 180
    assert used > 2 * budget and window_excess(admitted, MINUTE, WINDOWS) > 5 * biggest


# -- Redis specifics ------------------------------------------------------------------------------


def redis_limiter(prefix: str, **kwargs) -> Sync:
    return Sync(lambda: RedisLimiter(REDIS_URL, prefix=prefix, **kwargs))


def test_two_redis_limiters_share_state(prefix):
    a, b = redis_limiter(prefix), redis_limiter(prefix)
    try:
        assert a.reserve("acme", SMALL, 60, now=0.0).allowed
        d = b.reserve("acme", SMALL, 60, now=0.0)  # another replica sees the first one's take
        assert not d.allowed and d.limit == "tokens" and d.remaining_tokens == pytest.approx(40)
        assert b.reserve("acme", SMALL, 40, now=0.0).allowed
        assert a.settle("acme", SMALL, 60, 35, now=0.0) == pytest.approx(25)
        assert b.reserve("acme", SMALL, 25, now=0.0).allowed
        assert not a.reserve("acme", SMALL, 0, now=0.0).allowed  # 3 requests used across both
        assert b.settle("acme", SMALL, 40, 60, now=0.0) == pytest.approx(-20)  # a debt is shared too
        assert not a.reserve("acme", SMALL, 1, now=1.0).allowed
    finally:
        a.close()
        b.close()


def test_redis_key_layout_and_ttl(prefix, redis_client):
    lim = redis_limiter(prefix)
    try:
        lim.reserve("acme", SMALL, 10, now=5.0)
        key = prefix + "acme"
        assert lim.limiter.key("acme") == key
        fields = {k.decode(): float(v) for k, v in redis_client.hgetall(key).items()}
        assert fields == pytest.approx({"req": 2.0, "tok": 90.0, "ts": 5.0})
        # TTL = time until both buckets are full again (1 s for 1 request, 1 s for 10 tokens) + 1 s
        assert 1_000 < redis_client.pttl(key) <= 2_000
        lim.settle("acme", SMALL, 10, 300, now=5.0)  # 200 tokens of debt: 30 s to full
        assert 30_000 < redis_client.pttl(key) <= 31_000
    finally:
        lim.close()


def test_redis_script_registered_once(prefix):
    lim = redis_limiter(prefix)
    try:
        script = lim.limiter._script
        for _ in range(5):
            lim.reserve("acme", SMALL, 1, now=0.0)
        assert lim.limiter._script is script
    finally:
        lim.close()


def test_redis_unreachable_raises_quickly():
    lim = Sync(lambda: RedisLimiter("redis://127.0.0.1:1/0", timeout_s=0.2))
    try:
        start = time.perf_counter()
        with pytest.raises(redis.ConnectionError):
            lim.reserve("acme", SMALL, 1)
        assert time.perf_counter() - start < 0.5, "no retries with backoff"
    finally:
        lim.close()


@pytest.fixture
def silent_redis():
    with silent_server() as url:
        yield url


def test_a_redis_that_never_answers_does_not_block_the_event_loop(silent_redis):
    """20 concurrent reservations against a Redis that never replies: each fails after its deadline while a
    ticker task on the same loop keeps ticking every 10 ms."""

    async def scenario():
        lim = RedisLimiter(silent_redis, timeout_s=0.3, max_connections=8)
        calls = asyncio.gather(
            *[lim.reserve(f"t{i}", SMALL, 1) for i in range(20)], lim.settle("t0", SMALL, 5, 3), return_exceptions=True
        )
        try:
            return await longest_loop_stall(calls, interval_s=0.01)
        finally:
            await lim.aclose()

    results, stall = asyncio.run(scenario())
    assert all(isinstance(r, redis.TimeoutError) for r in results), results
    # a blocking client would stall the loop for its whole socket timeout (0.3 s) per call
    assert stall < 0.25, f"the loop stalled for {stall * 1000:.0f} ms"
