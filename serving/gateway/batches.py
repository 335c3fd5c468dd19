"""``/v1/batches`` (and ``/v1/files``): OpenAI's Batch API, executed in the gateway process by the batch runner.

A batch names an uploaded JSONL file (:mod:`serving.gateway.files`) and an endpoint. It runs as a background
task of the gateway: :func:`serving.batch.run_batch` sends its lines, at most ``batch.concurrency`` in flight
over all batches of the process, each one through the gateway's own request path after authentication
(:class:`LineSend`): validated, routed, rate-limited on the tenant's tokens, screened, served, accounted and
written to the inference log with ``batch_id``. A line refused by the tenant's rate limit (429) waits the
``Retry-After`` and is sent again (a batch is not in a hurry); any other error is that line's answer. Results
go to disk in chunks (``{tenant}/batches/<id>/chunks``), so a gateway that restarts resumes its open batches
where they stopped; when every line is answered, the successes become the batch's output file and the failures
its error file, in OpenAI's format (``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error"}``). A tenant has at most ``batch.max_open_per_tenant`` batches open; its batches are invisible to
others (404). State: ``{tenant}/batches/<id>.json``, the OpenAI ``batch`` object plus who owns it, rewritten
atomically at each change. ``completion_window`` is accepted as ``24h`` and reported, not enforced.
With several workers, a batch runs in the worker that holds its lock file; a cancel reaches it at its next chunk.
"""

import asyncio
import contextlib
import copy
import dataclasses
import fcntl
import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Literal

from fastapi import Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..atomic import write_durable
from ..batch import BATCH_URLS, BadLine, BatchLine, ChunkStore, RunStats, run_batch
from .auth import ApiKey
from .call import Call
from .errors import ApiError
from .files import FileStore, bad_line_error, not_found, receive_upload, tenant_folder, validate_lines
from .schemas import validated
from .settings import GatewaySettings, LimitSettings
from .steps import Authenticate, ReadBody

log = logging.getLogger("crawl2serve.gateway")
BATCH_ID_PREFIX = "batch_"
OPEN = ("validating", "in_progress", "finalizing", "cancelling")
OWNER_FIELDS = ("tenant", "key_id", "tier")  # kept in the state file, never answered
SHUTDOWN_GRACE_S = 8.0  # lines in flight at shutdown get this long to be answered and written


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    input_file_id: str = Field(description="An uploaded file of purpose 'batch'")
    endpoint: str = Field(description="/v1/completions or /v1/chat/completions: every line's url")
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None


@dataclasses.dataclass
class Running:
    """A batch being executed by this process."""

    task: asyncio.Task
    cancel: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    shutdown: bool = False

    def stopping(self) -> bool:
        return self.shutdown or self.cancel.is_set()


class LineSend:
    """One batch line through the gateway's request path after authentication (``serving.batch.Send``)."""

    def __init__(self, gateway, steps, api_key: ApiKey, batch_id: str, semaphore: asyncio.Semaphore, running):
        self.gateway, self.steps, self.api_key, self.batch_id = gateway, steps, api_key, batch_id
        self.semaphore, self.running = semaphore, running

    async def __call__(self, line: BatchLine):
        endpoint = "chat.completions" if line.url == "/v1/chat/completions" else "completions"
        while True:
            async with self.semaphore:
                if self.running.stopping():
                    return None
                call = Call(None, endpoint)
                call.api_key = self.api_key
                call.row.update(tenant=self.api_key.tenant, key_id=self.api_key.key_id, batch_id=self.batch_id)
                call.body = copy.deepcopy(line.body)
                response = await self.gateway.run(call, self.steps)
            body = json.loads(response.body)
            code = str((body.get("error") or {}).get("code") or "")
            if response.status_code == 429 and code.startswith("rate_limit"):
                self.gateway.metrics.batch_lines.labels("rate_limited").inc()
                await asyncio.sleep(float(response.headers.get("retry-after") or 1))
                continue
            self.gateway.metrics.batch_lines.labels("ok" if response.status_code == 200 else "failed").inc()
            return response.status_code, body, call.request_id


