"""An engine dies mid-stream: the stream ends cleanly, the breaker opens, the fallback serves, the breaker
recovers once the engine is back."""

import json
import os
import signal
import time

import httpx
import openai

from crawl2serve.serving.gateway.logstore import read_rows
from tests.serving.helpers import Engine, metric, start_engine, start_gateway


def test_engine_killed_mid_stream_breaker_opens_fallback_serves_breaker_recovers(tmp_path, cpu_engine, tiny_model):
    primary = start_engine(tmp_path, "primary")
    gw = start_gateway(
        tmp_path / "gw",
        [("primary", primary.url), ("fallback", cpu_engine.url)],
        tiny_model,
        breaker={"failure_threshold": 2, "reset_timeout_s": 2.0},
        retry={"attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.05},
    )
    headers = {"Authorization": f"Bearer {gw.key}"}
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    try:
        events, killed = [], False
        with httpx.stream(
            "POST",
            gw.url + "/v1/completions",
            headers=headers,
            timeout=60,
            json={"model": "crawl2serve", "prompt": "The committee", "max_tokens": 900, "stream": True},
        ) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if not killed and len(events) >= 2:
                    os.killpg(primary.pid, signal.SIGKILL)  # a crash, not a shutdown
                    killed = True
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["type"] == "server_error" and error["code"] == "broken_stream"
        assert 2 <= len(events) - 2 < 900

        # the dead primary fails on connect: the fallback answers; after two failures the breaker is open
        served = [client.completions.create(model="crawl2serve", prompt="The", max_tokens=3) for _ in range(3)]
        assert all(s.choices[0].text is not None for s in served)
        assert metric(gw.url, "c2s_gateway_circuit_state", engine="primary") == 2
        assert metric(gw.url, "c2s_gateway_upstream_requests_total", engine="primary", outcome="skipped_open") >= 1
        assert httpx.get(gw.url + "/ready").json()["engines"] == {"primary": "open", "fallback": "closed"}

        # the engine comes back on its port; after reset_timeout a trial call closes the breaker again
        primary = Engine(primary.url, primary.port, 0, primary.log).start()
        time.sleep(2.2)
        after = client.completions.create(model="crawl2serve", prompt="The", max_tokens=3)
        assert metric(gw.url, "c2s_gateway_circuit_state", engine="primary") == 0
        time.sleep(0.3)
        logged = {r["request_id"]: r for r in read_rows(gw.settings.log_dir)[0]}
        assert [logged[s.id]["route"] for s in served] == ["fallback"] * 3
        assert logged[after.id]["route"] == "stable" and logged[after.id]["engine"] == "primary"
        broken = [r for r in logged.values() if r["error"] == "broken_stream"]
        assert len(broken) == 1 and broken[0]["status"] == 502 and broken[0]["output"]
    finally:
        gw.stop()
        primary.kill()
