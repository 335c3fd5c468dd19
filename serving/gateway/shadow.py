"""Shadow traffic: a share of the answered requests mirrored to a challenger version, off the request path.

When a request has been answered (its row committed, the answer sent or its stream ended), :meth:`Shadow.offer`
decides by its request id (:func:`~serving.gateway.experiments.unit_fraction` < ``share``: the same requests on
every replica) whether to mirror it, and only puts it in a bounded queue: nothing is awaited, so the client's
answer is neither delayed nor changed. ``concurrency`` workers send the queued requests to the challenger
(``crawl2serve@<version>`` through the same router and engine pool, always non-streamed), screen the output with
the same output guardrail and append the challenger's row to the inference log (durable within the log's
flush interval, not fsync'ed before anything: it answers nobody) with the client request's
``request_id`` and ``role="shadow"`` (``latency_ms``: the challenger's engine call). A full queue sheds the
request (``c2s_gateway_shadow_requests{outcome="shed"}``); a failed or timed-out mirror is logged as a shadow
row with its error and counted (``outcome="failed"``), never raised. Requests the challenger already served
(pinned to it, or its own arm) are not mirrored, nor answers from the response cache (their latency is not
the champion's).
"""

import asyncio
import contextlib
import dataclasses
import logging
import time

from .call import Call
from .experiments import unit_fraction
from .logrow import LogRow
from .logstore import InferenceLog, utc_now_iso
from .metrics import GatewayMetrics
from .routing import Router, UnknownModel
from .settings import ShadowSettings
from .upstream import EnginePool, EngineRejected, RequestFailed, Unavailable

log = logging.getLogger("crawl2serve.gateway")


_FAILURES = (
    (UnknownModel, "model_not_found"),
    (EngineRejected, "engine_rejected"),
    (RequestFailed, "engine_request_failed"),
    (Unavailable, "engine_unavailable"),
    (TimeoutError, "shadow_timeout"),
)


@dataclasses.dataclass
class _Job:
    row: LogRow  # the shadow row, the primary's request fields copied
    path: str
    payload: dict


class Shadow:
    def __init__(
        self,
        settings: ShadowSettings,
        router: Router,
        pool: EnginePool,
        screen_output,
        inference_log: InferenceLog,
        metrics: GatewayMetrics,
    ):
        self.settings, self.router, self.pool, self.screen_output = settings, router, pool, screen_output
        self.log, self.metrics = inference_log, metrics
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=settings.queue_size)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.version) and self.settings.share > 0

    def wants(self, call: Call) -> bool:
        return (
            self.enabled
            and call.row.status == 200
            and call.engine_payload is not None
            and call.row.cache != "hit"  # a cached answer is no measure of the champion's engine (its latency)
            and call.row.model_version != self.settings.version
            and unit_fraction("shadow", call.request_id) < self.settings.share
        )

    def offer(self, call: Call) -> None:
        """Queue ``call`` for mirroring if it is one of the share (never blocks; sheds when full)."""
        if not self.wants(call):
            return
        payload = {k: v for k, v in call.engine_payload.items() if k != "stream_options"}
        payload["stream"] = False
        row = dataclasses.replace(
            call.row,
            ts=utc_now_iso(),
            role="shadow",
            model=f"{self.router.model_name}@{self.settings.version}",
            model_version=self.settings.version,
            stream=False,
            served_model="",
            adapter="",
            engine="",
            route="shadow",
            output="",
            completion_tokens=0,
            latency_ms=0.0,
            ttft_ms=None,
            output_verdict="allow",
            verdict_reasons="",
            finish_reason=None,
            status=200,
            error=None,
        )
        try:
            self.queue.put_nowait(_Job(row, call.engine_path, payload))
        except asyncio.QueueFull:
            self.metrics.shadow.labels("shed").inc()
            return
        self.metrics.shadow.labels("queued").inc()
        self.metrics.shadow_queue.set(self.queue.qsize())

    async def run(self, stop: asyncio.Event) -> None:
        """The workers, until ``stop`` is set (the jobs still queued then are dropped: shadows are best effort)."""
        if not self.enabled:
            return
        workers = [asyncio.create_task(self._work()) for _ in range(self.settings.concurrency)]
        await stop.wait()
        for w in workers:
            w.cancel()
        for w in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            self.metrics.shadow_queue.set(self.queue.qsize())
            try:
                await self.mirror(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("shadow of %s failed", job.row.request_id)
                self.metrics.shadow.labels("failed").inc()

    async def mirror(self, job: _Job) -> None:
        row = job.row
        start = time.perf_counter()
        try:
            route = self.router.pick(row.model)
            served = await asyncio.wait_for(
                self.pool.call(job.path, route.models, job.payload), timeout=self.settings.timeout_s
            )
        except (UnknownModel, EngineRejected, RequestFailed, Unavailable, TimeoutError) as exc:
            kind = next(k for cls, k in _FAILURES if isinstance(exc, cls))
            row.update(status=404 if kind == "model_not_found" else 502, error=kind, finish_reason="error")
            self.metrics.shadow.labels("failed").inc()
        else:
            body = served.body
            choice = (body.get("choices") or [{}])[0]
            chat = row.endpoint == "chat.completions"
            text = ((choice.get("message") or {}).get("content") or "") if chat else (choice.get("text") or "")
            verdict = self.screen_output.check(text)
            if verdict.action == "block":  # as a primary row would hold it
                text = ""
            usage = body.get("usage") or {}
            row.update(
                engine=served.engine,
                served_model=route.models[served.engine],
                adapter=route.models[served.engine],
                output=text,
                finish_reason=choice.get("finish_reason"),
                output_verdict=verdict.action,
                verdict_reasons=";".join(verdict.reasons),
                prompt_tokens=int(usage.get("prompt_tokens") or row.prompt_tokens),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
            self.metrics.shadow.labels("ok").inc()
        row.latency_ms = round((time.perf_counter() - start) * 1000.0, 3)
        # Enqueued, not committed: a shadow row rides along with the clients' next group commit (or the flush
        # interval's) instead of forcing an fsync of its own between theirs; never blocks (append would, on a
        # full queue: then the row is dropped and counted).
        if self.log.pending >= self.log.max_pending:
            self.metrics.shadow.labels("log_full").inc()
            return
        self.log.append(row)
