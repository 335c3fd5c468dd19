"""The OpenAI-compatible gateway in front of the engines (FastAPI).

A request goes through the steps of :mod:`serving.gateway.steps` (authenticate → read body → validate → route →
[route by request] → structured → limit → budget → screen), then to the response cache
(:mod:`serving.gateway.cache`: deterministic requests) or an engine (:mod:`serving.gateway.upstream`: retries,
breaker, fallback), and its answer (whole, or relayed as a stream) through output screening, accounting, its cost
(:mod:`serving.gateway.budgets`) and the inference log. Every request, answered or rejected, becomes one row of
the inference log, on disk before the answer leaves: a response (or
a stream's final events and ``[DONE]``) is sent only once its row is committed, so a gateway crash loses no
answered request's row. Every error, expected or not, is an OpenAI-shaped JSON body. ``/health`` (process
up), ``/ready`` (a model is routed, an engine's breaker is not open, the log is writing), ``/metrics``
(Prometheus), ``/openapi.json`` (request bodies and error responses of every endpoint).
"""

import asyncio
import contextlib
import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import jsonio
from .auth import KeyStore
from .batches import Batches, add_routes
from .budgets import Budgets, Charge, CheckBudget, make_spend_store
from .cache import ResponseCache
from .call import Call
from .costs import PriceBook
from .errors import ApiError, internal_error
from .experiments import Experiment
from .feedback import Feedback
from .guardrails import Guardrails
from .logstore import InferenceLog
from .metrics import GatewayMetrics
from .openapi import document
from .rag import Retrieve, citations, semantic_answer
from .ratelimit import DEFAULT_TIERS, make_limiter
from .reports import DRIFT_ROUTE, drift_report_file
from .request_router import RouteByRequest, RoutingRules
from .routing import Router
from .schemas import ChatRequest
from .settings import GatewaySettings
from .shadow import Shadow
from .steps import (
    Account,
    Assign,
    Authenticate,
    Limit,
    Log,
    ReadBody,
    Route,
    Screen,
    ScreenOutput,
    Structured,
    Validate,
)
from .structured import OUTPUT_SCHEMA_INVALID, ToolCallDeltas, tool_calls_text
from .tiers import TierSource
from .tokens import TokenCounter
from .upstream import EngineFailure, EnginePool, EngineRejected, RequestFailed, Unavailable

log = logging.getLogger("crawl2serve.gateway")
# Streams are checked every STREAM_CHECK_EVERY chunks, on the new text plus STREAM_CHECK_OVERLAP characters
# before it (not the whole output each time, which is quadratic); the whole output is checked once more when
# the stream ends. A blocked pattern can so reach the client by at most STREAM_CHECK_EVERY - 1 chunks.
STREAM_CHECK_EVERY = 8
STREAM_CHECK_OVERLAP = 256


