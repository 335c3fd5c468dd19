"""Fixtures for the crawler tests: a fault-injecting loopback HTTP server and a bounded crawl runner.

The server is a raw asyncio server (byte-level control: stalls, partial headers, resets, drips,
oversized and chunked bodies) running in a background thread with its own event loop. It binds
127.0.0.1 on an ephemeral port, serves one request per connection (``Connection: close``) and records
every request it receives (path, time, headers) plus, per handler, how many body bytes it managed to
send and whether the client went away first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from crawl2serve.assets.crawl.crawler import Crawler, CrawlSettings, CrawlStore, final_manifest
from crawl2serve.resources.storage import DataRoot

Handler = Callable[["Request", asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    t: float  # time.monotonic() when the request head was fully received
    n: int  # 0-based index of this request among the requests for the same path


@dataclass
class SendStats:
    """What one body-streaming handler managed to send before the client went away."""

    planned: int = 0
    sent: int = 0
    aborted: bool = False
    finished: bool = False


class LoopbackServer:
    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.log: list[Request] = []
        self.connections = 0
        self.stats: dict[str, list[SendStats]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="loopback-server", daemon=True)
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> LoopbackServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._on_connection, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def _shutdown() -> None:
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- API for tests ------------------------------------------------------------------------
    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def route(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def requests(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path == path]

    def paths(self) -> list[str]:
        return [r.path for r in self.log]

    # -- serving ------------------------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = (lines[0].split(" ") + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        n = sum(1 for r in self.log if r.path == target)
        req = Request(method, target, headers, time.monotonic(), n)
        self.log.append(req)
        handler = self.routes.get(target, not_found())
        try:
            await handler(req, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


# -- response helpers ---------------------------------------------------------------------------
def _head(status: int, headers: list[tuple[str, str]], reason: str | None = None) -> bytes:
    reason = (
        reason
        if reason is not None
        else {
            200: "OK",
            301: "Moved Permanently",
            302: "Found",
            404: "Not Found",
            429: "Too Many Requests",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }.get(status, "X")
    )
    out = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


async def send(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    content_type: str | None = "text/html; charset=utf-8",
) -> None:
    hs = list(headers or [])
    if content_type is not None:
        hs.append(("Content-Type", content_type))
    hs += [("Content-Length", str(len(body))), ("Connection", "close")]
    writer.write(_head(status, hs) + body)
    await writer.drain()


def page(
    body: bytes | str,
    status: int = 200,
    content_type: str | None = "text/html; charset=utf-8",
    headers: list[tuple[str, str]] | None = None,
    delay: float = 0.0,
) -> Handler:
    data = body.encode() if isinstance(body, str) else body

    async def h(req: Request, w: asyncio.StreamWriter) -> None:
        if delay:
            await asyncio.sleep(delay)
        await send(w, status, data, headers, content_type)

    return h


def not_found() -> Handler:
    return page(b"not found", status=404, content_type="text/plain")


def redirect(location: str, status: int = 302) -> Handler:
    return page(b"", status=status, headers=[("Location", location)])


def sequence(*handlers: Handler) -> Handler:
    """The n-th request to the path gets the n-th handler (the last one repeats)."""

    async def h(req: Request, w: asyncio.StreamWriter) -> None:
        await handlers[min(req.n, len(handlers) - 1)](req, w)

    return h


def stall(seconds: float = 30.0) -> Handler:
    """Accept the request and never answer (until the client gives up)."""

    async def h(req: Request, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(seconds)

    return h


def stall_headers(seconds: float = 30.0) -> Handler:
    """Send the status line and one header, then stall in the middle of the header block."""

    async def h(req: Request, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n")
        await w.drain()
        await asyncio.sleep(seconds)

    return h


def drip(interval: float, chunks: int = 1000) -> Handler:
    """Headers at once, then one body byte every ``interval`` seconds (slower than any sane total timeout)."""

    async def h(req: Request, w: asyncio.StreamWriter) -> None:
        w.write(_head(200, [("Content-Type", "text/html"), ("Content-Length", str(chunks)), ("Connection", "close")]))
        await w.drain()
        for _ in range(chunks):
            w.write(b"x")
            await w.drain()
            await asyncio.sleep(interval)

    return h


def _abort(w: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0) instead of a FIN."""
    sock = w.get_extra_info("socket")
    with contextlib.suppress(Exception):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


