"""The OpenAI-compatible gateway in front of the engines (FastAPI).

Per request: size limit → API key → JSON → schema → model routing → prompt screening → tier (Feast) → rate
limits (requests and tokens) → engine call (retries, breaker, fallback) → output check → response; every
request, answered or rejected, becomes one row of the inference log. ``/health`` (process up), ``/ready``
(a model is routed and an engine's breaker is not open), ``/metrics`` (Prometheus).
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from . import jsonio
from .auth import KeyStore, parse_bearer
from .guardrails import Guardrails, Verdict
from .logstore import InferenceLog, utc_now_iso
from .metrics import GatewayMetrics
from .ratelimit import DEFAULT_TIERS, Tier, make_limiter
from .routing import Route, Router, UnknownModel
from .schemas import ChatRequest, CompletionRequest, describe
from .settings import GatewaySettings
from .tiers import TierSource
from .upstream import EngineFailure, EnginePool, EngineRejected, Unavailable

log = logging.getLogger("crawl2serve.gateway")
ALLOW = Verdict("allow", (), 0.0)
# Streams are checked every STREAM_CHECK_EVERY chunks, on the new text plus STREAM_CHECK_OVERLAP characters
# before it (not the whole output each time, which is quadratic); the whole output is checked once more when
# the stream ends. A blocked pattern can so reach the client by at most STREAM_CHECK_EVERY - 1 chunks.
STREAM_CHECK_EVERY = 8
STREAM_CHECK_OVERLAP = 256


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind, "param": self.param,
                                       "code": self.code}}, status_code=self.status, headers=self.headers)


def estimate_tokens(text: str) -> int:
    """Rough prompt-token count for reserving rate-limit budget before the engine counts (≈4 chars a token)."""
    return len(text) // 4 + 1


class Record:
    """The inference-log row of one request, filled in as the request goes."""

    def __init__(self, endpoint: str):
        self.start = time.perf_counter()
        self.row = {"request_id": f"req-{uuid.uuid4().hex}", "ts": utc_now_iso(), "tenant": "", "key_id": "",
                    "endpoint": endpoint, "model": "", "served_model": "", "model_version": "", "adapter": "",
                    "engine": "", "route": "", "stream": False, "status": 200, "error": None, "prompt": "",
                    "output": "", "prompt_tokens": 0, "completion_tokens": 0, "latency_ms": 0.0, "ttft_ms": None,
                    "input_verdict": "allow", "output_verdict": "allow", "verdict_reasons": "",
                    "finish_reason": None}
        self.reasons: list[str] = []
        self.headers: dict[str, str] = {}

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0


class Gateway:
    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.keys = KeyStore.load(settings.keys_file)
        self.router = Router(settings.routing_file, settings.model_name)
        self.pool = EnginePool(settings.engines, settings.breaker, settings.retry, self.metrics)
        self.limiter = make_limiter(settings.redis_url)
        self.tiers = {**DEFAULT_TIERS, **{name: t.tier(name) for name, t in settings.tiers.items()}}
        g = settings.guardrails
        self.guardrails = Guardrails(g.blocked_patterns, g.injection_threshold, g.max_output_chars)
        if settings.workers > 1 and not settings.redis_url:
            log.warning("%d workers without redis_url: rate limits apply per worker and usage is not pushed to "
                        "Feast (each worker would overwrite the others' counts); set redis_url", settings.workers)
        self.tier_source = TierSource(settings.feast, push=settings.workers == 1 or bool(settings.redis_url))
        self.log = InferenceLog(settings.log_dir, flush_interval_s=settings.log_flush_interval_s)

    # -- request pipeline ------------------------------------------------------------------------------------
    def finish(self, rec: Record, status: int, error: str | None = None) -> None:
        rec.row.update(status=status, error=error, latency_ms=round(rec.elapsed_ms(), 3),
                       verdict_reasons=";".join(rec.reasons))
        self.metrics.requests.labels(rec.row["endpoint"], str(status)).inc()
        if error:
            self.metrics.errors.labels(error).inc()
        self.log.append(rec.row)
        self.metrics.log_pending.set(self.log.pending)

    async def handle(self, request: Request, endpoint: str) -> Response:
        rec = Record(endpoint)
        self.metrics.inflight.inc()
        try:
            return await self._handle(request, rec)
        except ApiError as err:
            self.finish(rec, err.status, err.code or err.kind)
            return err.response()
        except Exception as exc:  # noqa: BLE001 — a bug must still answer 500 and leave a log row
            log.exception("request %s failed", rec.row["request_id"])
            self.finish(rec, 500, "internal_error")
            return ApiError(500, f"internal error ({type(exc).__name__})", kind="server_error").response()
        finally:
            self.metrics.inflight.dec()

    async def _body(self, request: Request) -> dict:
        limit = self.settings.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                           code="body_too_large")
        raw = await request.body()
        if len(raw) > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="body_too_large")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object", code="invalid_json")
        return body

    def _authenticate(self, request: Request, rec: Record):
        key = parse_bearer(request.headers.get("authorization"))
        api_key = self.keys.lookup(key) if key else None
        if api_key is None:
            raise ApiError(401, "missing API key (Authorization: Bearer <key>)" if not key else "invalid API key",
                           kind="authentication_error", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        rec.row.update(tenant=api_key.tenant, key_id=api_key.key_id)
        return api_key

    def _validate(self, body: dict, rec: Record):
        model_cls = ChatRequest if rec.row["endpoint"] == "chat.completions" else CompletionRequest
        extra = {k: body.pop(k) for k in self.settings.limits.passthrough_fields if k in body}
        for name, value in extra.items():
            if not isinstance(value, (bool, int, float)):
                raise ApiError(400, f"invalid value for {name!r}: expected a number or boolean", param=name,
                               code="invalid_request")
        try:
            req = model_cls.model_validate(body)
        except ValidationError as exc:
            message, param = describe(exc)
            raise ApiError(400, message, param=param, code="invalid_request") from exc
        limits = self.settings.limits
        prompt = req.prompt_text()
        rec.row.update(model=req.model, stream=req.stream, prompt=prompt)
        if len(prompt) > limits.max_prompt_chars:
            raise ApiError(400, f"prompt has {len(prompt)} characters; the limit is {limits.max_prompt_chars}",
                           param="prompt" if isinstance(req, CompletionRequest) else "messages",
                           code="prompt_too_long")
        if isinstance(req, ChatRequest) and len(req.messages) > limits.max_messages:
            raise ApiError(400, f"{len(req.messages)} messages; the limit is {limits.max_messages}",
                           param="messages", code="too_many_messages")
        max_tokens = (getattr(req, "max_completion_tokens", None) or req.max_tokens or limits.default_max_tokens)
        if max_tokens > limits.max_tokens:
            raise ApiError(400, f"max_tokens {max_tokens} exceeds the limit of {limits.max_tokens}",
                           param="max_tokens", code="max_tokens_too_large")
        return req, prompt, max_tokens, extra

    def _route(self, req, rec: Record) -> Route:
        try:
            route = self.router.pick(req.model)
        except UnknownModel as exc:
            raise ApiError(404, str(exc), param="model", code="model_not_found") from exc
        rec.row.update(model_version=route.version, route=route.route)
        return route

    def _screen(self, prompt: str, rec: Record) -> None:
        verdict = self.guardrails.screen_prompt(prompt)
        self.metrics.verdicts.labels("input", verdict.action).inc()
        rec.row["input_verdict"] = verdict.action
        rec.reasons.extend(verdict.reasons)
        if verdict.action == "block":
            raise ApiError(400, "the prompt was rejected by the input guardrail (" + ", ".join(verdict.reasons) + ")",
                           param="prompt", code="prompt_rejected")

    async def _limit(self, api_key, rec: Record, reserve: int) -> tuple[Tier, int]:
        tier_name = await self.tier_source.tier(api_key.tenant, api_key.tier)
        tier = self.tiers.get(tier_name) or self.tiers["free"]
        try:
            decision = self.limiter.check(api_key.tenant, tier, reserve)
        except Exception as exc:  # noqa: BLE001 — a rate-limit store outage must not take serving down
            log.warning("rate limiter unavailable, admitting the request: %s", exc)
            self.metrics.errors.labels("ratelimit_unavailable").inc()
            return tier, 0
        if not decision.allowed and decision.retry_after_s == float("inf"):
            raise ApiError(400, f"this request may use {reserve} tokens (prompt + max_tokens), more than the "
                           f"{tier.name} tier ever allows at once ({tier.burst_tokens:.0f}); lower max_tokens",
                           param="max_tokens", code="exceeds_tier_token_burst")
        if not decision.allowed:
            self.metrics.rate_limited.labels(decision.limit or "unknown", tier.name).inc()
            retry = max(1, int(decision.retry_after_s + 0.999))
            raise ApiError(429, f"rate limit exceeded for tenant {api_key.tenant!r} ({tier.name} tier: "
                           f"{decision.limit} per minute); retry after {retry} s", kind="rate_limit_error",
                           code=f"rate_limit_{decision.limit}", headers={"Retry-After": str(retry)})
        rec.headers = {"X-Request-Id": rec.row["request_id"], "X-Crawl2serve-Tier": tier.name,
                       "X-Ratelimit-Remaining-Requests": str(int(decision.remaining_requests)),
                       "X-Ratelimit-Remaining-Tokens": str(int(decision.remaining_tokens))}
        return tier, reserve

    async def _handle(self, request: Request, rec: Record) -> Response:
        api_key = self._authenticate(request, rec)
        body = await self._body(request)
        req, prompt, max_tokens, extra = self._validate(body, rec)
        route = self._route(req, rec)
        self._screen(prompt, rec)
        tier, reserved = await self._limit(api_key, rec, estimate_tokens(prompt) + max_tokens)
        payload = {**req.sampling(), **extra, "max_tokens": max_tokens, "stream": req.stream}
        if isinstance(req, ChatRequest):
            path, payload["messages"] = "/v1/chat/completions", req.engine_messages()
        else:
            path, payload["prompt"] = "/v1/completions", prompt
        if req.stream:
            payload["stream_options"] = {"include_usage": True}
        try:
            served = await self.pool.call(path, route.models, payload, stream=req.stream)
        except EngineRejected as exc:
            self.limiter.refund(api_key.tenant, tier, reserved)
            message = exc.body.get("error", {}).get("message", str(exc.body)) if isinstance(exc.body, dict) \
                else str(exc.body)
            raise ApiError(exc.status if exc.status != 404 else 400, f"the engine rejected the request: {message}",
                           code="engine_rejected") from exc
        except Unavailable as exc:
            self.limiter.refund(api_key.tenant, tier, reserved)
            raise ApiError(503, f"no engine available: {exc}", kind="server_error", code="engine_unavailable",
                           headers={"Retry-After": "5"}) from exc
        rec.row.update(engine=served.engine, served_model=route.models[served.engine],
                       adapter=route.models[served.engine],
                       route="fallback" if served.position > 0 else route.route)
        if req.stream:
            events = self._stream(served, rec, req, api_key, tier, reserved)
            # Start the stream before answering: from here on its ``finally`` (which writes the log row) runs
            # even if the client leaves before the body is read (the loop closes a suspended generator).
            first = await events.__anext__()

            async def body():
                yield first
                async for event in events:
                    yield event

            return StreamingResponse(body(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", **rec.headers})
        return self._complete(served.body, rec, req, api_key, tier, reserved)

    def _usage(self, rec: Record, usage: dict | None, prompt: str, output: str) -> None:
        usage = usage or {}
        rec.row["prompt_tokens"] = int(usage.get("prompt_tokens") or estimate_tokens(prompt))
        rec.row["completion_tokens"] = int(usage.get("completion_tokens") or (estimate_tokens(output) if output else 0))
        self.metrics.tokens.labels("in", rec.row["model_version"]).inc(rec.row["prompt_tokens"])
        self.metrics.tokens.labels("out", rec.row["model_version"]).inc(rec.row["completion_tokens"])

    def _settle(self, rec: Record, api_key, tier: Tier, reserved: int) -> None:
        used = rec.row["prompt_tokens"] + rec.row["completion_tokens"]
        if reserved > used:
            self.limiter.refund(api_key.tenant, tier, reserved - used)
        self.tier_source.record(api_key.tenant, used)

    def _check_output(self, text: str, rec: Record) -> Verdict:
        verdict = self.guardrails.check_output(text) if text else ALLOW
        rec.row["output_verdict"] = verdict.action
        return verdict

    def _complete(self, body: dict, rec: Record, req, api_key, tier: Tier, reserved: int) -> Response:
        choice = (body.get("choices") or [{}])[0]
        chat = rec.row["endpoint"] == "chat.completions"
        text = ((choice.get("message") or {}).get("content") or "") if chat else (choice.get("text") or "")
        finish = choice.get("finish_reason")
        verdict = self._check_output(text, rec)
        self.metrics.verdicts.labels("output", verdict.action).inc()
        rec.reasons.extend(verdict.reasons)
        if verdict.action == "block":
            text, finish = "", "content_filter"
        self._usage(rec, body.get("usage"), rec.row["prompt"], text)
        rec.row.update(output=text, finish_reason=finish)
        self._settle(rec, api_key, tier, reserved)
        out_choice = {"index": 0, "finish_reason": finish}
        if chat:
            out_choice["message"] = {"role": "assistant", "content": text}
        else:
            out_choice.update(text=text, logprobs=None)
        response = {"id": rec.row["request_id"], "object": "chat.completion" if chat else "text_completion",
                    "created": int(time.time()), "model": req.model, "choices": [out_choice],
                    "usage": {"prompt_tokens": rec.row["prompt_tokens"],
                              "completion_tokens": rec.row["completion_tokens"],
                              "total_tokens": rec.row["prompt_tokens"] + rec.row["completion_tokens"]}}
        self.metrics.latency.labels(rec.row["endpoint"], rec.row["route"], "false").observe(rec.elapsed_ms() / 1000)
        self.finish(rec, 200)
        return JSONResponse(response, headers=rec.headers)

    async def _stream(self, served, rec: Record, req, api_key, tier: Tier, reserved: int):
        chat = rec.row["endpoint"] == "chat.completions"
        kind = "chat.completion.chunk" if chat else "text_completion"
        created = int(time.time())
        parts: list[str] = []
        tail = ""
        usage, finish, error = None, None, None

        def event(delta_text: str | None, finish_reason: str | None = None, extra: dict | None = None) -> str:
            choice = {"index": 0, "finish_reason": finish_reason}
            if chat:
                choice["delta"] = {"content": delta_text} if delta_text is not None else {}
            else:
                choice.update(text=delta_text or "", logprobs=None)
            return "data: " + jsonio.dumps({"id": rec.row["request_id"], "object": kind, "created": created,
                                            "model": req.model, "choices": [choice], **(extra or {})}) + "\n\n"

        try:
            if chat:  # OpenAI streams open with the assistant role
                yield "data: " + json.dumps({"id": rec.row["request_id"], "object": kind, "created": created,
                                              "model": req.model, "choices": [{"index": 0, "finish_reason": None,
                                              "delta": {"role": "assistant", "content": ""}}]}) + "\n\n"
            async for chunk in self.pool.iter_events(served):
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    text = ((choice.get("delta") or {}).get("content") if chat else choice.get("text")) or ""
                    if text:
                        if not parts:
                            ttft = rec.elapsed_ms()
                            rec.row["ttft_ms"] = round(ttft, 3)
                            self.metrics.ttft.labels(rec.row["endpoint"], rec.row["route"]).observe(ttft / 1000)
                        tail += text
                        parts.append(text)
                        verdict = ALLOW
                        if len(parts) % STREAM_CHECK_EVERY == 0:
                            verdict = self.guardrails.check_output(tail)
                            tail = tail[-STREAM_CHECK_OVERLAP:]
                        if verdict.action == "block":
                            rec.reasons.extend(verdict.reasons)
                            rec.row["output_verdict"] = "block"
                            finish = "content_filter"
                            break
                        yield event(text)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                if finish == "content_filter":
                    break
        except EngineFailure as exc:
            error = exc.kind
            finish = "error"
            yield "data: " + json.dumps({"error": {"message": f"the engine failed mid-stream: {exc}",
                                                   "type": "server_error", "code": exc.kind}}) + "\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            error, finish = "client_disconnected", "cancelled"
            raise
        finally:
            text = "".join(parts)
            if rec.row["output_verdict"] != "block":
                verdict = self._check_output(text, rec)
                rec.reasons.extend(verdict.reasons)
            self.metrics.verdicts.labels("output", rec.row["output_verdict"]).inc()
            self._usage(rec, usage, rec.row["prompt"], text)
            rec.row.update(output=text, finish_reason=finish)
            self._settle(rec, api_key, tier, reserved)
            self.metrics.latency.labels(rec.row["endpoint"], rec.row["route"], "true").observe(rec.elapsed_ms() / 1000)
            self.finish(rec, 200 if error is None else (499 if error == "client_disconnected" else 502), error)
        if error is None:
            yield event(None, finish or "stop")
            if req.stream_options and req.stream_options.get("include_usage"):
                yield "data: " + json.dumps({"id": rec.row["request_id"], "object": kind, "created": created,
                                              "model": req.model, "choices": [],
                                              "usage": {"prompt_tokens": rec.row["prompt_tokens"],
                                                        "completion_tokens": rec.row["completion_tokens"],
                                                        "total_tokens": rec.row["prompt_tokens"]
                                                        + rec.row["completion_tokens"]}}) + "\n\n"
        yield "data: [DONE]\n\n"

    # -- probes -------------------------------------------------------------------------------------------
    def ready(self) -> tuple[bool, dict]:
        table = self.router.table()
        states = self.pool.states()
        detail = {"routed": bool(table), "stable": table.get("stable") if table else None,
                  "canary": table.get("canary") if table else None, "engines": states}
        return bool(table) and any(s != "open" for s in states.values()), detail


def create_app(settings: GatewaySettings) -> FastAPI:
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        gateway.log.start()
        stop = asyncio.Event()
        # importing Feast takes seconds: do it now, beside serving, not in the first request
        warm = asyncio.create_task(asyncio.to_thread(gateway.tier_source.warm))
        pusher = asyncio.create_task(gateway.tier_source.run_pusher(stop))
        try:
            yield
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await warm
                await pusher
            await gateway.pool.aclose()
            gateway.log.close()

    app = FastAPI(title="crawl2serve gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.gateway = gateway

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
        return Response(gateway.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request):
        try:
            gateway._authenticate(request, Record("models"))
        except ApiError as err:
            return err.response()
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "crawl2serve"}
                                           for m in gateway.router.public_models()]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await gateway.handle(request, "completions")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await gateway.handle(request, "chat.completions")

    return app
