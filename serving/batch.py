"""Batch inference: many requests through an OpenAI-compatible endpoint at bounded concurrency, written in atomic
chunks so that a killed run resumes where it stopped (no Dagster, no FastAPI).

A batch is a list of :class:`BatchLine` (OpenAI's Batch API input format, one JSON object per line:
``{"custom_id", "method": "POST", "url": "/v1/completions" | "/v1/chat/completions", "body": {...}}``, read by
:func:`parse_lines`). :func:`run_batch` sends them with at most ``concurrency`` in flight through a
:class:`Send` (:class:`HttpSend`: httpx to an engine or a gateway; the gateway's own batches send through its
request path, ``serving.gateway.batches``), and hands every ``chunk_size`` finished lines to a
:class:`ChunkStore`: one file per chunk, written to a temporary name, fsync'ed and renamed, so a chunk is on
disk whole or not at all. A run killed at any point loses only the lines of the chunk not yet written; run again
over the same store, it skips every ``custom_id`` already in a chunk, so that no line is answered twice and
none is missing.

``python -m crawl2serve.serving batch --input lines.jsonl --out DIR --base-url URL`` runs a file of lines.
"""

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import httpx

from .atomic import write_durable

BATCH_URLS = ("/v1/completions", "/v1/chat/completions")
"""The endpoints a batch line may call."""
CHUNK_PREFIX = "chunk-"


class BadLine(ValueError):
    """A line of a batch input file that is not a valid request line: its 1-based number and the field."""

    def __init__(self, line: int, field: str | None, message: str):
        super().__init__(f"line {line}: {message}")
        self.line, self.field, self.message = line, field, message


@dataclasses.dataclass(frozen=True)
class BatchLine:
    """One request of a batch: its caller's id (unique in the batch), the endpoint and the request body."""

    custom_id: str
    url: str
    body: dict


