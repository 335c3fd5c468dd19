"""How the gateway reads an engine's SSE stream (serving.gateway.upstream.EnginePool.iter_events): lines cut at
any byte by TCP reads, CRLF or LF endings, comment and empty lines, and a last event without its newline."""

import asyncio
import json
import socket
import threading
import time

from crawl2serve.serving.gateway.metrics import GatewayMetrics
from crawl2serve.serving.gateway.settings import BreakerSettings, EngineSettings, RetrySettings
from crawl2serve.serving.gateway.upstream import EngineFailure, EnginePool

EVENTS = [{"choices": [{"index": 0, "text": t, "finish_reason": None}]} for t in ("Hello", " wor", "ld", " ü\n")]


def _engine(body: bytes, piece: int) -> tuple[str, threading.Thread]:
    """A one-request HTTP/1.1 engine on loopback that answers ``body`` (no length: the stream ends when the
    connection closes) in ``piece``-byte writes, each flushed on its own."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn, server:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while b"\r\n\r\n" not in conn.recv(65536):
                pass
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            for i in range(0, len(body), piece):
                conn.sendall(body[i : i + piece])
                time.sleep(0.001)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.getsockname()[1]}", thread


def _relay(body: bytes, piece: int) -> list[dict]:
    url, thread = _engine(body, piece)
    pool = EnginePool(
        [EngineSettings(name="e", url=url)], BreakerSettings(), RetrySettings(attempts=1), GatewayMetrics()
    )

    async def run():
        try:
            served = await pool.call("/v1/completions", {"e": "m"}, {"prompt": "x"}, stream=True)
            return [event async for event in pool.iter_events(served)]
        finally:
            await pool.aclose()

    events = asyncio.run(run())
    thread.join(5)
    return events


def test_events_cut_at_every_byte_boundary_arrive_whole_and_in_order():
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in EVENTS) + b"data: [DONE]\n\n"
    for piece in (1, 7, 64, len(body)):
        assert _relay(body, piece) == EVENTS


def test_crlf_comments_and_a_last_event_without_newline():
    lines = [b": keep-alive", b"data: " + json.dumps(EVENTS[0]).encode(), b"", b"event: x"]
    lines += [b"data:" + json.dumps(e).encode() + b"\r\n" for e in EVENTS[1:3]]
    body = b"\r\n".join(lines) + b"\r\n" + b"data: " + json.dumps(EVENTS[3]).encode()  # closed without "\n"
    assert _relay(body, 5) == EVENTS


def test_the_events_of_one_read_come_as_one_batch_and_a_bad_event_keeps_those_before_it():
    whole = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in EVENTS) + b"data: [DONE]\n\n"
    broken = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in EVENTS[:2]) + b"data: {oops\n\n"
    assert _read_batches(whole) == (None, [EVENTS])  # one write, one read: one relayed write
    assert _read_batches(broken) == ("bad_stream", [EVENTS[:2]])


def _read_batches(body: bytes) -> tuple[str | None, list[list[dict]]]:
    """(the EngineFailure kind or None, the batches read) of an engine that writes ``body`` at once."""
    got: list[list[dict]] = []

    async def run():
        url, thread = _engine(body, len(body))
        pool = EnginePool(
            [EngineSettings(name="e", url=url)], BreakerSettings(), RetrySettings(attempts=1), GatewayMetrics()
        )
        try:
            served = await pool.call("/v1/completions", {"e": "m"}, {"prompt": "x"}, stream=True)
            async for batch in pool.iter_batches(served):
                got.append(batch)
        except EngineFailure as exc:
            return exc.kind
        finally:
            await pool.aclose()
            thread.join(5)
        return None

    return asyncio.run(run()), got
