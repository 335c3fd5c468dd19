"""The one way the gateway connects to Redis (rate limits, spend, the response cache): ``redis.asyncio`` with a
deadline on every call and no retries, so that a slow or absent Redis costs a request at most ``timeout_s``
and the caller decides whether to fail open."""


def deadline_redis(url: str, timeout_s: float, max_connections: int = 64):
    """A ``redis.asyncio.Redis`` on a blocking pool of ``max_connections``: waiting for a connection, connecting
    and each command are bounded by ``timeout_s`` (``redis.TimeoutError`` past it); never retried. Use it from one
    event loop (its connections belong to the loop that opened them)."""
    import redis.asyncio as aioredis  # only the shared (multi-replica) stores need the client
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis(connection_pool=pool)
