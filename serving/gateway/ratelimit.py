"""Per-tenant rate limits: two token buckets per tenant, one for requests and one for LLM tokens.

Each request takes 1 from the request bucket and its token estimate (prompt tokens + max_tokens) from
the token bucket, both or neither, so a denied request costs nothing. After the response the gateway
gives back (``refund``) the tokens it reserved but did not use. Buckets refill continuously at
``per_minute / 60`` per second up to their burst capacity.

Two implementations with one interface: :class:`MemoryLimiter` (one process) and :class:`RedisLimiter`
(shared by every gateway replica; one Lua script does refill + take atomically on the server).
A request for more tokens than the bucket can ever hold is denied with ``retry_after_s = inf``: waiting
will not help, so the gateway should answer it with a 4xx other than 429.
"""

import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol



@dataclass(frozen=True)
class Tier:
    """The limits of a service tier (burst = bucket capacity)."""

    name: str
    requests_per_minute: float
    tokens_per_minute: float
    burst_requests: float
    burst_tokens: float

    def __post_init__(self) -> None:
        for field in ("requests_per_minute", "tokens_per_minute", "burst_requests", "burst_tokens"):
            if not getattr(self, field) > 0:
                raise ValueError(f"tier {self.name!r}: {field} must be > 0, got {getattr(self, field)!r}")
        if self.burst_requests < 1:
            raise ValueError(f"tier {self.name!r}: burst_requests must be >= 1 or no request ever passes")

    @property
    def requests_per_s(self) -> float:
        return self.requests_per_minute / 60.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_minute / 60.0


def _tier(name: str, rpm: float, tpm: float) -> Tier:
    """A tier whose bursts are one minute's worth."""
    return Tier(name, rpm, tpm, burst_requests=rpm, burst_tokens=tpm)


DEFAULT_TIERS: dict[str, Tier] = {
    "free": _tier("free", 60, 20_000),
    "pro": _tier("pro", 600, 200_000),
    "enterprise": _tier("enterprise", 6000, 2_000_000),
}


@dataclass
class Decision:
    """The outcome of one check: whether it passed, which limit bit, and when to retry."""

    allowed: bool
    limit: str | None  # "requests" | "tokens" when denied, else None
    retry_after_s: float  # 0 when allowed; inf when the request can never fit the bucket
    remaining_requests: float
    remaining_tokens: float


class Limiter(Protocol):
    """What the gateway needs from a rate limiter."""

    def check(self, tenant: str, tier: Tier, tokens: int, now: float | None = None) -> Decision: ...

    def refund(self, tenant: str, tier: Tier, tokens: int, now: float | None = None) -> float: ...


def _validate_tokens(tokens: int) -> None:
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")


def _denial(tier: Tier, req: float, tok: float, tokens: int) -> Decision:
    """Why a take of (1, tokens) from buckets at levels (req, tok) fails, and how long until it fits."""
    req_wait = max(0.0, (1 - req) / tier.requests_per_s)
    tok_wait = math.inf if tokens > tier.burst_tokens else max(0.0, (tokens - tok) / tier.tokens_per_s)
    limit = "tokens" if tok_wait > req_wait else "requests"
    return Decision(False, limit, max(req_wait, tok_wait), req, tok)


@dataclass
class _Buckets:
    req: float
    tok: float
    ts: float

    def refill(self, tier: Tier, now: float) -> None:
        """Add what accrued since ``ts`` (a clock going backwards accrues nothing), capped at capacity."""
        elapsed = max(0.0, now - self.ts)
        self.req = min(tier.burst_requests, self.req + elapsed * tier.requests_per_s)
        self.tok = min(tier.burst_tokens, self.tok + elapsed * tier.tokens_per_s)
        self.ts = max(self.ts, now)


class MemoryLimiter:
    """Token buckets in this process's memory (one gateway replica, or tests). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, _Buckets] = {}

    def _get(self, tenant: str, tier: Tier, now: float) -> _Buckets:
        b = self._buckets.get(tenant)
        if b is None:
            b = self._buckets[tenant] = _Buckets(tier.burst_requests, tier.burst_tokens, now)
        b.refill(tier, now)
        return b

    def check(self, tenant: str, tier: Tier, tokens: int, now: float | None = None) -> Decision:
        """Take 1 request and ``tokens`` tokens from the tenant's buckets, both or neither."""
        _validate_tokens(tokens)
        now = time.monotonic() if now is None else now
        with self._lock:
            b = self._get(tenant, tier, now)
            if b.req >= 1 and b.tok >= tokens:
                b.req -= 1
                b.tok -= tokens
                return Decision(True, None, 0.0, b.req, b.tok)
            return _denial(tier, b.req, b.tok, tokens)

    def refund(self, tenant: str, tier: Tier, tokens: int, now: float | None = None) -> float:
        """Give back ``tokens`` reserved but unused (never above capacity); returns the tokens now left."""
        _validate_tokens(tokens)
        now = time.monotonic() if now is None else now
        with self._lock:
            b = self._get(tenant, tier, now)
            b.tok = min(tier.burst_tokens, b.tok + tokens)
            return b.tok


