"""Calls to the engines: timeouts, retries with exponential backoff, one circuit breaker per engine, and
fallback to the next engine in order.

A call goes to the first engine whose breaker allows it and which serves the requested version. The breaker
counts only what says the *engine* is unhealthy: connection errors and timeouts (retried per ``RetrySettings``,
then one failure of that engine, and the next engine is tried), failed health probes, and a 5xx answer only when
a health probe right after it fails too. A 5xx from an engine that still answers its health probe was caused by
the request itself: that request fails alone (:class:`RequestFailed`, no retry, no fallback, nothing counted), so
one tenant's odd request can never open the breaker for everybody. A 4xx answer is the request's fault as well:
it is returned to the client and counts as a success of the engine. Streams fall back only before their first
byte; an engine that dies mid-stream is recorded as a failure and the stream is ended cleanly by the app.

:meth:`EnginePool.probe_forever` polls every engine's ``/health`` in the background: failures count toward its
breaker (so ``/ready`` turns false when an engine dies, even without traffic) and a healthy answer turns an open
breaker half-open at once (so traffic returns as soon as a restarted engine is up).
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from . import jsonio
from .breaker import CircuitBreaker, RetryPolicy
from .metrics import GatewayMetrics
from .settings import BreakerSettings, EngineSettings, RetrySettings


class EngineFailure(Exception):
    """A retryable engine failure (connection, timeout, 5xx)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class EngineServerError(EngineFailure):
    """The engine answered 5xx (it may be the request's fault: :meth:`EnginePool.call` probes to tell)."""

    def __init__(self, status: int, message: str):
        super().__init__("engine_5xx", message)
        self.status = status


class RequestFailed(Exception):
    """The engine failed on this request while its health probe says it is fine: the request's own fault."""

    def __init__(self, engine: str, status: int, message: str):
        super().__init__(message)
        self.engine, self.status = engine, status


class EngineRejected(Exception):
    """The engine answered 4xx: the request itself is at fault."""

    def __init__(self, status: int, body: dict | str):
        super().__init__(str(body))
        self.status, self.body = status, body


class Unavailable(Exception):
    """No engine could serve the request; ``causes`` says why per engine."""

    def __init__(self, causes: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in causes.items()) or "no engine serves this model")
        self.causes = causes


@dataclass
class Served:
    engine: str
    position: int  # 0: the route's first engine (of those serving its version); >0: a fallback
    body: dict | None = None
    response: aiohttp.ClientResponse | None = None


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    return "transport"


TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


async def _body_sent(session, context, params) -> None:
    """aiohttp's trace signal of a request body chunk: resolves the request's ``sent`` future. aiohttp signals
    a chunk just before it writes it, in the same step of the task: whoever awaits the future runs once the
    request is written to the socket."""
    sent = context.trace_request_ctx
    if isinstance(sent, asyncio.Future) and not sent.done():
        sent.set_result(None)


def _sent_trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(_body_sent)
    return trace


DONE = object()  # the end of an SSE stream: its "data: [DONE]" line


def _sse_event(raw: bytes):
    """One line of an engine's SSE stream: its JSON event, :data:`DONE`, or None for a line that is no data."""
    if not raw.startswith(b"data:"):
        return None
    data = raw[5:].strip()
    if data == b"[DONE]":
        return DONE
    try:
        event = jsonio.loads(data)
    except ValueError as exc:
        raise EngineFailure("bad_stream", f"undecodable stream event: {data[:200]!r}") from exc
    if isinstance(event, dict) and "error" in event and not event.get("choices"):
        raise EngineFailure("engine_stream_error", json.dumps(event["error"])[:300])
    return event