def reset_mid_headers(rst: bool = True) -> Handler:
    async def h(req: Request, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/ht")
        await w.drain()
        await asyncio.sleep(0.05)
        _abort(w) if rst else w.close()

    return h


def reset_mid_body(rst: bool = False) -> Handler:
    """Promise 1000 body bytes, send 100, then close (FIN, or RST with ``rst``)."""

    async def h(req: Request, w: asyncio.StreamWriter) -> None:
        w.write(_head(200, [("Content-Type", "text/html"), ("Content-Length", "1000"), ("Connection", "close")]))
        w.write(b"<html>" + b"a" * 94)
        await w.drain()
        await asyncio.sleep(0.05)
        _abort(w) if rst else w.close()

    return h


def big_body(server: LoopbackServer, key: str, total: int, *, declare_length: bool, chunk: int = 65536) -> Handler:
    """Stream ``total`` body bytes (Content-Length or chunked); record in ``server.stats[key]`` how far it got."""

    async def h(req: Request, w: asyncio.StreamWriter) -> None:
        st = SendStats(planned=total)
        server.stats.setdefault(key, []).append(st)
        hs = [("Content-Type", "text/html")]
        hs += [("Content-Length", str(total))] if declare_length else [("Transfer-Encoding", "chunked")]
        w.write(_head(200, hs + [("Connection", "close")]))
        data = b"<p>" + b"z" * (chunk - 3)
        try:
            while st.sent < total:
                part = data[: min(chunk, total - st.sent)]
                w.write(part if declare_length else b"%x\r\n%s\r\n" % (len(part), part))
                await asyncio.wait_for(w.drain(), 5)
                st.sent += len(part)
                await asyncio.sleep(0)  # let the loop notice a closed connection
            if not declare_length:
                w.write(b"0\r\n\r\n")
                await w.drain()
            st.finished = True
        except (ConnectionError, OSError, TimeoutError):
            st.aborted = True

    return h


def gzipped(body: bytes, content_type: str = "text/html; charset=utf-8") -> Handler:
    """A gzip-encoded body sent chunked (the crawler must store the decoded bytes)."""

    async def h(req: Request, w: asyncio.StreamWriter) -> None:
        z = gzip.compress(body)
        w.write(
            _head(
                200,
                [
                    ("Content-Type", content_type),
                    ("Content-Encoding", "gzip"),
                    ("Transfer-Encoding", "chunked"),
                    ("Connection", "close"),
                ],
            )
        )
        for i in range(0, len(z), 100):
            part = z[i : i + 100]
            w.write(b"%x\r\n%s\r\n" % (len(part), part))
        w.write(b"0\r\n\r\n")
        await w.drain()

    return h


def raw(
    status_line: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"<html><body>x</body></html>"
) -> Handler:
    """A response written byte for byte as given (any bytes in any header), then Content-Length and close."""

    async def h(req: Request, w: asyncio.StreamWriter) -> None:
        head = status_line + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        w.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await w.drain()

    return h


def trickle(body: bytes, chunk: int = 16384, pause: float = 0.01, content_type: str = "text/plain") -> Handler:
    """The body in ``chunk``-byte writes with a pause between them: the client sees many small reads."""

    async def h(req: Request, w: asyncio.StreamWriter) -> None:
        w.write(
            _head(200, [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close")])
        )
        for i in range(0, len(body), chunk):
            w.write(body[i : i + chunk])
            await w.drain()
            await asyncio.sleep(pause)

    return h


# the helpers travel with the fixture (tests never import conftest): ``server.page(...)`` etc.
for _helper in (
    page,
    not_found,
    redirect,
    sequence,
    stall,
    stall_headers,
    drip,
    reset_mid_headers,
    reset_mid_body,
    gzipped,
    raw,
    trickle,
):
    setattr(LoopbackServer, _helper.__name__, staticmethod(_helper))
LoopbackServer.big_body = lambda self, key, total, **kw: big_body(self, key, total, **kw)


@pytest.fixture
def server():
    s = LoopbackServer().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def server2():
    """A second server on its own port: another origin on the same host."""
    s = LoopbackServer().start()
    try:
        yield s
    finally:
        s.stop()


# -- running a crawl ----------------------------------------------------------------------------
FAST = dict(
    per_host_delay_s=0.0,
    connect_timeout_s=0.5,
    read_timeout_s=0.5,
    total_timeout_s=1.0,
    max_retries=2,
    backoff_base_s=0.01,
    backoff_max_s=0.05,
    private_hosts=("127.0.0.1",),
    concurrency=4,
    per_host_concurrency=4,
    progress_every_s=3600.0,
    robots_retry_s=0.05,
    robots_retry_max_s=0.2,
)


@dataclass
class CrawlResult:
    rows: dict[str, dict]  # url -> final manifest row
    store: CrawlStore
    summary: object
    logs: list[str] = field(default_factory=list)

    def row(self, url: str) -> dict:
        assert url in self.rows, f"{url} not in manifest: {sorted(self.rows)}"
        return self.rows[url]


@pytest.fixture
def crawl(tmp_path):
    """``crawl(seeds, **settings)`` runs one bounded crawl into a fresh directory and returns a CrawlResult."""
    counter = iter(range(1000))

    def run(seeds, *, directory=None, wall_limit_s: float = 45.0, **overrides) -> CrawlResult:
        d = directory or tmp_path / f"crawl{next(counter)}"
        root = DataRoot(url=str(d))
        store = CrawlStore(root, root.root)
        known = {f.name for f in dataclasses.fields(CrawlSettings)}  # FAST also runs an older crawler unchanged
        fast = {k: v for k, v in FAST.items() if k in known}
        settings = CrawlSettings(seeds=tuple([seeds] if isinstance(seeds, str) else seeds), **{**fast, **overrides})
        logs: list[str] = []
        summary = asyncio.run(asyncio.wait_for(Crawler(settings, store, logs.append).run(), wall_limit_s))
        df = final_manifest(store)
        return CrawlResult({r["url"]: r for r in df.iter_rows(named=True)}, store, summary, logs)

    return run


def kill_when(proc, ready, timeout_s: float = 60.0) -> str:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (or ``timeout_s`` passed); returns its stderr. Fails the test
    if the process ended on its own first: the kill must land mid-crawl."""
    import signal
    import time

    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.005)
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert still_running, f"the crawl ended before it could be killed: {err.decode()[-2000:]}"
    return err.decode()
