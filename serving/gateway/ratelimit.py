"""Per-tenant rate limits: two token buckets per tenant, one for requests and one for LLM tokens.

**Reserve, then settle.** Admitting a request takes 1 from the request bucket and ``prompt tokens + max_tokens``
from the token bucket, both or neither (:meth:`~MemoryLimiter.reserve`), so a denied request costs nothing. The
prompt is counted with the served model's tokenizer (:mod:`serving.gateway.tokens`), so the reservation covers
what the engine can use: max_tokens bounds the completion. When the answer is in, :meth:`~MemoryLimiter.settle`
replaces the reservation by the tokens really used (the engine's usage): unused tokens go back (never above the
burst), an overrun (a prompt that counted more than reserved) is charged, and the token bucket may go
**negative**: that debt is repaid by refill before the next request fits. Buckets refill continuously at
``per_minute / 60`` per second up to their burst capacity.

**Guarantee.** Every token a request uses is taken from the bucket (the reservation when it is admitted, an
overrun when it settles), and the bucket never holds more than its burst. So the tokens used by the requests a
tenant starts within any window of T seconds are at most ``burst_tokens + tokens_per_s * T`` plus one request's
worth, the slack at the window's edges: reserved-but-unused tokens handed back, inside the window, by requests
started before it (they can be re-spent only if the bucket refilled to its burst while those requests ran), and
the overrun of requests still running at its end (charged later, as debt). With prompts counted by the served
tokenizer the reservation covers the use (max_tokens bounds the completion), so there is no overrun. A count that
underestimates is still caught up by the debt for a client that waits for each answer; parallel requests, each
admitted before the others' overruns are charged, can exceed the bound (simulated with the old len/4 estimate and
8 clients: ~900 tokens over, against ≤ 0 with the tokenizer). tests/serving/test_ratelimit.py checks the bound on
every window of simulated sequential and parallel traffic; tests/serving/test_accounting.py through the real
gateway and engine.

Two implementations with one asynchronous interface: :class:`MemoryLimiter` (one process) and
:class:`RedisLimiter` (shared by every gateway replica, on ``redis.asyncio``: one Lua script does refill +
reserve or settle atomically on the server; nothing blocks the event loop, and every call has a deadline).
A request for more tokens than the bucket can ever hold is denied with ``retry_after_s = inf``: waiting
will not help, so the gateway should answer it with a 4xx other than 429.
"""

import asyncio
import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from .redis_client import deadline_redis


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
    """The outcome of one reservation: whether it passed, which limit bit, when to retry, and the levels left
    (``remaining_tokens`` below 0: the tenant is in debt)."""

    allowed: bool
    limit: str | None  # "requests" | "tokens" when denied, else None
    retry_after_s: float  # 0 when allowed; inf when the request can never fit the bucket
    remaining_requests: float
    remaining_tokens: float


class Limiter(Protocol):
    """What the gateway needs from a rate limiter (both calls are coroutines)."""

    async def reserve(self, tenant: str, tier: Tier, tokens: int, now: float | None = None) -> Decision: ...

    async def settle(self, tenant: str, tier: Tier, reserved: int, used: int, now: float | None = None) -> float: ...

    async def aclose(self) -> None: ...


def _validate(**counts: int) -> None:
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _denial(tier: Tier, req: float, tok: float, tokens: int) -> Decision:
    """Why a take of (1, tokens) from buckets at levels (req, tok) fails, and how long until it fits
    (``tok`` may be negative: a debt is repaid first)."""
    req_wait = max(0.0, (1 - req) / tier.requests_per_s)
    tok_wait = math.inf if tokens > tier.burst_tokens else max(0.0, (tokens - tok) / tier.tokens_per_s)
    limit = "tokens" if tok_wait > req_wait else "requests"
    return Decision(False, limit, max(req_wait, tok_wait), req, tok)


@dataclass
class _Buckets:
    req: float
    tok: float  # below 0: a debt
    ts: float

    def refill(self, tier: Tier, now: float) -> None:
        """Add what accrued since ``ts`` (a clock going backwards accrues nothing), capped at capacity."""
        elapsed = max(0.0, now - self.ts)
        self.req = min(tier.burst_requests, self.req + elapsed * tier.requests_per_s)
        self.tok = min(tier.burst_tokens, self.tok + elapsed * tier.tokens_per_s)
        self.ts = max(self.ts, now)


