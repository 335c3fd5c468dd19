"""One tenant cannot break the gateway for another: whatever it sends is refused alone, in OpenAI's JSON error
shape naming the field, logged, and counted against nobody's engine (real gateway process, real CPU engine)."""

import asyncio
import concurrent.futures
import socket
import time

import httpx
import psutil
import pytest

from crawl2serve.serving.gateway.logstore import read_rows
from crawl2serve.serving.gateway.metrics import GatewayMetrics
from crawl2serve.serving.gateway.settings import BreakerSettings, EngineSettings, RetrySettings
from crawl2serve.serving.gateway.upstream import EnginePool, RequestFailed
from tests.serving.helpers import start_gateway

# (raw JSON body, the field the 400 must name); each is something an engine rejects or crashes on
BAD_BODIES = [
    ('{"model": "crawl2serve", "prompt": ""}', "prompt"),  # the CPU engine answers 500 to this
    ('{"model": "crawl2serve", "prompt": [""]}', "prompt"),
    ('{"model": "crawl2serve", "messages": [{"role": "user", "content": ""}]}', "messages"),  # 500 too
    ('{"model": "crawl2serve", "prompt": "x", "seed": 18446744073709551617}', "seed"),
    ('{"model": "crawl2serve", "prompt": "x", "seed": -1}', "seed"),
    ('{"model": "crawl2serve", "prompt": "x\\udcff"}', "prompt"),  # a lone surrogate
    ('{"model": "crawl2serve", "messages": [{"role": "user", "content": "\\ud800 hi"}]}', "messages.0.content"),
    ('{"model": "crawl2serve", "prompt": "x", "temperature": 7}', "temperature"),
    ('{"model": "crawl2serve", "prompt": "x", "temperature": NaN}', None),
    ('{"model": "crawl2serve", "prompt": "x", "top_p": 0}', "top_p"),
    ('{"model": "crawl2serve", "prompt": "x", "max_tokens": 0}', "max_tokens"),
    ('{"model": "crawl2serve", "prompt": "x", "max_tokens": "5"}', "max_tokens"),
    ('{"model": "crawl2serve", "prompt": "x", "stream": "yes"}', "stream"),
    ('{"model": "crawl2serve", "prompt": "x", "stop": [""]}', "stop"),
    ('{"model": "crawl2serve", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}', "stop"),
    ('{"model": "crawl2serve", "prompt": "x", "stop": 3}', "stop"),
    ('{"model": "crawl2serve", "prompt": "x", "stop": {"a": 1}}', "stop"),
    ('{"model": "crawl2serve", "prompt": "x", "logit_bias": {"1": 100}}', "logit_bias"),
    ('{"model": "crawl2serve", "prompt": "x", "stream_options": {"include_usage": 1}}', "stream_options.include_usage"),
    ('{"model": "crawl2serve", "prompt": 12}', "prompt"),
    ('{"model": "crawl2serve", "prompt": "x", "n": 2}', "n"),
    ('{"model": "crawl2serve"', None),  # not JSON
    ("[1, 2]", None),
    ("[" * 5000 + "]" * 5000, None),  # nested past any parser's depth
]


def _post(url: str, key: str, raw: str, path: str = "/v1/completions") -> httpx.Response:
    if '"messages"' in raw:
        path = "/v1/chat/completions"
    return httpx.post(
        url + path,
        content=raw.encode("utf-8", "surrogatepass"),
        timeout=60,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, cpu_engine, tiny_model):
    gw = start_gateway(
        tmp_path_factory.mktemp("gw"),
        [("primary", cpu_engine.url)],
        tiny_model,
        breaker={"failure_threshold": 3, "reset_timeout_s": 30.0},
    )
    yield gw
    gw.stop()


def test_each_bad_request_gets_a_json_400_naming_its_field_and_a_log_row(gateway):
    for raw, param in BAD_BODIES:
        r = _post(gateway.url, gateway.key, raw)
        assert r.status_code == 400, (raw[:80], r.status_code, r.text[:300])
        assert r.headers["content-type"] == "application/json", raw[:80]
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"], raw[:80]
        if param:
            assert error["param"] == param, (raw[:80], error)
    time.sleep(0.3)
    rows = {r["request_id"]: r for r in read_rows(gateway.settings.log_dir)[0]}
    surrogate = [r for r in rows.values() if r["error"] == "invalid_unicode"]
    assert len(surrogate) == 2 and all(r["status"] == 400 for r in surrogate)
    assert any(r["prompt"] == "x?" for r in surrogate)  # logged, with the unencodable character replaced


