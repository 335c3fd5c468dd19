"""Per-tenant token buckets: the in-memory limiter and the Redis one (real Redis, db 15)."""

import math
import threading
import uuid

import pytest
import redis

from serving.gateway.ratelimit import (DEFAULT_TIERS, Decision, MemoryLimiter, RedisLimiter, Tier,
                                       make_limiter)

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


@pytest.mark.parametrize("kwargs, word", [
    ({"requests_per_minute": 0}, "requests_per_minute"),
    ({"tokens_per_minute": -1}, "tokens_per_minute"),
    ({"burst_tokens": 0}, "burst_tokens"),
    ({"burst_requests": 0.5}, "burst_requests"),
])
def test_tier_validation(kwargs, word):
    args = {"requests_per_minute": 60, "tokens_per_minute": 600, "burst_requests": 3, "burst_tokens": 100}
    with pytest.raises(ValueError, match=word):
        Tier("bad", **(args | kwargs))


def test_make_limiter():
    assert isinstance(make_limiter(None), MemoryLimiter)
    assert isinstance(make_limiter(""), MemoryLimiter)
    limiter = make_limiter(REDIS_URL)  # constructing does not connect
    assert isinstance(limiter, RedisLimiter)
    limiter.close()


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


@pytest.fixture(params=["memory", "redis"])
def limiter(request):
    if request.param == "memory":
        yield MemoryLimiter()
        return
    lim = RedisLimiter(REDIS_URL, prefix=request.getfixturevalue("prefix"))
    yield lim
    lim.close()


def test_burst_then_deny_on_requests(limiter):
    results = [limiter.check("acme", SMALL, 1, now=0.0) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining_requests for r in results[:3]] == pytest.approx([2, 1, 0])
    denied = results[3]
    assert denied.limit == "requests"
    assert denied.retry_after_s == pytest.approx(1.0)  # 1 request/s
    assert results[0].limit is None and results[0].retry_after_s == 0


def test_refill_over_time(limiter):
    for _ in range(3):
        assert limiter.check("acme", SMALL, 0, now=0.0).allowed
    assert not limiter.check("acme", SMALL, 0, now=0.5).allowed
    d = limiter.check("acme", SMALL, 0, now=0.5)
    assert d.retry_after_s == pytest.approx(0.5)
    assert limiter.check("acme", SMALL, 0, now=1.0).allowed
    # refill is capped at the burst
    d = limiter.check("acme", SMALL, 0, now=1000.0)
    assert d.allowed and d.remaining_requests == pytest.approx(2)
    assert d.remaining_tokens == pytest.approx(100)


def test_deny_on_tokens_takes_nothing(limiter):
    d = limiter.check("acme", SMALL, 80, now=0.0)
    assert d.allowed and d.remaining_tokens == pytest.approx(20)
    d = limiter.check("acme", SMALL, 50, now=0.0)
    assert not d.allowed and d.limit == "tokens"
    assert d.retry_after_s == pytest.approx(3.0)  # 30 missing tokens at 10/s
    # neither bucket was touched by the denied call
    assert d.remaining_requests == pytest.approx(2) and d.remaining_tokens == pytest.approx(20)
    d = limiter.check("acme", SMALL, 20, now=0.0)
    assert d.allowed and d.remaining_requests == pytest.approx(1) and d.remaining_tokens == pytest.approx(0)
    assert not limiter.check("acme", SMALL, 50, now=3.0).allowed  # 30 tokens back
    assert limiter.check("acme", SMALL, 50, now=5.0).allowed  # 50 tokens back


def test_retry_after_reports_the_binding_limit(limiter):
    for _ in range(3):
        limiter.check("acme", SMALL, 30, now=0.0)  # requests 0, tokens 10
    d = limiter.check("acme", SMALL, 100, now=0.0)  # needs 1 s for a request, 9 s for tokens
    assert not d.allowed and d.limit == "tokens" and d.retry_after_s == pytest.approx(9.0)
    d = limiter.check("acme", SMALL, 5, now=0.0)
    assert not d.allowed and d.limit == "requests" and d.retry_after_s == pytest.approx(1.0)
    # waiting the advertised time is enough
    assert limiter.check("acme", SMALL, 5, now=1.0).allowed


def test_request_larger_than_bucket_never_fits(limiter):
    d = limiter.check("acme", SMALL, 101, now=0.0)
    assert not d.allowed and d.limit == "tokens" and math.isinf(d.retry_after_s)
    assert limiter.check("acme", SMALL, 100, now=0.0).allowed  # exactly the capacity fits


def test_tenants_are_independent(limiter):
    for _ in range(3):
        limiter.check("a", SMALL, 0, now=0.0)
    assert not limiter.check("a", SMALL, 0, now=0.0).allowed
    assert limiter.check("b", SMALL, 0, now=0.0).allowed