class MemoryLimiter:
    """Token buckets in this process's memory (one gateway replica, or tests). Thread-safe; the coroutines
    never wait (a dict update under a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, _Buckets] = {}

    def _get(self, tenant: str, tier: Tier, now: float) -> _Buckets:
        b = self._buckets.get(tenant)
        if b is None:
            b = self._buckets[tenant] = _Buckets(tier.burst_requests, tier.burst_tokens, now)
        b.refill(tier, now)
        return b

    async def reserve(self, tenant: str, tier: Tier, tokens: int, now: float | None = None) -> Decision:
        """Take 1 request and ``tokens`` tokens (prompt + max_tokens) from the tenant's buckets, both or neither.
        Denied while the token bucket holds less than ``tokens`` (a debt included)."""
        _validate(tokens=tokens)
        now = time.monotonic() if now is None else now
        with self._lock:
            b = self._get(tenant, tier, now)
            if b.req >= 1 and b.tok >= tokens and tokens <= tier.burst_tokens:
                b.req -= 1
                b.tok -= tokens
                return Decision(True, None, 0.0, b.req, b.tok)
            return _denial(tier, b.req, b.tok, tokens)

    async def settle(self, tenant: str, tier: Tier, reserved: int, used: int, now: float | None = None) -> float:
        """Replace a reservation of ``reserved`` tokens by the ``used`` ones: give back the difference (never
        above capacity) or charge the overrun (the bucket may go negative: a debt). Returns the tokens now left."""
        _validate(reserved=reserved, used=used)
        now = time.monotonic() if now is None else now
        with self._lock:
            b = self._get(tenant, tier, now)
            b.tok = min(tier.burst_tokens, b.tok + reserved - used)
            return b.tok

    async def aclose(self) -> None:
        pass


# KEYS[1]: the tenant's hash. ARGV: req_rate/s, tok_rate/s, req_cap, tok_cap, mode ('reserve' | 'settle'),
# a, b, now ('' = the server clock). reserve: a = requests (1), b = tokens; settle: a = tokens reserved,
# b = tokens used (the token level may go negative: a debt). The key expires once both buckets would be full
# again (+1 s): a key that expired was full anyway. Returns
# {allowed 0|1, limit '' | 'requests' | 'tokens', retry_after_s ('inf' if never), req left, tok left};
# numbers as strings because Redis truncates Lua numbers to integers in replies.
_LUA = """
local req_rate, tok_rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local req_cap, tok_cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local mode, a, b = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local now
if ARGV[8] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[8])
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
if mode == 'settle' then
  tok = math.min(tok_cap, tok + a - b)
elseif req >= a and tok >= b and b <= tok_cap then
  req = req - a
  tok = tok - b
else
  allowed = 0
  local req_wait = math.max(0, (a - req) / req_rate)
  local tok_wait = math.max(0, (b - tok) / tok_rate)
  if b > tok_cap then
    limit, retry = 'tokens', 'inf'
  elseif tok_wait > req_wait then
    limit, retry = 'tokens', string.format('%.17g', tok_wait)
  else
    limit, retry = 'requests', string.format('%.17g', req_wait)
  end
end
redis.call('HSET', KEYS[1], 'req', string.format('%.17g', req), 'tok', string.format('%.17g', tok),
           'ts', string.format('%.17g', ts))
local full_after = math.max((req_cap - req) / req_rate, (tok_cap - tok) / tok_rate)
redis.call('PEXPIRE', KEYS[1], math.ceil((full_after + 1) * 1000))
return {allowed, limit, retry, string.format('%.17g', req), string.format('%.17g', tok)}
"""


class RedisLimiter:
    """Token buckets in Redis, shared by all gateway replicas: hash ``{prefix}{tenant}`` with fields
    ``req``, ``tok`` and ``ts`` (last refill, Redis server clock unless a ``now`` is passed).

    On ``redis.asyncio`` with a bounded connection pool: one call is one round trip running one short script,
    awaited, never blocking the event loop. Each call has a deadline of ``timeout_s`` (connecting, waiting for a
    pooled connection and the reply together) and no retries, so an unreachable or silent Redis costs a request
    at most ``timeout_s``. Needs Redis >= 5 (a script that reads ``TIME`` and then writes). Redis errors
    (``redis.RedisError``; ``redis.TimeoutError`` past the deadline) propagate: whether to fail open or closed is
    the caller's call. Use it from one event loop (its connections belong to the loop that opened them).
    """

    def __init__(self, url: str, prefix: str = "c2s:rl:", timeout_s: float = 0.25, max_connections: int = 64):
        self.prefix, self.timeout_s = prefix, timeout_s
        self._redis = deadline_redis(url, timeout_s, max_connections)
        self._script = self._redis.register_script(_LUA)

    def key(self, tenant: str) -> str:
        return self.prefix + tenant

    async def _run(self, tenant: str, tier: Tier, mode: str, a: int, b: int, now: float | None) -> list:
        import redis

        args = [
            repr(tier.requests_per_s),
            repr(tier.tokens_per_s),
            repr(float(tier.burst_requests)),
            repr(float(tier.burst_tokens)),
            mode,
            a,
            b,
            "" if now is None else repr(float(now)),
        ]
        try:
            async with asyncio.timeout(self.timeout_s):
                allowed, limit, retry, req, tok = await self._script(keys=[self.key(tenant)], args=args)
        except TimeoutError as exc:
            raise redis.TimeoutError(f"Redis did not answer within {self.timeout_s} s") from exc
        return [bool(int(allowed)), _text(limit) or None, float(_text(retry)), float(_text(req)), float(_text(tok))]

    async def reserve(self, tenant: str, tier: Tier, tokens: int, now: float | None = None) -> Decision:
        """Take 1 request and ``tokens`` tokens from the tenant's buckets, both or neither, atomically."""
        _validate(tokens=tokens)
        allowed, limit, retry, req, tok = await self._run(tenant, tier, "reserve", 1, tokens, now)
        return Decision(allowed, limit, retry, req, tok)

    async def settle(self, tenant: str, tier: Tier, reserved: int, used: int, now: float | None = None) -> float:
        """Replace a reservation of ``reserved`` tokens by the ``used`` ones, atomically (see
        :meth:`MemoryLimiter.settle`); returns the tokens now left (negative: a debt)."""
        _validate(reserved=reserved, used=used)
        return (await self._run(tenant, tier, "settle", reserved, used, now))[4]

    async def aclose(self) -> None:
        await self._redis.aclose(close_connection_pool=True)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def make_limiter(redis_url: str | None, **redis_options) -> MemoryLimiter | RedisLimiter:
    """A RedisLimiter when a Redis URL is configured, else an in-process MemoryLimiter."""
    return RedisLimiter(redis_url, **redis_options) if redis_url else MemoryLimiter()
