"""The gateway's request path as a short chain of small steps, each behind one interface::

    authenticate → read body → validate → route → [route by request] → structured → limit → budget
    → screen ∥ engine (or screen → cache) → screen output → account → charge → log

(routing by request: :mod:`serving.gateway.request_router`; the response cache: :mod:`serving.gateway.cache`;
the input screen runs while the engine prefills: :class:`Screen`).

A step is an object with ``async __call__(call)`` that fills in the :class:`~serving.gateway.call.Call` or
raises :class:`~serving.gateway.errors.ApiError`, which ends the call with that answer. Routing comes before the
rate limit because a prompt's tokens are counted with the tokenizer of the version that will serve it. The budget
check and the charge (a call's cost, added to its tenant's spend) are :mod:`serving.gateway.budgets`'. The last
four (output screening, accounting, charging, logging) run for every call that reached them, whatever its outcome:
accounting settles what the call reserved, and every call, answered or rejected, leaves one log row, committed
(fsync'ed) before the call is answered.
"""

import asyncio
import dataclasses
import json
import logging
from typing import Protocol

from .auth import KeyStore, parse_bearer
from .call import Call
from .errors import ApiError
from .experiments import Experiment
from .guardrails import Guardrails, Verdict
from .logstore import InferenceLog, LogUnavailable
from .metrics import GatewayMetrics
from .ratelimit import Tier
from .routing import Router, UnknownModel
from .schemas import EXTENSIONS, ChatRequest, CompletionRequest, invalid_unicode, printable, validated
from .settings import EngineSettings, LimitSettings
from .structured import OutputContract, ToolContract, capable_engines, check_schemas, needed_features, unsupported
from .tiers import TierSource
from .tokens import TokenCounter

log = logging.getLogger("crawl2serve.gateway")
ALLOW = Verdict("allow", (), 0.0)


class Step(Protocol):
    async def __call__(self, call: Call) -> None: ...