class EnginePool:
    def __init__(
        self, engines: list[EngineSettings], breaker: BreakerSettings, retry: RetrySettings, metrics: GatewayMetrics
    ):
        self.engines = engines
        self.metrics = metrics
        self.health = breaker
        self.retry = RetryPolicy(
            attempts=retry.attempts, base_delay_s=retry.base_delay_s, max_delay_s=retry.max_delay_s
        )
        self.breakers = {}
        for engine in engines:
            b = CircuitBreaker(
                engine.name, failure_threshold=breaker.failure_threshold, reset_timeout_s=breaker.reset_timeout_s
            )
            b.on_change(metrics.circuit_changed)
            metrics.circuit.labels(engine.name).set(0)
            self.breakers[engine.name] = b
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        # aiohttp (not httpx) for engine calls: its streaming reads cost a fraction of httpx's per event
        # (bench/bench_gateway.py). Created lazily, inside the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=4096, limit_per_host=2048),
                json_serialize=jsonio.dumps,
                trace_configs=[_sent_trace()],
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def states(self) -> dict[str, str]:
        return {name: b.state for name, b in self.breakers.items()}

    def _candidates(self, models: dict[str, str]):
        """The engines that serve ``models``, in order, with their position among them (0: the route's first)."""
        yield from enumerate(e for e in self.engines if e.name in models)

    async def _attempt(
        self, engine: EngineSettings, path: str, payload: dict, stream: bool, sent: asyncio.Future | None = None
    ) -> tuple[aiohttp.ClientResponse | None, dict | None]:
        """One call: ``(open response, None)`` for a stream, ``(None, JSON body)`` otherwise; ``sent`` is
        resolved once the request is written (see :meth:`call`)."""
        timeout = aiohttp.ClientTimeout(
            total=None if stream else engine.timeout_s,
            sock_connect=engine.connect_timeout_s,
            sock_read=engine.read_timeout_s if stream else engine.timeout_s,
        )
        try:
            response = await self.session.post(engine.url + path, json=payload, timeout=timeout, trace_request_ctx=sent)
        except TRANSPORT_ERRORS as exc:
            raise EngineFailure(_failure_kind(exc), f"{type(exc).__name__}: {exc}") from exc
        if stream and response.status == 200:
            return response, None
        try:
            raw = await response.read()
        except TRANSPORT_ERRORS as exc:
            raise EngineFailure(_failure_kind(exc), f"{type(exc).__name__}: {exc}") from exc
        finally:
            response.release()
        if response.status >= 500:
            raise EngineServerError(response.status, f"HTTP {response.status}: {raw[:300].decode(errors='replace')}")
        try:
            body = jsonio.loads(raw)
        except ValueError:
            body = raw[:1000].decode(errors="replace")
        if response.status >= 400:
            raise EngineRejected(response.status, body)
        if not isinstance(body, dict):
            raise EngineFailure("bad_body", f"engine answered non-JSON: {str(body)[:200]}")
        return None, body

    async def call(
        self,
        path: str,
        models: dict[str, str],
        payload: dict,
        *,
        stream: bool = False,
        sent: asyncio.Future | None = None,
    ) -> Served:
        """POST ``payload`` (with each engine's ``model`` value) to the first engine that answers; for a stream,
        return once the engine has answered 200 (the body is read by :meth:`iter_batches`). ``sent``, if
        given, is resolved as soon as the (first attempt's) request is written to an engine's socket: the
        caller may then do other work while the engine works on it."""
        causes = {}
        for position, engine in self._candidates(models):
            breaker = self.breakers[engine.name]
            if not breaker.allow():
                causes[engine.name] = "circuit open"
                self.metrics.upstream.labels(engine.name, "skipped_open").inc()
                continue
            body = {**payload, "model": models[engine.name]}
            try:
                response, answer = await self.retry.run(
                    lambda engine=engine, body=body: self._attempt(engine, path, body, stream, sent),
                    retry_on=(EngineFailure,),
                    give_up_on=(EngineServerError,),
                )
            except EngineServerError as exc:
                if await self.probe(engine):
                    self.metrics.upstream.labels(engine.name, "request_failed").inc()
                    raise RequestFailed(engine.name, exc.status, str(exc)) from exc
                breaker.record_failure()
                self.metrics.upstream.labels(engine.name, exc.kind).inc()
                self.metrics.errors.labels(f"engine_{exc.kind}").inc()
                causes[engine.name] = str(exc)
                continue
            except EngineFailure as exc:
                breaker.record_failure()
                self.metrics.upstream.labels(engine.name, exc.kind).inc()
                self.metrics.errors.labels(f"engine_{exc.kind}").inc()
                causes[engine.name] = str(exc)
                continue
            except EngineRejected:
                breaker.record_success()
                self.metrics.upstream.labels(engine.name, "rejected").inc()
                raise
            except BaseException:
                breaker.abandon()  # cancelled (the client left) or a bug of ours: says nothing of the engine
                raise
            self.metrics.upstream.labels(engine.name, "ok").inc()
            if not stream:  # a stream's success is recorded when it ends (iter_events)
                breaker.record_success()
            return Served(engine.name, position, body=answer, response=response)
        raise Unavailable(causes)

    async def probe(self, engine: EngineSettings) -> bool:
        """One ``GET /health`` of ``engine`` (True: it answered 200 within ``health_timeout_s``)."""
        timeout = aiohttp.ClientTimeout(total=self.health.health_timeout_s)
        try:
            async with self.session.get(engine.url + "/health", timeout=timeout) as response:
                await response.read()
                return response.status == 200
        except TRANSPORT_ERRORS:
            return False

    async def probe_forever(self, stop: asyncio.Event) -> None:
        """Probe every engine each ``health_interval_s`` until ``stop`` is set (see the module docstring)."""
        interval = self.health.health_interval_s
        if interval <= 0:
            return
        while not stop.is_set():
            results = await asyncio.gather(*(self.probe(e) for e in self.engines))
            for engine, ok in zip(self.engines, results):
                breaker = self.breakers[engine.name]
                self.metrics.health.labels(engine.name).set(1 if ok else 0)
                if ok:
                    breaker.probe_succeeded()
                else:
                    breaker.record_failure()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    def discard(self, served: Served) -> None:
        """Drop a stream that was opened but will not be read (its prompt was blocked while the engine
        prefilled): the connection is closed, which makes the engine abort the request, and the engine's
        breaker counts nothing (the call said nothing of its health) but gets a half-open trial slot back."""
        if served.response is not None:
            served.response.close()
        self.breakers[served.engine].abandon()

    async def iter_events(self, served: Served) -> AsyncIterator[dict]:
        """The JSON events of an engine's SSE stream, one at a time (see :meth:`iter_batches`)."""
        async for batch in self.iter_batches(served):
            for event in batch:
                yield event

    async def iter_batches(self, served: Served) -> AsyncIterator[list[dict]]:
        """The JSON events of an engine's SSE stream (without the final ``[DONE]``), as lists: the events of
        one read of the socket together, so that the app relays them in one write (a gateway behind on its
        streams then sends several tokens per write instead of one, at one write's cost). On a broken stream
        the engine's breaker records a failure and :class:`EngineFailure` is raised; a complete one records
        success."""
        breaker = self.breakers[served.engine]
        response = served.response
        try:
            # Whatever arrived, split into lines here (one await per read, not one per line: an event is a
            # "data:" line and an empty one); a line cut by the read's end waits for the next read.
            pending, done = b"", False
            async for chunk in response.content.iter_any():
                lines = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
                pending = lines.pop()
                batch = []
                try:
                    for raw in lines:
                        event = _sse_event(raw)
                        if event is DONE:
                            done = True
                            break
                        if event is not None:
                            batch.append(event)
                except EngineFailure:
                    if batch:  # the events before a bad one are relayed, as when they came in a read of their own
                        yield batch
                    raise
                if batch:
                    yield batch
                if done:
                    break
            else:  # the stream ended: its last line may have had no newline
                event = _sse_event(pending)
                if event is not None and event is not DONE:
                    yield [event]
        except TRANSPORT_ERRORS as exc:
            breaker.record_failure()
            self.metrics.upstream.labels(served.engine, "broken_stream").inc()
            raise EngineFailure("broken_stream", f"{type(exc).__name__}: {exc}") from exc
        except EngineFailure as exc:
            if exc.kind != "engine_stream_error":  # an error event: the engine is up and refused this request
                breaker.record_failure()
            raise
        except (GeneratorExit, asyncio.CancelledError):
            breaker.record_success()  # the client went away; the engine was streaming fine
            raise
        finally:
            response.release()
        breaker.record_success()