class Gateway:
    def __init__(self, settings: GatewaySettings, metrics_dir: str | None = None):
        self.settings = settings
        self.metrics = GatewayMetrics(metrics_dir)
        self.keys = KeyStore.load(settings.keys_file)
        self.router = Router(settings.routing_file, settings.model_name)
        self.pool = EnginePool(settings.engines, settings.breaker, settings.retry, self.metrics)
        self.limiter = make_limiter(settings.redis_url)
        tiers = {**DEFAULT_TIERS, **{name: t.tier(name) for name, t in settings.tiers.items()}}
        g = settings.guardrails
        guardrails = Guardrails(g.blocked_patterns, g.injection_threshold, g.max_output_chars)
        if settings.workers > 1 and not settings.redis_url:
            log.warning(
                "%d workers without redis_url: rate limits apply per worker and usage is not pushed to "
                "Feast (each worker would overwrite the others' counts); set redis_url",
                settings.workers,
            )
        self.tier_source = TierSource(settings.feast, push=settings.workers == 1 or bool(settings.redis_url))
        self.log = InferenceLog(
            settings.log_dir,
            flush_interval_s=settings.log_flush_interval_s,
            commit_timeout_s=settings.log_commit_timeout_s,
        )
        self.authenticate = Authenticate(self.keys)
        counter = TokenCounter()
        self.budgets = Budgets(
            settings.budgets, make_spend_store(settings.redis_url, settings.budgets.redis_prefix), self.metrics
        )
        self.retrieve = Retrieve(settings.rag, settings.model_name, self.metrics) if settings.rag else None
        self.steps = [
            self.authenticate,
            ReadBody(settings.limits),
            Validate(settings.limits),
            *([self.retrieve] if self.retrieve else []),
            Route(self.router),
            *([Assign(Experiment.from_settings(settings.experiment), self.router)] if settings.experiment else []),
            *([self._route_by_request(tiers, counter)] if settings.routing_rules else []),
            Structured(settings.engines, counter),
            Limit(self.limiter, tiers, self.tier_source, self.metrics, counter),
            CheckBudget(self.budgets),
        ]
        self.screen = Screen(guardrails, self.metrics)  # after the steps: while the engine prefills (run)
        self.screen_output = ScreenOutput(guardrails, self.metrics)
        self.account = Account(self.limiter, self.tier_source, self.metrics, counter)
        self.charge = Charge(self.budgets, PriceBook(settings.prices))
        self.finish = Log(self.log, self.metrics, settings.log_commit_before_answer)
        self.shadow = Shadow(settings.shadow, self.router, self.pool, self.screen_output, self.log, self.metrics)
        self.feedback = Feedback(self.log, self.metrics)
        self.cache = ResponseCache(settings.cache, self.metrics.registry)

    def _route_by_request(self, tiers, counter: TokenCounter) -> RouteByRequest:
        rules = RoutingRules(self.settings.routing_rules)
        return RouteByRequest(rules, self.router, self.tier_source, tiers, counter, self.metrics.registry)

    # -- the request path -------------------------------------------------------------------------------------
    async def handle(self, request: Request, endpoint: str) -> Response:
        return await self.run(Call(request, endpoint), self.steps)

    async def run(self, call: Call, steps) -> Response:
        """A call through ``steps`` (the request path's, or a batch line's: its tenant and body known already),
        the input screen and the engine, and its answer's screening, accounting and log row. A call bound for
        the engine is screened while the engine prefills (:meth:`_screened_engine`); one a cache may answer
        is screened first."""
        self.metrics.inflight.inc()
        try:
            for step in steps:
                await step(call)
            self._prepare(call)
            if call.semantic_hit is None and not self.cache.enabled:
                await self._screened_engine(call)
            else:
                await self.screen(call)
                if call.semantic_hit is not None:  # the semantic cache answered (gateway.rag): no engine
                    call.served, call.row.route = semantic_answer(call), "semantic_cache"
                elif not await self.cache.lookup(call):  # a hit: call.served holds the cached answer
                    await self._engine(call)
            if call.req.stream:
                return await self._stream_response(call)
            return await self._complete(call)
        except ApiError as err:
            return await self._error_response(call, err)
        except Exception as exc:
            log.exception("request %s failed", call.request_id)
            return await self._error_response(call, internal_error(exc))
        finally:
            self.metrics.inflight.dec()

    async def _error_response(self, call: Call, err: ApiError) -> Response:
        try:
            await self._end(call, err.status, err.code or err.kind)
        except ApiError as refused:  # its row could not be committed: 503 log_unavailable instead
            err = refused
        return err.response(call.headers)

    async def _end(self, call: Call, status: int, error: str | None) -> None:
        """Settle and log a call that ends without an answer from an engine (nothing if its row is written
        already). Raises only the ApiError of a row the log could not commit (503 log_unavailable)."""
        if call.ended:
            return
        try:
            await self.account(call)
        except Exception:
            log.exception("request %s: settling its tokens failed", call.request_id)
        try:
            await self.charge(call)
        except Exception:
            log.exception("request %s: charging its cost failed", call.request_id)
        try:
            await self.finish(call, status, error)
        except ApiError:
            raise
        except Exception:
            log.exception("request %s: its log row could not be written", call.request_id)

    def _prepare(self, call: Call) -> None:
        """The engine endpoint and payload of the call (what the engine, the cache key and a shadow see)."""
        req = call.req
        payload = {
            **req.sampling(self.settings.limits.passthrough_fields),
            "max_tokens": call.max_tokens,
            "stream": req.stream,
        }
        if isinstance(req, ChatRequest):
            path, payload["messages"] = "/v1/chat/completions", req.engine_messages()
            payload.update(req.structured())
        else:
            path, payload["prompt"] = "/v1/completions", call.prompt
        if req.stream:
            payload["stream_options"] = {"include_usage": True}
        call.engine_path, call.engine_payload = path, payload

    async def _screened_engine(self, call: Call) -> None:
        """The engine request sent first, the prompt screened once it is written (the screen of a 256-token
        prompt takes 1–3 ms, about a tenth of a short prefill, which now overlaps it): nothing of the
        engine's answer is used before the verdict. A blocked prompt's engine request is cancelled (a stream
        already open is closed, so the engine aborts it) and the call ends as it would have without it: the
        same 400 ``prompt_rejected``, nothing of the engine in its row. The screen runs on the event loop
        (a long prompt's in a thread, as :class:`~serving.gateway.steps.Screen` says) once the request is
        out: a thread from the start would hold the GIL while the loop still has the request to write."""
        loop = asyncio.get_running_loop()
        sent = loop.create_future()
        engine = loop.create_task(self._call_engine(call, sent))
        engine.add_done_callback(lambda _: sent.done() or sent.set_result(None))
        try:
            await sent  # the request is written (or the engine call is over: failed, or no engine to try)
            verdict = await self.screen.verdict(call)
        except BaseException:
            await self._cancel_engine(engine)
            raise
        if verdict.blocked:
            await self._cancel_engine(engine)
        self.screen.apply(call, verdict)  # raises the block's ApiError
        self._served(call, await engine)

    async def _cancel_engine(self, engine: asyncio.Task) -> None:
        """Cancel an engine request whose answer will not be used, and drop the stream it may have opened."""
        engine.cancel()
        try:
            served = await engine
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # this call itself is being cancelled
                raise
            return
        except Exception:  # the engine failed on it: nothing to drop (the pool has counted it)
            return
        self.pool.discard(served)

    async def _engine(self, call: Call) -> None:
        self._served(call, await self._call_engine(call))

    async def _call_engine(self, call: Call, sent: asyncio.Future | None = None):
        """The engine's answer (:class:`~serving.gateway.upstream.Served`: a body, or an open stream); its
        failures as the call's ApiError. ``sent``: resolved once the request is written (EnginePool.call)."""
        req, route, path, payload = call.req, call.route, call.engine_path, call.engine_payload
        try:
            return await self.pool.call(path, route.models, payload, stream=req.stream, sent=sent)
        except EngineRejected as exc:
            message = (
                exc.body.get("error", {}).get("message", str(exc.body)) if isinstance(exc.body, dict) else str(exc.body)
            )
            raise ApiError(
                exc.status if exc.status != 404 else 400,
                f"the engine rejected the request: {message}",
                code="engine_rejected",
            ) from exc
        except RequestFailed as exc:
            raise ApiError(
                502,
                f"the engine failed on this request (HTTP {exc.status}) while it serves others; "
                "the request was not retried",
                kind="server_error",
                code="engine_request_failed",
            ) from exc
        except Unavailable as exc:
            raise ApiError(
                503,
                f"no engine available: {exc}",
                kind="server_error",
                code="engine_unavailable",
                headers={"Retry-After": "5"},
            ) from exc

    def _served(self, call: Call, served) -> None:
        route = call.route
        call.served = served
        call.row.update(
            engine=served.engine,
            served_model=route.models[served.engine],
            adapter=route.models[served.engine],
            route="fallback" if served.position > 0 else route.route,
        )

    async def _complete(self, call: Call) -> Response:
        body = call.served.body
        choice = (body.get("choices") or [{}])[0]
        message = (choice.get("message") or {}) if call.chat else {}
        text = (message.get("content") or "") if call.chat else (choice.get("text") or "")
        tool_calls = message.get("tool_calls") or None
        finish = choice.get("finish_reason")
        if self.screen_output.final(call, text + tool_calls_text(tool_calls)).blocked:
            text, tool_calls, finish = "", None, "content_filter"
        else:
            if self.retrieve and call.semantic_hit is None:
                self.retrieve.remember(call, text, finish)
            text += citations(call)
        self.account.usage(call, body.get("usage"), text)
        call.row.update(output=text, finish_reason=finish, tool_calls=jsonio.dumps(tool_calls) if tool_calls else "")
        if finish != "content_filter":
            self._check_answer(call, text, tool_calls)
        await self.account(call)
        await self.charge(call)
        out_choice = {"index": 0, "finish_reason": finish}
        if call.chat:
            out_choice["message"] = {"role": "assistant", "content": text if text or not tool_calls else None}
            if tool_calls:
                out_choice["message"]["tool_calls"] = tool_calls
        else:
            out_choice.update(text=text, logprobs=None)
        response = {
            "id": call.request_id,
            "object": "chat.completion" if call.chat else "text_completion",
            "created": int(time.time()),
            "model": call.req.model,
            "choices": [out_choice],
            "usage": self._usage_body(call),
        }
        self.metrics.latency.labels(call.endpoint, call.row.route, "false").observe(call.elapsed_ms() / 1000)
        await self.finish(call, 200)  # the answer leaves once its row is on disk
        self.cache.store(call, text, finish)
        self.shadow.offer(call)  # only queued: never awaited on the request path
        return JSONResponse(response, headers=call.headers)

    def _check_answer(self, call: Call, text: str, tool_calls: list[dict] | None) -> None:
        """The answer against what the call asked for (:mod:`serving.gateway.structured`): its tool calls
        against the strict functions, else its text against the response_format. Counted; a 502
        ``output_schema_invalid`` (its row keeps the answer) when it does not hold."""
        contract, answer, asked = (
            (call.tool_contract, tool_calls, "strict functions")
            if tool_calls
            else (call.contract, text, "response_format")
        )
        if contract is None:
            return
        problem = contract.problem(answer)
        self.metrics.structured.labels(contract.kind, "invalid" if problem else "valid").inc()
        if problem:
            raise ApiError(
                502,
                f"the engine's answer does not match the requested {asked} ({contract.kind}): {problem}",
                kind="server_error",
                code=OUTPUT_SCHEMA_INVALID,
            )

    @staticmethod
    def _usage_body(call: Call) -> dict:
        p, c = call.row.prompt_tokens, call.row.completion_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    async def _stream_response(self, call: Call) -> Response:
        events = self._stream(call)
        # Start the stream before answering: from here on its ``finally`` (which writes the log row) runs
        # even if the client leaves before the body is read (the loop closes a suspended generator).
        first = await events.__anext__()

        async def body():
            yield first
            async for event in events:
                yield event

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", **call.headers}
        )

    async def _stream(self, call: Call):
        chat, req = call.chat, call.req
        kind = "chat.completion.chunk" if chat else "text_completion"
        created = int(time.time())
        parts: list[str] = []
        calls = ToolCallDeltas()
        tail = ""
        out: list[bytes] = []  # the events of the current batch, not yet sent
        usage, finish, error, invalid = None, None, None, None

        def event(delta_text: str | None, finish_reason: str | None = None, tool_calls: list | None = None) -> str:
            choice = {"index": 0, "finish_reason": finish_reason}
            if chat:
                choice["delta"] = {"content": delta_text} if delta_text is not None else {}
                if tool_calls:
                    choice["delta"]["tool_calls"] = tool_calls
            else:
                choice.update(text=delta_text or "", logprobs=None)
            return (
                "data: "
                + jsonio.dumps(
                    {"id": call.request_id, "object": kind, "created": created, "model": req.model, "choices": [choice]}
                )
                + "\n\n"
            )

        # A token's event is the same bytes as ``event(text)``, but only its text is encoded: the rest (the
        # gateway's id and public model name, which the engine's event does not carry) is encoded once here.
        head = jsonio.dumpb({"id": call.request_id, "object": kind, "created": created, "model": req.model})[:-1]
        if chat:
            prefix, suffix = b'data: %b,"choices":[{"index":0,"finish_reason":null,"delta":{"content":' % head, b"}}]}"
        else:
            prefix, suffix = (
                b'data: %b,"choices":[{"index":0,"finish_reason":null,"text":' % head,
                b',"logprobs":null}]}',
            )
        suffix += b"\n\n"

        try:
            if chat:  # OpenAI streams open with the assistant role
                yield (
                    "data: "
                    + json.dumps(
                        {
                            "id": call.request_id,
                            "object": kind,
                            "created": created,
                            "model": req.model,
                            "choices": [
                                {"index": 0, "finish_reason": None, "delta": {"role": "assistant", "content": ""}}
                            ],
                        }
                    )
                    + "\n\n"
                )
            # The events of one read of the engine's stream leave in one write (see iter_batches)
            source = self.cache.batches(call.served) if call.row.cache == "hit" else self.pool.iter_batches(call.served)
            async for batch in source:
                for chunk in batch:
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        text = ((choice.get("delta") or {}).get("content") if chat else choice.get("text")) or ""
                        deltas = (choice.get("delta") or {}).get("tool_calls") if chat else None
                        if deltas:
                            calls.add(deltas)
                            out.append(event(None, tool_calls=deltas).encode())
                        if text:
                            if not parts:
                                ttft = call.elapsed_ms()
                                call.row.ttft_ms = round(ttft, 3)
                                self.metrics.ttft.labels(call.endpoint, call.row.route).observe(ttft / 1000)
                            tail += text
                            parts.append(text)
                            if len(parts) % STREAM_CHECK_EVERY == 0:
                                verdict = self.screen_output.check(tail)
                                tail = tail[-STREAM_CHECK_OVERLAP:]
                                if verdict.blocked:
                                    call.reasons.extend(verdict.reasons)
                                    call.row.output_verdict = "block"
                                    finish = "content_filter"
                                    break
                            out.append(prefix + jsonio.dumpb(text) + suffix)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                    if finish == "content_filter":
                        break
                if out:
                    yield b"".join(out)
                    out.clear()
                if finish == "content_filter":
                    break
            footer = citations(call) if finish != "content_filter" else ""
            if footer:
                parts.append(footer)
                yield event(footer)
        except EngineFailure as exc:
            error, finish = exc.kind, "error"
            yield (
                "data: "
                + json.dumps(
                    {
                        "error": {
                            "message": f"the engine failed mid-stream: {exc}",
                            "type": "server_error",
                            "code": exc.kind,
                        }
                    }
                )
                + "\n\n"
            )
        except (asyncio.CancelledError, GeneratorExit):
            error, finish = "client_disconnected", "cancelled"
            raise
        except Exception as exc:
            log.exception("request %s failed mid-stream", call.request_id)
            error, finish = "internal_error", "error"
            yield b"".join(out) + b"data: " + json.dumps(internal_error(exc).body()).encode() + b"\n\n"
        finally:
            text = "".join(parts)
            self.screen_output.final(call, text + tool_calls_text(calls.calls()))
            self.account.usage(call, usage, text)
            call.row.update(output=text, finish_reason=finish, tool_calls=calls.json())
            if error is None and finish != "content_filter":
                try:
                    self._check_answer(call, text, calls.calls())
                except ApiError as exc:
                    error, invalid = exc.code, exc
            refused = await self._end_stream(call, error)
        if refused is not None:  # the row could not be committed: the stream ends with that error, no [DONE]
            yield "data: " + json.dumps(refused.body()) + "\n\n"
            return
        if error is None:
            self.cache.store(call, "".join(parts), finish)
        self.shadow.offer(call)  # only queued: never awaited on the request path
        # The row is on disk: now the end of the stream
        if invalid is not None:  # relayed as it came, checked at its end: an error event instead of the last chunk
            yield "data: " + json.dumps(invalid.body()) + "\n\n"
        elif error is None:
            yield event(None, finish or "stop")
            if req.stream_options and req.stream_options.include_usage:
                yield (
                    "data: "
                    + json.dumps(
                        {
                            "id": call.request_id,
                            "object": kind,
                            "created": created,
                            "model": req.model,
                            "choices": [],
                            "usage": self._usage_body(call),
                        }
                    )
                    + "\n\n"
                )
        yield "data: [DONE]\n\n"

    async def _end_stream(self, call: Call, error: str | None) -> ApiError | None:
        """Settle and log a stream; the refusal when its row could not be committed."""
        self.metrics.latency.labels(call.endpoint, call.row.route, "true").observe(call.elapsed_ms() / 1000)
        status = 200 if error is None else (499 if error == "client_disconnected" else 502)
        try:
            await self._end(call, status, error)
        except ApiError as refused:
            return refused
        return None

    # -- probes -------------------------------------------------------------------------------------------
    def ready(self) -> tuple[bool, dict]:
        table = self.router.table()
        states = self.pool.states()
        detail = {
            "routed": bool(table),
            "stable": table.get("stable") if table else None,
            "canary": table.get("canary") if table else None,
            "engines": states,
            "log": "failing" if self.log.failing else "ok",
        }
        return bool(table) and any(s != "open" for s in states.values()) and not self.log.failing, detail