# KEYS[1]: the tenant's hash. ARGV: req_rate/s, tok_rate/s, req_cap, tok_cap, take_req, take_tok,
# now ('' = the server clock), ttl_ms. A negative take is a refund. Returns
# {allowed 0|1, limit '' | 'requests' | 'tokens', retry_after_s ('inf' if never), req left, tok left};
# numbers as strings because Redis truncates Lua numbers to integers in replies.
_LUA_TAKE = """
local req_rate, tok_rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local req_cap, tok_cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local take_req, take_tok = tonumber(ARGV[5]), tonumber(ARGV[6])
local now
if ARGV[7] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[7])
end
local h = redis.call('HMGET', KEYS[1], 'req', 'tok', 'ts')
local req = tonumber(h[1]) or req_cap
local tok = tonumber(h[2]) or tok_cap
local ts = tonumber(h[3]) or now
local elapsed = math.max(0, now - ts)
req = math.min(req_cap, req + elapsed * req_rate)
tok = math.min(tok_cap, tok + elapsed * tok_rate)
ts = math.max(ts, now)
local allowed, limit, retry = 1, '', '0'
if req >= take_req and tok >= take_tok then
  req = math.min(req_cap, req - take_req)
  tok = math.min(tok_cap, tok - take_tok)
else
  allowed = 0
  local req_wait = math.max(0, (take_req - req) / req_rate)
  local tok_wait = math.max(0, (take_tok - tok) / tok_rate)
  if take_tok > tok_cap then
    limit, retry = 'tokens', 'inf'
  elseif tok_wait > req_wait then
    limit, retry = 'tokens', string.format('%.17g', tok_wait)
  else
    limit, retry = 'requests', string.format('%.17g', req_wait)
  end
end
redis.call('HSET', KEYS[1], 'req', string.format('%.17g', req), 'tok', string.format('%.17g', tok),
           'ts', string.format('%.17g', ts))
redis.call('PEXPIRE', KEYS[1], ARGV[8])
return {allowed, limit, retry, string.format('%.17g', req), string.format('%.17g', tok)}
"""


def _ttl_ms(tier: Tier) -> int:
    """Time for both buckets to refill completely, plus a second: a key that expired was full anyway,
    so the TTL loses nothing."""
    full_after_s = max(tier.burst_requests / tier.requests_per_s, tier.burst_tokens / tier.tokens_per_s)
    return int(math.ceil((full_after_s + 1) * 1000))


class RedisLimiter:
    """Token buckets in Redis, shared by all gateway replicas: hash ``{prefix}{tenant}`` with fields
    ``req``, ``tok`` and ``ts`` (last refill, Redis server clock unless a ``now`` is passed).

    Needs Redis >= 5 (a script that reads ``TIME`` and then writes). Redis errors (``redis.RedisError``)
    propagate: whether to fail open or closed is the caller's call.
    The client is synchronous; one call is one round trip running one short script.
    """

    def __init__(self, url: str, prefix: str = "c2s:rl:", socket_timeout_s: float = 1.0):
        import redis  # only the shared (multi-replica) limiter needs the client

        self.prefix = prefix
        self._redis = redis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                           socket_connect_timeout=socket_timeout_s)
        self._take = self._redis.register_script(_LUA_TAKE)

    def key(self, tenant: str) -> str:
        return self.prefix + tenant

    def _run(self, tenant: str, tier: Tier, take_req: int, take_tok: int, now: float | None) -> list:
        args = [repr(tier.requests_per_s), repr(tier.tokens_per_s), repr(float(tier.burst_requests)),
                repr(float(tier.burst_tokens)), take_req, take_tok, "" if now is None else repr(float(now)),
                _ttl_ms(tier)]
        allowed, limit, retry, req, tok = self._take(keys=[self.key(tenant)], args=args)
        return [bool(int(allowed)), _text(limit) or None, float(_text(retry)), float(_text(req)),
                float(_text(tok))]

    def check(self, tenant: str, tier: Tier, tokens: int, now: float | None = None) -> Decision:
        """Take 1 request and ``tokens`` tokens from the tenant's buckets, both or neither, atomically."""
        _validate_tokens(tokens)
        allowed, limit, retry, req, tok = self._run(tenant, tier, 1, tokens, now)
        return Decision(allowed, limit, retry, req, tok)

    def refund(self, tenant: str, tier: Tier, tokens: int, now: float | None = None) -> float:
        """Give back ``tokens`` reserved but unused (never above capacity); returns the tokens now left."""
        _validate_tokens(tokens)
        return self._run(tenant, tier, 0, -tokens, now)[4]

    def close(self) -> None:
        self._redis.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def make_limiter(redis_url: str | None) -> MemoryLimiter | RedisLimiter:
    """A RedisLimiter when a Redis URL is configured, else an in-process MemoryLimiter."""
    return RedisLimiter(redis_url) if redis_url else MemoryLimiter()