def test_a_hundred_bad_requests_from_one_tenant_cost_another_nothing(gateway):
    bob, _ = gateway.keys.add("bob", "pro")
    time.sleep(1.1)  # the gateway re-reads its key file within a second

    def good(i: int) -> int:
        r = httpx.post(
            gateway.url + "/v1/completions",
            timeout=60,
            headers={"Authorization": f"Bearer {bob}"},
            json={"model": "crawl2serve", "prompt": f"The module {i}", "max_tokens": 3},
        )
        return r.status_code

    def bad(i: int) -> int:
        return _post(gateway.url, gateway.key, BAD_BODIES[i % len(BAD_BODIES)][0]).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        bad_codes = pool.map(bad, range(100))
        good_codes = pool.map(good, range(20))
        bad_codes, good_codes = list(bad_codes), list(good_codes)
    assert set(bad_codes) == {400}
    assert good_codes == [200] * 20
    ready = httpx.get(gateway.url + "/ready")
    assert ready.status_code == 200 and ready.json()["engines"] == {"primary": "closed"}


def test_a_request_that_makes_a_healthy_engine_fail_fails_alone(cpu_engine, tiny_model):
    """Below the gateway's validation: the engine itself answers 500 to an empty prompt while its health probe
    is fine; that request fails alone, without retries, and the breaker counts nothing."""
    pool = EnginePool(
        [EngineSettings(name="primary", url=cpu_engine.url)],
        BreakerSettings(failure_threshold=2, reset_timeout_s=60),
        RetrySettings(attempts=3),
        GatewayMetrics(),
    )

    async def run():
        try:
            for _ in range(5):
                with pytest.raises(RequestFailed):
                    await pool.call("/v1/completions", {"primary": tiny_model}, {"prompt": "", "max_tokens": 2})
            assert pool.states() == {"primary": "closed"}
            ok = await pool.call("/v1/completions", {"primary": tiny_model}, {"prompt": "The", "max_tokens": 2})
            assert ok.body["choices"]
        finally:
            await pool.aclose()

    asyncio.run(run())


def test_the_engine_health_probe_opens_the_breaker_without_traffic(tmp_path, tiny_model):
    """An engine that does not answer: /ready turns false from the background probe alone (no requests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    gw = start_gateway(
        tmp_path,
        [("primary", dead)],
        tiny_model,
        breaker={"failure_threshold": 2, "reset_timeout_s": 60, "health_interval_s": 0.2, "health_timeout_s": 0.5},
    )
    try:
        deadline = time.monotonic() + 10
        while httpx.get(gw.url + "/ready").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        ready = httpx.get(gw.url + "/ready")
        assert ready.status_code == 503 and ready.json()["engines"] == {"primary": "open"}
    finally:
        gw.stop()


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_a_huge_chunked_body_is_cut_off_at_the_limit_with_flat_memory(gateway):
    """400 MB sent chunked (no Content-Length): 413 once the limit is passed, the gateway's memory flat."""
    port = int(gateway.url.rsplit(":", 1)[1])
    before = _rss(gateway.pid)
    sent, chunk = 0, b"x" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer " + gateway.key.encode() + b"\r\n\r\n"
        )
        sock.setblocking(False)
        answer = b""
        while sent < 400_000_000:
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
            if b"\r\n\r\n" in answer:
                break
            try:
                sent += sock.send(frame)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:  # the gateway closed the connection
                break
        sock.setblocking(True)
        sock.settimeout(10)
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
    grown = _rss(gateway.pid) - before
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 50_000_000, f"the gateway kept reading: {sent} bytes accepted"
    assert grown < 50_000_000, f"gateway RSS grew by {grown / 1e6:.0f} MB"


def test_unknown_paths_and_methods_answer_in_json(gateway):
    r = httpx.get(gateway.url + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(gateway.url + "/v1/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_an_unexpected_exception_answers_json_and_keeps_its_log_row(tmp_path, tiny_model):
    """A bug in a step (here: a step that raises) still answers in OpenAI's error shape and writes its row."""
    from fastapi.testclient import TestClient

    from crawl2serve.serving.gateway.app import create_app
    from crawl2serve.serving.gateway.auth import KeyStore
    from crawl2serve.serving.gateway.routing import write_routing
    from crawl2serve.serving.gateway.settings import GatewaySettings

    write_routing(
        str(tmp_path / "routing.json"),
        {
            "model": "crawl2serve",
            "stable": "1",
            "canary": None,
            "canary_share": 0.0,
            "versions": {"1": {"primary": tiny_model}},
        },
    )
    key, _ = KeyStore.load(tmp_path / "keys.json").add("acme", "pro")
    settings = GatewaySettings(
        routing_file=str(tmp_path / "routing.json"),
        keys_file=str(tmp_path / "keys.json"),
        log_dir=str(tmp_path / "spool"),
        engines=[EngineSettings(name="primary", url="http://127.0.0.1:9")],
        breaker={"health_interval_s": 0},
    )
    app = create_app(settings)

    class Broken:
        async def __call__(self, call):
            raise KeyError("a bug")

    app.state.gateway.steps.insert(3, Broken())
    with TestClient(app) as client:
        r = client.post(
            "/v1/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "crawl2serve", "prompt": "The"},
        )
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == {
        "message": "internal error (KeyError)",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }
    rows = read_rows(settings.log_dir)[0]
    assert [(row["request_id"], row["status"], row["error"]) for row in rows] == [
        (r.headers["x-request-id"], 500, "internal_error")
    ]