def parse_lines(data: bytes, url: str | None = None) -> list[BatchLine]:
    """The request lines of a batch input file (UTF-8 JSONL, blank lines skipped); :class:`BadLine` on the first
    line that is not a JSON object with a unique non-empty ``custom_id``, ``method`` ``POST``, a ``url`` of
    :data:`BATCH_URLS` (``url`` given: that one) and a JSON object ``body``."""
    lines, seen = [], {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadLine(number, None, f"not valid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise BadLine(number, None, f"a line is a JSON object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - {"custom_id", "method", "url", "body"})
        if unknown:
            raise BadLine(number, unknown[0], f"unknown field {unknown[0]!r}")
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise BadLine(number, "custom_id", "custom_id must be a non-empty string")
        if custom_id in seen:
            raise BadLine(number, "custom_id", f"custom_id {custom_id!r} is also on line {seen[custom_id]}")
        if obj.get("method") != "POST":
            raise BadLine(number, "method", f"method must be 'POST', got {obj.get('method')!r}")
        allowed = (url,) if url else BATCH_URLS
        if obj.get("url") not in allowed:
            raise BadLine(number, "url", f"url must be {' or '.join(map(repr, allowed))}, got {obj.get('url')!r}")
        if not isinstance(obj.get("body"), dict):
            raise BadLine(number, "body", "body must be a JSON object (the request body)")
        seen[custom_id] = number
        lines.append(BatchLine(custom_id, obj["url"], obj["body"]))
    if not lines:
        raise BadLine(1, None, "the file has no request lines")
    return lines


@dataclasses.dataclass
class LineResult:
    """What one line got: the HTTP status (0: no answer, the endpoint could not be reached), the JSON body
    (the completion, or an OpenAI-shaped error) and the answering gateway's request id ("" from an engine)."""

    custom_id: str
    status: int
    body: dict
    latency_ms: float
    request_id: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    def usage(self) -> tuple[int, int]:
        usage = (self.body.get("usage") or {}) if self.ok else {}
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


Answer = tuple[int, dict, str]
"""``(HTTP status, JSON body, request id)`` of one line."""


def transient(status: int) -> bool:
    """A failure worth sending again in a later run: no answer (0), the endpoint's 5xx, or its 429."""
    return status == 0 or status == 429 or status >= 500


class Send(Protocol):
    """Sends one line and returns its :data:`Answer`; a line's failure is an answer, never raised. ``None``: not
    answered, left for a later run (the batch is stopping while the line waited for its tenant's rate limit)."""

    async def __call__(self, line: BatchLine) -> Answer | None: ...


class HttpSend:
    """A line as an HTTP POST to ``base_url + line.url`` (an engine, or a gateway with ``api_key``). A connection
    that fails is retried ``attempts`` times (an engine being restarted by its supervisor), then answered 0."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 300.0,
        attempts: int = 3,
        retry_delay_s: float = 1.0,
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.attempts, self.retry_delay_s = attempts, retry_delay_s

    async def __call__(self, line: BatchLine) -> Answer:
        for attempt in range(self.attempts):
            try:
                response = await self.client.post(line.url, json=line.body)
            except httpx.TransportError as exc:
                if attempt + 1 == self.attempts:
                    error = {"message": f"{type(exc).__name__}: {exc}", "type": "connection_error", "code": None}
                    return 0, {"error": error}, ""
                await asyncio.sleep(self.retry_delay_s * 2**attempt)
                continue
            try:
                body = response.json()
            except ValueError:
                body = {"error": {"message": response.text[:1000], "type": "server_error", "code": None}}
            body = body if isinstance(body, dict) else {"data": body}
            return response.status_code, body, response.headers.get("x-request-id", "")
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.client.aclose()


class ChunkStore:
    """A folder of result chunks, ``chunk-000000.jsonl``, … (one :class:`LineResult` per line), each written whole
    or not at all: a temporary file in the folder, fsync'ed, renamed, and the folder fsync'ed."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(f".{CHUNK_PREFIX}*"):  # a chunk being written when the run was killed
            stale.unlink(missing_ok=True)
        self._next = len(self.chunks())

    def chunks(self) -> list[Path]:
        return sorted(self.folder.glob(f"{CHUNK_PREFIX}*.jsonl"))

    def results(self) -> Iterator[dict]:
        """Every line result written so far, chunk by chunk."""
        for chunk in self.chunks():
            with chunk.open("rb") as f:
                for raw in f:
                    yield json.loads(raw)

    def latest(self) -> dict[str, dict]:
        """Each line's last result (a line retried after a transient failure has two)."""
        return {r["custom_id"]: r for r in self.results()}

    def done(self, retry_transient: bool = False) -> set[str]:
        """The lines answered already; ``retry_transient``: not those whose last answer was a transient failure."""
        return {i for i, r in self.latest().items() if not (retry_transient and transient(r["status"]))}

    def write(self, results: list[LineResult]) -> Path:
        target = self.folder / f"{CHUNK_PREFIX}{self._next:06d}.jsonl"
        write_durable(target, b"".join(json.dumps(r.to_json(), ensure_ascii=False).encode() + b"\n" for r in results))
        self._next += 1
        return target


@dataclasses.dataclass
class RunStats:
    """A run's counts (this run's lines; ``resumed``: lines already in the store when it started) and timing."""

    total: int = 0
    resumed: int = 0
    completed: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    chunks_written: int = 0
    stopped: bool = False

    @property
    def sent(self) -> int:
        return self.completed + self.failed

    def rates(self) -> dict[str, float]:
        """This run's lines and output tokens per second of its wall time (0 when it sent nothing)."""
        if not self.seconds:
            return {"requests_per_s": 0.0, "output_tokens_per_s": 0.0}
        return {
            "requests_per_s": round(self.sent / self.seconds, 3),
            "output_tokens_per_s": round(self.completion_tokens / self.seconds, 3),
        }


async def run_batch(
    lines: Iterable[BatchLine],
    send: Send,
    store: ChunkStore,
    *,
    concurrency: int = 16,
    chunk_size: int = 64,
    stop: Callable[[], bool] | None = None,
    on_chunk: Callable[[RunStats], Awaitable[None] | None] | None = None,
    retry_transient: bool = False,
) -> RunStats:
    """Send every line not in ``store`` yet, ``concurrency`` at a time, writing each ``chunk_size`` results as one
    chunk (and what is left at the end). ``stop()`` true: no new line is sent; those in flight finish and are
    written (a cancelled batch). ``on_chunk(stats)`` runs after each chunk is on disk. ``retry_transient``: a
    line whose stored answer was a :func:`transient` failure is sent again (read results with
    :meth:`ChunkStore.latest`)."""
    if concurrency < 1 or chunk_size < 1:
        raise ValueError(f"concurrency ({concurrency}) and chunk_size ({chunk_size}) must be at least 1")
    done = await asyncio.to_thread(store.done, retry_transient)
    lines = list(lines)
    todo = iter([line for line in lines if line.custom_id not in done])
    stats = RunStats(total=len(lines), resumed=sum(1 for line in lines if line.custom_id in done))
    buffer: list[LineResult] = []
    lock = asyncio.Lock()
    start = time.perf_counter()

    async def flush() -> None:
        async with lock:
            if not buffer:
                return
            rows = buffer[:]
            del buffer[:]
            await asyncio.to_thread(store.write, rows)
            stats.chunks_written += 1
            stats.seconds = time.perf_counter() - start
            if on_chunk is not None:
                maybe = on_chunk(stats)
                if maybe is not None:
                    await maybe

    async def worker() -> None:
        for line in todo:  # one shared iterator: each line goes to exactly one worker
            if stop is not None and stop():
                stats.stopped = True
                return
            t0 = time.perf_counter()
            answer = await send(line)
            if answer is None:
                stats.stopped = True
                return
            status, body, request_id = answer
            result = LineResult(line.custom_id, status, body, round((time.perf_counter() - t0) * 1000, 3), request_id)
            if result.ok:
                stats.completed += 1
            else:
                stats.failed += 1
            p, c = result.usage()
            stats.prompt_tokens += p
            stats.completion_tokens += c
            buffer.append(result)
            if len(buffer) >= chunk_size:
                await flush()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await flush()
    stats.seconds = time.perf_counter() - start
    return stats


def read_input(path: str | os.PathLike) -> list[BatchLine]:
    return parse_lines(Path(path).read_bytes())


async def run_file(
    input_path: str, out: str, base_url: str, *, api_key: str | None, concurrency: int, chunk_size: int
) -> RunStats:
    """``python -m crawl2serve.serving batch``: a batch input file through ``base_url`` into the chunks at ``out``
    (a rerun resumes, and sends again the lines whose answer was a transient failure)."""
    send = HttpSend(base_url, api_key=api_key, concurrency=concurrency)
    try:
        return await run_batch(
            read_input(input_path),
            send,
            ChunkStore(out),
            concurrency=concurrency,
            chunk_size=chunk_size,
            retry_transient=True,
        )
    finally:
        with contextlib.suppress(Exception):
            await send.aclose()