class Batches:
    """The Batch API of one gateway process: its HTTP handlers and the batches it executes."""

    def __init__(self, gateway, settings: GatewaySettings):
        self.gateway, self.cfg = gateway, settings.batch
        self.root = Path(settings.batch_dir())
        self.files = FileStore(self.root)
        self.read_body = ReadBody(LimitSettings(max_body_bytes=64 * 1024))
        self.steps = [s for s in gateway.steps if not isinstance(s, Authenticate | ReadBody)]
        self.semaphore = asyncio.Semaphore(self.cfg.concurrency)
        self.running: dict[str, Running] = {}
        self._state_lock = threading.Lock()  # state files are updated from the loop and from worker threads

    # -- state --------------------------------------------------------------------------------------------
    def _folder(self, tenant: str) -> Path:
        return tenant_folder(self.root, tenant) / "batches"

    def _load(self, tenant: str, batch_id: str) -> dict:
        path = self._folder(tenant) / f"{batch_id}.json"
        if not batch_id.startswith(BATCH_ID_PREFIX) or "/" in batch_id or not path.is_file():
            raise not_found("batch", batch_id)
        return json.loads(path.read_text())

    def _save(self, state: dict) -> None:
        write_durable(self._folder(state["tenant"]) / f"{state['id']}.json", json.dumps(state).encode())

    def _update(self, tenant: str, batch_id: str, **changes) -> dict:
        with self._state_lock:
            state = self._load(tenant, batch_id)
            state.update(changes)
            self._save(state)
            return state

    @staticmethod
    def _public(state: dict) -> dict:
        return {k: v for k, v in state.items() if k not in OWNER_FIELDS}

    def _all_states(self, tenant: str | None = None) -> list[dict]:
        pattern = (
            f"{tenant_folder(self.root, tenant).name}/batches/{BATCH_ID_PREFIX}*.json" if tenant else "*/batches/*.json"
        )
        states = [json.loads(p.read_text()) for p in self.root.glob(pattern)]
        return sorted(states, key=lambda s: (s["created_at"], s["id"]), reverse=True)

    async def _tenant(self, request: Request) -> ApiKey:
        call = Call(request, "batches")
        await self.gateway.authenticate(call)
        return call.api_key

    # -- /v1/files ----------------------------------------------------------------------------------------
    async def upload(self, request: Request) -> JSONResponse:
        key = await self._tenant(request)
        file_id, tmp = self.files.new_upload(key.tenant)
        try:
            filename, purpose = await receive_upload(request, tmp, self.cfg.max_file_bytes)
            data = await asyncio.to_thread(tmp.read_bytes)
            try:
                await asyncio.to_thread(validate_lines, data, None, self.cfg.max_lines)
            except BadLine as exc:
                raise bad_line_error(exc) from exc
            stored = await asyncio.to_thread(self.files.keep, key.tenant, file_id, tmp, filename, purpose)
        finally:
            tmp.unlink(missing_ok=True)
        return JSONResponse(stored.to_api())

    async def file(self, request: Request, file_id: str) -> JSONResponse:
        key = await self._tenant(request)
        return JSONResponse(self.files.get(key.tenant, file_id).to_api())

    async def list_files(self, request: Request, purpose: str | None) -> JSONResponse:
        key = await self._tenant(request)
        files = await asyncio.to_thread(self.files.list, key.tenant, purpose)
        return JSONResponse({"object": "list", "data": [f.to_api() for f in files], "has_more": False})

    async def content(self, request: Request, file_id: str) -> FileResponse:
        key = await self._tenant(request)
        return FileResponse(self.files.content_path(key.tenant, file_id), media_type="application/jsonl")

    # -- /v1/batches --------------------------------------------------------------------------------------
    async def create(self, request: Request) -> JSONResponse:
        key = await self._tenant(request)
        call = Call(request, "batches")
        await self.read_body(call)
        req = validated(CreateBatch, call.body)
        if req.endpoint not in BATCH_URLS:
            raise ApiError(
                400,
                f"invalid value for 'endpoint': {req.endpoint!r}; expected {' or '.join(BATCH_URLS)}",
                param="endpoint",
                code="invalid_request",
            )
        try:
            stored = self.files.get(key.tenant, req.input_file_id)
        except ApiError as exc:
            exc.param = "input_file_id"
            raise
        if stored.purpose != "batch":
            raise ApiError(400, f"file {stored.id} has purpose {stored.purpose!r}, not 'batch'", param="input_file_id")
        data = await asyncio.to_thread(self.files.read, key.tenant, stored.id)
        try:
            lines = await asyncio.to_thread(validate_lines, data, req.endpoint, self.cfg.max_lines)
        except BadLine as exc:
            raise bad_line_error(exc) from exc
        open_now = [s for s in await asyncio.to_thread(self._all_states, key.tenant) if s["status"] in OPEN]
        if len(open_now) >= self.cfg.max_open_per_tenant:
            raise ApiError(
                429,
                f"tenant {key.tenant!r} has {len(open_now)} open batches, the most it may have at once "
                f"(batch.max_open_per_tenant); wait for one to finish or cancel one",
                kind="rate_limit_error",
                code="too_many_open_batches",
            )
        now = int(time.time())
        state = {
            "id": f"{BATCH_ID_PREFIX}{secrets.token_hex(12)}",
            "object": "batch",
            "endpoint": req.endpoint,
            "errors": None,
            "input_file_id": stored.id,
            "completion_window": req.completion_window,
            "status": "in_progress",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": now,
            "expires_at": now + 24 * 3600,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": req.metadata,
            "tenant": key.tenant,
            "key_id": key.key_id,
            "tier": key.tier,
        }
        await asyncio.to_thread(self._save, state)
        self.start(state)
        return JSONResponse(self._public(state))

    async def retrieve(self, request: Request, batch_id: str) -> JSONResponse:
        key = await self._tenant(request)
        return JSONResponse(self._public(self._load(key.tenant, batch_id)))

    async def cancel(self, request: Request, batch_id: str) -> JSONResponse:
        key = await self._tenant(request)
        state = self._load(key.tenant, batch_id)
        if state["status"] in ("validating", "in_progress"):
            state = self._update(key.tenant, batch_id, status="cancelling", cancelling_at=int(time.time()))
            running = self.running.get(batch_id)
            if running is not None:
                running.cancel.set()
        return JSONResponse(self._public(state))

    async def list(self, request: Request, after: str | None, limit: int) -> JSONResponse:
        key = await self._tenant(request)
        if not 1 <= limit <= 100:
            raise ApiError(400, f"invalid value for 'limit': {limit}; expected 1 to 100", param="limit")
        states = await asyncio.to_thread(self._all_states, key.tenant)
        if after is not None:
            ids = [s["id"] for s in states]
            if after not in ids:
                raise not_found("batch", after)
            states = states[ids.index(after) + 1 :]
        page = states[:limit]
        return JSONResponse(
            {
                "object": "list",
                "data": [self._public(s) for s in page],
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(states) > limit,
            }
        )

    # -- execution ----------------------------------------------------------------------------------------
    def start(self, state: dict) -> None:
        if state["id"] in self.running:
            return
        task = asyncio.get_running_loop().create_task(self._execute(state["tenant"], state["id"]))
        running = Running(task)
        if state["status"] == "cancelling":
            running.cancel.set()
        self.running[state["id"]] = running
        task.add_done_callback(lambda _: self.running.pop(state["id"], None))

    async def resume(self) -> int:
        """Start the open batches found on disk (a gateway that restarted); returns how many."""
        states = await asyncio.to_thread(self._all_states)
        opened = [s for s in states if s["status"] in OPEN]
        for state in opened:
            self.start(state)
        return len(opened)

    async def shutdown(self) -> None:
        """Stop sending lines; give those in flight ``SHUTDOWN_GRACE_S`` to be written, then cancel. The batches
        stay open and are resumed by the next start."""
        for running in self.running.values():
            running.shutdown = True
        tasks = [r.task for r in self.running.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _lock(self, tenant: str, batch_id: str):
        """The batch's lock file, held while this process executes it (None: another process does)."""
        path = self._folder(tenant) / f".{batch_id}.lock"
        f = path.open("a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        return f

    async def _execute(self, tenant: str, batch_id: str) -> None:
        lock = self._lock(tenant, batch_id)
        if lock is None:
            return
        running = self.running[batch_id]
        try:
            state = self._load(tenant, batch_id)
            data = await asyncio.to_thread(self.files.read, tenant, state["input_file_id"])
            lines = await asyncio.to_thread(validate_lines, data, state["endpoint"])
            store = ChunkStore(self._folder(tenant) / batch_id / "chunks")
            before = await asyncio.to_thread(lambda: [r["status"] == 200 for r in store.results()])
            api_key = ApiKey(state["key_id"], tenant, state["tier"])
            send = LineSend(self.gateway, self.steps, api_key, batch_id, self.semaphore, running)

            async def on_chunk(stats: RunStats) -> None:
                counts = {
                    "total": len(lines),
                    "completed": sum(before) + stats.completed,
                    "failed": len(before) - sum(before) + stats.failed,
                }
                current = await asyncio.to_thread(self._update, tenant, batch_id, request_counts=counts)
                if current["status"] == "cancelling":  # cancelled by another worker
                    running.cancel.set()

            stats = await run_batch(
                lines,
                send,
                store,
                concurrency=self.cfg.concurrency,
                chunk_size=self.cfg.chunk_size,
                stop=running.stopping,
                on_chunk=on_chunk,
            )
            if running.shutdown:
                return  # resumed by the next start
            cancelled = running.cancel.is_set() and stats.stopped
            await asyncio.to_thread(self._finalize, tenant, batch_id, lines, store, cancelled)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("batch %s failed", batch_id)
            error = {"code": "batch_failed", "message": f"{type(exc).__name__}: {exc}", "param": None, "line": None}
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    self._update,
                    tenant,
                    batch_id,
                    status="failed",
                    failed_at=int(time.time()),
                    errors={"object": "list", "data": [error]},
                )
        finally:
            lock.close()

    def _finalize(self, tenant: str, batch_id: str, lines, store: ChunkStore, cancelled: bool) -> None:
        """The output file (answered lines) and the error file (failed ones), in input order; then the end state."""
        self._update(
            tenant, batch_id, status="cancelling" if cancelled else "finalizing", finalizing_at=int(time.time())
        )
        order = {line.custom_id: i for i, line in enumerate(lines)}
        results = sorted(store.results(), key=lambda r: order[r["custom_id"]])
        out, err = [], []
        for r in results:
            line = {"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": r["custom_id"]}
            if r["status"] == 0:
                line.update(
                    response=None, error={"code": "engine_unreachable", "message": r["body"]["error"]["message"]}
                )
            else:
                line.update(
                    response={"status_code": r["status"], "request_id": r["request_id"], "body": r["body"]}, error=None
                )
            (out if r["status"] == 200 else err).append(json.dumps(line, ensure_ascii=False) + "\n")
        output = (
            self.files.write(tenant, "".join(out).encode(), f"{batch_id}_output.jsonl", "batch_output") if out else None
        )
        errors = (
            self.files.write(tenant, "".join(err).encode(), f"{batch_id}_error.jsonl", "batch_output") if err else None
        )
        now = int(time.time())
        ok = sum(1 for r in results if r["status"] == 200)
        self._update(
            tenant,
            batch_id,
            status="cancelled" if cancelled else "completed",
            **({"cancelled_at": now} if cancelled else {"completed_at": now}),
            output_file_id=output.id if output else None,
            error_file_id=errors.id if errors else None,
            request_counts={"total": len(lines), "completed": ok, "failed": len(results) - ok},
        )


def add_routes(app, batches: Batches) -> None:
    """The Batch API's endpoints on the gateway's app (an ``ApiError`` is answered as OpenAI's error JSON)."""

    async def answer(work):
        try:
            return await work
        except ApiError as err:
            return err.response()

    @app.post("/v1/files")
    async def upload_file(request: Request):
        """Upload a JSONL file of batch request lines (multipart: ``file``, ``purpose="batch"``)."""
        return await answer(batches.upload(request))

    @app.get("/v1/files")
    async def list_files(request: Request, purpose: str | None = None):
        return await answer(batches.list_files(request, purpose))

    @app.get("/v1/files/{file_id}")
    async def retrieve_file(request: Request, file_id: str):
        return await answer(batches.file(request, file_id))

    @app.get("/v1/files/{file_id}/content")
    async def file_content(request: Request, file_id: str):
        return await answer(batches.content(request, file_id))

    @app.post("/v1/batches")
    async def create_batch(request: Request):
        """Run an uploaded file's lines through the gateway in the background (OpenAI Batch API)."""
        return await answer(batches.create(request))

    @app.get("/v1/batches")
    async def list_batches(request: Request, after: str | None = None, limit: int = 20):
        return await answer(batches.list(request, after, limit))

    @app.get("/v1/batches/{batch_id}")
    async def retrieve_batch(request: Request, batch_id: str):
        return await answer(batches.retrieve(request, batch_id))

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(request: Request, batch_id: str):
        return await answer(batches.cancel(request, batch_id))