def create_app(settings: GatewaySettings, metrics_dir: str | None = None) -> FastAPI:
    """The gateway's ASGI app. ``metrics_dir``: prometheus_client's multiprocess folder when several worker
    processes share the port (``python -m crawl2serve.serving gateway`` passes it); ``None``: this process's own registry."""
    gateway = Gateway(settings, metrics_dir)
    batches = Batches(gateway, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(gateway.budgets.rebuild, settings.log_dir)  # before the log writes again
        gateway.log.start()
        stop = asyncio.Event()
        # Importing Feast takes seconds (and sets environment variables of its own): do it now, before serving.
        await asyncio.to_thread(gateway.tier_source.warm)
        pusher = asyncio.create_task(gateway.tier_source.run_pusher(stop))
        spend_pusher = asyncio.create_task(gateway.budgets.run_pusher(gateway.tier_source, stop))
        prober = asyncio.create_task(gateway.pool.probe_forever(stop))
        shadow = asyncio.create_task(gateway.shadow.run(stop))
        await batches.resume()
        try:
            yield
        finally:
            await batches.shutdown()
            stop.set()
            with contextlib.suppress(Exception):
                await pusher
                await spend_pusher
                await prober
                await shadow
            await gateway.pool.aclose()
            await gateway.account.drain()
            await gateway.budgets.drain()
            await gateway.budgets.store.aclose()
            await gateway.limiter.aclose()
            await gateway.cache.aclose()
            gateway.log.close()
            if gateway.retrieve:
                gateway.retrieve.live.close()

    app = FastAPI(title="crawl2serve gateway", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    app.openapi = lambda: document(app, settings)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(exc.status_code, str(exc.detail), code=code).response(dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return ApiError(400, f"invalid request: {exc.errors()[0].get('msg')}", code="invalid_request").response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return internal_error(exc).response()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        ok, detail = gateway.ready()
        return JSONResponse({"ready": ok, **detail}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics():
        gateway.metrics.log_pending.set(gateway.log.pending)
        await gateway.budgets.refresh_metrics()
        return Response(gateway.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get(DRIFT_ROUTE)
    async def drift_report(hour: str):
        """An hour's Evidently drift report (HTML), read-only (serving.gateway.reports)."""
        if settings.reports_dir is None:
            return ApiError(404, "no reports folder is configured (reports_dir)", code="not_found").response()
        try:
            path = await asyncio.to_thread(drift_report_file, settings.reports_dir, hour)
        except ValueError as exc:
            return ApiError(400, str(exc), code="invalid_request").response()
        if path is None:
            return ApiError(404, f"no drift report for {hour}", code="not_found").response()
        return FileResponse(path, media_type="text/html; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request):
        call = Call(request, "models")
        try:
            await gateway.authenticate(call)
        except ApiError as err:
            return err.response()
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "crawl2serve"}
                for m in gateway.router.public_models()
                + ([settings.rag.model] if settings.rag and gateway.router.public_models() else [])
            ],
        }

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        """A client's rating of one of its answered requests, recorded durably in the inference log."""
        return await gateway.feedback.handle(request, gateway.authenticate)

    add_routes(app, batches)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await gateway.handle(request, "completions")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await gateway.handle(request, "chat.completions")

    return app