class Authenticate:
    """The bearer key must be one of the key store's (hashed) keys; names the tenant and its key tier."""

    def __init__(self, keys: KeyStore):
        self.keys = keys

    async def __call__(self, call: Call) -> None:
        key = parse_bearer(call.request.headers.get("authorization"))
        api_key = self.keys.lookup(key) if key else None
        if api_key is None:
            raise ApiError(
                401,
                "missing API key (Authorization: Bearer <key>)" if not key else "invalid API key",
                kind="authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        call.api_key = api_key
        call.row.update(tenant=api_key.tenant, key_id=api_key.key_id)


class ReadBody:
    """The body, read as it arrives and cut off at ``max_body_bytes`` (413) whether or not a Content-Length was
    sent: a chunked upload of any size costs at most the limit in memory. Then parsed as one JSON object."""

    def __init__(self, limits: LimitSettings):
        self.limit = limits.max_body_bytes

    async def read(self, call: Call) -> bytes:
        declared = call.request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise ApiError(400, f"invalid Content-Length header {declared!r}", code="invalid_request")
            if int(declared) > self.limit:
                raise ApiError(
                    413,
                    f"request body of {int(declared)} bytes exceeds the limit of {self.limit} bytes",
                    code="body_too_large",
                )
        chunks, size = [], 0
        async for chunk in call.request.stream():
            size += len(chunk)
            if size > self.limit:
                raise ApiError(413, f"request body exceeds the limit of {self.limit} bytes", code="body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def __call__(self, call: Call) -> None:
        raw = await self.read(call)
        try:
            body = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object", code="invalid_json")
        call.body = body


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


class Validate:
    """The body against the endpoint's schema (:mod:`serving.gateway.schemas`) and the gateway's limits."""

    def __init__(self, limits: LimitSettings):
        self.limits = limits

    async def __call__(self, call: Call) -> None:
        model_cls = ChatRequest if call.chat else CompletionRequest
        req = validated(model_cls, call.body)
        bad = invalid_unicode(call.body)
        prompt = req.prompt_text()
        call.row.update(model=printable(req.model), stream=req.stream, prompt=printable(prompt))
        if bad:
            raise ApiError(
                400,
                f"invalid value for {bad!r}: not valid Unicode (a lone surrogate)",
                param=bad,
                code="invalid_unicode",
            )
        limits = self.limits
        unforwarded = [f for f in EXTENSIONS if getattr(req, f) is not None and f not in limits.passthrough_fields]
        if unforwarded:
            raise ApiError(400, f"unknown field {unforwarded[0]!r}", param=unforwarded[0], code="invalid_request")
        param = "prompt" if isinstance(req, CompletionRequest) else "messages"
        if len(prompt) > limits.max_prompt_chars:
            raise ApiError(
                400,
                f"prompt has {len(prompt)} characters; the limit is {limits.max_prompt_chars}",
                param=param,
                code="prompt_too_long",
            )
        if isinstance(req, ChatRequest) and len(req.messages) > limits.max_messages:
            raise ApiError(
                400,
                f"{len(req.messages)} messages; the limit is {limits.max_messages}",
                param="messages",
                code="too_many_messages",
            )
        max_tokens = req.requested_max_tokens() or limits.default_max_tokens
        if max_tokens > limits.max_tokens:
            raise ApiError(
                400,
                f"max_tokens {max_tokens} exceeds the limit of {limits.max_tokens}",
                param="max_tokens",
                code="max_tokens_too_large",
            )
        if req.min_tokens is not None and req.min_tokens > max_tokens:
            raise ApiError(
                400,
                f"min_tokens {req.min_tokens} exceeds max_tokens {max_tokens}",
                param="min_tokens",
                code="invalid_request",
            )
        call.req, call.prompt, call.max_tokens = req, prompt, max_tokens


class Route:
    """Which version (and which model value on each engine) serves the requested public model name."""

    def __init__(self, router: Router):
        self.router = router

    async def __call__(self, call: Call) -> None:
        try:
            route = self.router.pick(call.req.model)
        except UnknownModel as exc:
            raise ApiError(404, str(exc), param="model", code="model_not_found") from exc
        call.route = route
        call.row.update(model_version=route.version, route=route.route)


class Assign:
    """The A/B test's arm (:mod:`serving.gateway.experiments`): an unpinned request is served by the version of
    the arm its tenant (or request id) hashes to, instead of stable/canary; pinned requests are left alone."""

    def __init__(self, experiment: Experiment, router: Router):
        self.experiment, self.router = experiment, router

    async def __call__(self, call: Call) -> None:
        if call.route.route == "pinned":
            return
        unit = call.api_key.tenant if self.experiment.unit == "tenant" else call.request_id
        arm = self.experiment.assign(unit)
        try:
            route = self.router.pick(f"{self.router.model_name}@{arm.version}")
        except UnknownModel as exc:
            raise ApiError(
                503,
                f"experiment {self.experiment.name!r} arm {arm.name!r}: version {arm.version} is not deployed",
                kind="server_error",
                code="experiment_arm_unavailable",
            ) from exc
        call.route = dataclasses.replace(route, public=call.req.model, route="experiment")
        call.row.update(model_version=route.version, route="experiment", experiment=self.experiment.name, arm=arm.name)


class Structured:
    """What a chat request asks beyond plain text (:mod:`serving.gateway.structured`): its JSON Schemas are
    valid, the routed version's chat template reads ``tools`` if it sends tools, and the route keeps only the
    engines that honour every feature it needs (a 400 ``unsupported_parameter`` when none does). Sets the
    call's contracts (:class:`~serving.gateway.structured.OutputContract` for its text,
    :class:`~serving.gateway.structured.ToolContract` for its tool calls), which its answer is checked against."""

    def __init__(self, engines: list[EngineSettings], counter: TokenCounter):
        self.features = {e.name: frozenset(e.features) for e in engines}
        self.backends = {e.name: e.backend for e in engines if e.backend}
        self.counter = counter

    async def __call__(self, call: Call) -> None:
        req, route = call.req, call.route
        if not isinstance(req, ChatRequest):
            return
        call.row.response_format = req.response_format.type if req.response_format else ""
        needs = needed_features(req)
        if not needs:
            return
        check_schemas(req)
        if req.tools:
            tok = await self.counter.aload(route.tokenizer)
            if tok is not None and tok.reads_tools is False:
                raise ApiError(
                    400,
                    f"tools are not supported by {req.model} (version {route.version}): its chat template never "
                    "reads them, so the model would not see them",
                    param="tools",
                    code="unsupported_parameter",
                )
        models, missing = capable_engines(route.models, self.features, needs)
        if not models:
            raise unsupported(needs, missing, self.backends, req.model)
        call.route = dataclasses.replace(route, models=models)
        call.contract, call.tool_contract = OutputContract.of(req), ToolContract.of(req)


class Limit:
    """The tenant's tier (Feast, else its key's) and its request/token budgets: reserves the prompt's tokens,
    counted with the tokenizer of the version that will serve it (:mod:`serving.gateway.tokens`), plus
    ``max_tokens``; :class:`Account` settles the reservation when the call ends. A rate-limit store outage admits
    the call unreserved (logged, ``ratelimit_unavailable``); a tenant in debt waits until refill repays it."""

    def __init__(
        self, limiter, tiers: dict[str, Tier], tier_source: TierSource, metrics: GatewayMetrics, counter: TokenCounter
    ):
        self.limiter, self.tiers, self.tier_source, self.metrics = limiter, tiers, tier_source, metrics
        self.counter = counter

    async def __call__(self, call: Call) -> None:
        api_key = call.api_key
        tier_name = await self.tier_source.tier(api_key.tenant, api_key.tier)
        tier = self.tiers.get(tier_name) or self.tiers["free"]
        if isinstance(call.req, ChatRequest):
            call.prompt_tokens = await self.counter.acount(
                call.route.tokenizer, messages=call.req.engine_messages(), tools=call.req.engine_tools()
            )
        else:
            call.prompt_tokens = await self.counter.acount(call.route.tokenizer, prompt=call.prompt)
        reserve = call.prompt_tokens + call.max_tokens
        try:
            decision = await self.limiter.reserve(api_key.tenant, tier, reserve)
        except Exception as exc:
            log.warning("rate limiter unavailable, admitting the request: %s", exc)
            self.metrics.errors.labels("ratelimit_unavailable").inc()
            call.tier = tier
            return
        if not decision.allowed and decision.retry_after_s == float("inf"):
            raise ApiError(
                400,
                f"this request may use {reserve} tokens ({call.prompt_tokens} prompt + "
                f"{call.max_tokens} max_tokens), more than the {tier.name} tier ever allows at once "
                f"({tier.burst_tokens:.0f}); lower max_tokens or shorten the prompt",
                param="max_tokens",
                code="exceeds_tier_token_burst",
            )
        if not decision.allowed:
            self.metrics.rate_limited.labels(decision.limit or "unknown", tier.name).inc()
            retry = max(1, int(decision.retry_after_s + 0.999))
            raise ApiError(
                429,
                f"rate limit exceeded for tenant {api_key.tenant!r} ({tier.name} tier: "
                f"{decision.limit} per minute); retry after {retry} s",
                kind="rate_limit_error",
                code=f"rate_limit_{decision.limit}",
                headers={"Retry-After": str(retry)},
            )
        call.tier, call.reserved = tier, reserve
        call.headers.update(
            {
                "X-Crawl2serve-Tier": tier.name,
                "X-Ratelimit-Remaining-Requests": str(max(0, int(decision.remaining_requests))),
                "X-Ratelimit-Remaining-Tokens": str(max(0, int(decision.remaining_tokens))),
            }
        )


class Screen:
    """The prompt through the input guardrail: a block ends the call with a 400, a flag is logged.

    The gateway runs it while the engine prefills (:meth:`serving.gateway.app.Gateway._screened_engine`:
    :meth:`verdict` once the engine request is written, then :meth:`apply`): no token reaches the client
    before the verdict, and a blocked prompt's engine request is cancelled. A call that may be answered
    without an engine (the caches) is screened before, as a step (:meth:`__call__`). Prompts longer than
    ``INLINE_CHARS`` are screened in a thread: normalizing and matching a 32k-character prompt takes 5–36 ms
    (bench/bench_guardrails.py), which the event loop must not spend while it relays other streams."""

    INLINE_CHARS = 2000

    def __init__(self, guardrails: Guardrails, metrics: GatewayMetrics):
        self.guardrails, self.metrics = guardrails, metrics

    async def verdict(self, call: Call) -> Verdict:
        """The guardrail's verdict on the prompt (a long one's in a thread)."""
        if len(call.prompt) > self.INLINE_CHARS:
            return await asyncio.to_thread(self.guardrails.screen_prompt, call.prompt)
        return self.guardrails.screen_prompt(call.prompt)

    def apply(self, call: Call, verdict: Verdict) -> None:
        """Count and record ``verdict``; raise the 400 ``prompt_rejected`` of a block."""
        self.metrics.verdicts.labels("input", verdict.action).inc()
        call.row.input_verdict = verdict.action
        call.reasons.extend(verdict.reasons)
        if verdict.action == "block":
            raise ApiError(
                400,
                "the prompt was rejected by the input guardrail (" + ", ".join(verdict.reasons) + ")",
                param="prompt",
                code="prompt_rejected",
            )

    async def __call__(self, call: Call) -> None:
        self.apply(call, await self.verdict(call))


class ScreenOutput:
    """Outputs through the output guardrail (a whole answer, or a stream's text so far)."""

    def __init__(self, guardrails: Guardrails, metrics: GatewayMetrics):
        self.guardrails, self.metrics = guardrails, metrics

    def check(self, text: str) -> Verdict:
        return self.guardrails.check_output(text) if text else ALLOW

    def final(self, call: Call, text: str) -> Verdict:
        """The verdict on a call's whole output, recorded in its row (a block found mid-stream stays)."""
        if call.row.output_verdict != "block":
            verdict = self.check(text)
            call.row.output_verdict = verdict.action
            call.reasons.extend(verdict.reasons)
        self.metrics.verdicts.labels("output", call.row.output_verdict).inc()
        return Verdict(call.row.output_verdict, (), 0.0)


class Account:
    """Settles what a call reserved: the tokens it used (the engine's usage; where it gives none, the counted
    prompt and the output counted with the same tokenizer) replace the reservation: the rest goes back to the
    tenant, an overrun is charged as debt. The settle runs as a task of its own, so that it completes even when
    the call's task is being cancelled (a client gone mid-stream); its failure is logged, never the call's."""

    def __init__(self, limiter, tier_source: TierSource, metrics: GatewayMetrics, counter: TokenCounter):
        self.limiter, self.tier_source, self.metrics, self.counter = limiter, tier_source, metrics, counter
        self._settling: set[asyncio.Task] = set()

    def usage(self, call: Call, usage: dict | None, output: str) -> None:
        usage = usage or {}
        tokenizer = call.route.tokenizer if call.route else None
        call.row.prompt_tokens = int(usage.get("prompt_tokens") or call.prompt_tokens)
        call.row.completion_tokens = int(
            usage.get("completion_tokens") or (self.counter.count_output(tokenizer, output) if output else 0)
        )
        self.metrics.tokens.labels("in", call.row.model_version).inc(call.row.prompt_tokens)
        self.metrics.tokens.labels("out", call.row.model_version).inc(call.row.completion_tokens)

    async def _settle(self, tenant: str, tier: Tier, reserved: int, used: int) -> None:
        try:
            await self.limiter.settle(tenant, tier, reserved, used)
        except Exception as exc:
            log.warning("rate limiter unavailable, %d tokens not settled: %s", used - reserved, exc)
            self.metrics.errors.labels("ratelimit_unavailable").inc()

    async def __call__(self, call: Call) -> None:
        if call.tier is None:
            return
        used = call.row.prompt_tokens + call.row.completion_tokens
        if call.reserved:  # 0: admitted while the limiter was unavailable, nothing to settle
            task = asyncio.get_running_loop().create_task(
                self._settle(call.api_key.tenant, call.tier, call.reserved, used)
            )
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
        call.reserved = 0
        if used:
            self.tier_source.record(call.api_key.tenant, used)

    async def drain(self) -> None:
        """Wait for the settles still running (at shutdown)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)


class Log:
    """Writes the call's row to the inference log (once, whatever the outcome) and returns once it is on disk,
    so that no answer leaves before its row (``commit_before_answer``; off: only enqueued, a crash can lose the
    rows of answered calls). A row the log cannot commit in time (the disk keeps failing) ends the call with a
    503 ``log_unavailable`` instead of its answer, and the row says so."""

    def __init__(self, inference_log: InferenceLog, metrics: GatewayMetrics, commit_before_answer: bool = True):
        self.log, self.metrics, self.commit_before_answer = inference_log, metrics, commit_before_answer

    async def __call__(self, call: Call, status: int = 200, error: str | None = None) -> None:
        if call.ended:
            return
        call.ended = True
        call.row.update(
            status=status, error=error, latency_ms=round(call.elapsed_ms(), 3), verdict_reasons=";".join(call.reasons)
        )
        try:
            if self.commit_before_answer:
                await self.log.commit(call.row)
            else:
                self.log.append(call.row)
        except LogUnavailable as exc:  # the row now says 503 log_unavailable: that is the answer
            raise ApiError(
                503,
                "the request could not be recorded in the inference log, so it is not answered; retry later",
                kind="server_error",
                code="log_unavailable",
                headers={"Retry-After": "5"},
            ) from exc
        finally:
            self.metrics.requests.labels(call.endpoint, str(call.row.status)).inc()
            if call.row.error:
                self.metrics.errors.labels(call.row.error).inc()
            self.metrics.log_pending.set(self.log.pending)