def test_refund_gives_back_unused_tokens_up_to_capacity(limiter):
    assert limiter.check("acme", SMALL, 90, now=0.0).allowed  # reserve prompt + max_tokens
    assert limiter.refund("acme", SMALL, 60, now=0.0) == pytest.approx(70)  # used only 30
    assert limiter.check("acme", SMALL, 70, now=0.0).allowed
    assert limiter.refund("acme", SMALL, 1000, now=0.0) == pytest.approx(100)  # capped
    assert limiter.check("acme", SMALL, 100, now=0.0).remaining_tokens == pytest.approx(0)


def test_refund_unknown_tenant_stays_at_capacity(limiter):
    assert limiter.refund("nobody", SMALL, 50, now=0.0) == pytest.approx(100)


def test_negative_tokens_rejected(limiter):
    with pytest.raises(ValueError, match="tokens"):
        limiter.check("acme", SMALL, -1, now=0.0)
    with pytest.raises(ValueError, match="tokens"):
        limiter.refund("acme", SMALL, -1, now=0.0)


def test_clock_going_backwards_adds_nothing(limiter):
    for _ in range(3):
        limiter.check("acme", SMALL, 0, now=10.0)
    assert not limiter.check("acme", SMALL, 0, now=5.0).allowed
    assert not limiter.check("acme", SMALL, 0, now=10.5).allowed
    assert limiter.check("acme", SMALL, 0, now=11.0).allowed


def test_tier_upgrade_applies_immediately(limiter):
    for _ in range(3):
        limiter.check("acme", SMALL, 0, now=0.0)
    big = Tier("big", 60, 600, burst_requests=10, burst_tokens=100)
    assert not limiter.check("acme", big, 0, now=0.0).allowed  # levels carry over...
    assert limiter.check("acme", big, 0, now=1.0).allowed  # ...and refill toward the new capacity


def test_concurrent_checks_admit_exactly_the_burst(limiter):
    tier = Tier("t", requests_per_minute=1e-6, tokens_per_minute=1e6, burst_requests=50, burst_tokens=1e6)
    results: list[Decision] = []
    lock = threading.Lock()

    def work():
        for _ in range(20):
            d = limiter.check("acme", tier, 1, now=0.0)
            with lock:
                results.append(d)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 160
    assert sum(d.allowed for d in results) == 50


def test_real_clock_default(limiter):
    """Without ``now`` each limiter uses its own clock (monotonic / Redis TIME)."""
    d = limiter.check("acme", SMALL, 10)
    assert d.allowed and d.remaining_tokens == pytest.approx(90, abs=0.5)


# -- Redis specifics ------------------------------------------------------------------------------


def test_two_redis_limiters_share_state(prefix):
    a, b = RedisLimiter(REDIS_URL, prefix=prefix), RedisLimiter(REDIS_URL, prefix=prefix)
    try:
        assert a.check("acme", SMALL, 60, now=0.0).allowed
        d = b.check("acme", SMALL, 60, now=0.0)  # another replica sees the first one's take
        assert not d.allowed and d.limit == "tokens" and d.remaining_tokens == pytest.approx(40)
        assert b.check("acme", SMALL, 40, now=0.0).allowed
        assert a.refund("acme", SMALL, 25, now=0.0) == pytest.approx(25)
        assert b.check("acme", SMALL, 25, now=0.0).allowed
        assert not a.check("acme", SMALL, 0, now=0.0).allowed  # 3 requests used across both
    finally:
        a.close()
        b.close()


def test_redis_key_layout_and_ttl(prefix, redis_client):
    lim = RedisLimiter(REDIS_URL, prefix=prefix)
    try:
        lim.check("acme", SMALL, 10, now=5.0)
        key = prefix + "acme"
        assert lim.key("acme") == key
        fields = {k.decode(): float(v) for k, v in redis_client.hgetall(key).items()}
        assert fields == pytest.approx({"req": 2.0, "tok": 90.0, "ts": 5.0})
        # TTL = time to refill both buckets fully (10 s for tokens) + 1 s: an expired key was full anyway
        assert 10_000 < redis_client.pttl(key) <= 11_000
    finally:
        lim.close()


def test_redis_script_registered_once(prefix):
    lim = RedisLimiter(REDIS_URL, prefix=prefix)
    try:
        script = lim._take
        for _ in range(5):
            lim.check("acme", SMALL, 1, now=0.0)
        assert lim._take is script
    finally:
        lim.close()


def test_redis_unreachable_raises():
    lim = RedisLimiter("redis://127.0.0.1:1/0", socket_timeout_s=0.2)
    with pytest.raises(redis.ConnectionError):
        lim.check("acme", SMALL, 1)
