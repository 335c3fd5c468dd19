"""Gateway overhead on this machine: the same streaming load sent straight to an engine and through the gateway.

The engine here is a load generator speaking SGLang's ``/v1/completions`` format (streamed: one token per SSE
event, ``ITL_MS`` apart; not streamed: the whole answer after as long), so the figures isolate the gateway's own
cost per request and per streamed token; ``bench_serving.py`` measures the same against real SGLang on a GPU. Prints tokens/s, TTFT p50 and the
gateway/direct ratios for each concurrency.

    .venv/bin/python bench/bench_gateway.py [--tokens 128] [--itl-ms 2]
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from crawl2serve.serving.engines import start_process, stop_process, wait_healthy
from crawl2serve.serving.gateway.auth import KeyStore
from crawl2serve.serving.gateway.routing import write_routing
from crawl2serve.serving.gateway.settings import EngineSettings, GatewaySettings, TierSettings

ENGINE = """
import asyncio, json, sys, time
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
import uvicorn
ITL = float(sys.argv[2]) / 1000
async def completions(request):
    body = await request.json()
    n = int(body.get("max_tokens", 16))
    if not body.get("stream"):  # the whole answer after n token times
        await asyncio.sleep(ITL * n)
        return JSONResponse({"id": "x", "object": "text_completion", "model": body["model"],
            "choices": [{"index": 0, "text": " tok" * n, "logprobs": None, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": n + 8}})
    async def events():
        for i in range(n):
            yield "data: " + json.dumps({"id": "x", "object": "text_completion", "model": body["model"],
                "choices": [{"index": 0, "text": " tok", "logprobs": None, "finish_reason": None}]}) + "\\n\\n"
            await asyncio.sleep(ITL)
        yield "data: " + json.dumps({"id": "x", "object": "text_completion", "model": body["model"],
            "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": n + 8}}) + "\\n\\n"
        yield "data: [DONE]\\n\\n"
    return StreamingResponse(events(), media_type="text/event-stream")
async def health(request):
    return JSONResponse({"ok": True})
app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/health", health)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, key: str | None, model: str, concurrency: int, requests: int, tokens: int) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    ttfts, tokens_seen = [], 0
    queue = list(range(requests))

    async def worker(client):
        nonlocal tokens_seen
        while queue:
            queue.pop()
            start = time.perf_counter()
            first = None
            async with client.stream(
                "POST",
                url + "/v1/completions",
                headers=headers,
                timeout=120,
                json={"model": model, "prompt": "The module", "max_tokens": tokens, "stream": True},
            ) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        event = json.loads(line[6:])
                        for choice in event.get("choices") or []:
                            if choice.get("text"):
                                if first is None:
                                    first = time.perf_counter() - start
                                tokens_seen += 1
            ttfts.append(first)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency * 2)) as client:
        start = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
        elapsed = time.perf_counter() - start
    return {"tok_s": tokens_seen / elapsed, "ttft_p50_ms": statistics.median(ttfts) * 1000}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--itl-ms", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 64])
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    (tmp / "engine.py").write_text(ENGINE)
    engine_port, gw_port = free_port(), free_port()
    engine = start_process(
        [sys.executable, str(tmp / "engine.py"), str(engine_port), str(args.itl_ms)], str(tmp / "engine.log")
    )
    engine_url = f"http://127.0.0.1:{engine_port}"
    write_routing(
        str(tmp / "routing.json"),
        {"model": "crawl2serve", "stable": "1", "canary": None, "canary_share": 0, "versions": {"1": {"primary": "m"}}},
    )
    key, _ = KeyStore.load(tmp / "keys.json").add("bench", "bench")
    GatewaySettings(
        port=gw_port,
        routing_file=str(tmp / "routing.json"),
        keys_file=str(tmp / "keys.json"),
        log_dir=str(tmp / "spool"),
        engines=[EngineSettings(name="primary", url=engine_url)],
        tiers={"bench": TierSettings(requests_per_minute=1e9, tokens_per_minute=1e12)},
        workers=args.workers,
    ).dump(str(tmp / "gateway.yaml"))
    profile = ["-m", "cProfile", "-o", os.environ["PROFILE_GATEWAY"]] if os.environ.get("PROFILE_GATEWAY") else []
    gateway = start_process(
        [sys.executable, *profile, "-m", "crawl2serve.serving", "gateway", "--config", str(tmp / "gateway.yaml")],
        str(tmp / "gateway.log"),
    )
    gw_url = f"http://127.0.0.1:{gw_port}"
    try:
        wait_healthy(engine_url, pid=engine, log_path=str(tmp / "engine.log"), timeout_s=60)
        wait_healthy(gw_url, pid=gateway, log_path=str(tmp / "gateway.log"), timeout_s=60)
        print(
            f"{args.tokens} tokens per request, {args.itl_ms} ms between tokens; {args.workers} gateway "
            f"worker(s); cpu count {os.cpu_count()}"
        )
        print(
            f"{'concurrency':>11} {'direct tok/s':>13} {'gateway tok/s':>14} {'ratio':>6} "
            f"{'TTFT direct':>12} {'TTFT gw':>8} {'added ms':>9}"
        )
        for c in args.concurrency:
            n = max(8, c * 4)
            asyncio.run(load(gw_url, key, "crawl2serve", c, c, 4))  # warm connections
            direct = asyncio.run(load(engine_url, None, "m", c, n, args.tokens))
            through = asyncio.run(load(gw_url, key, "crawl2serve", c, n, args.tokens))
            print(
                f"{c:>11} {direct['tok_s']:>13.0f} {through['tok_s']:>14.0f} "
                f"{through['tok_s'] / direct['tok_s']:>6.3f} {direct['ttft_p50_ms']:>12.2f} "
                f"{through['ttft_p50_ms']:>8.2f} {through['ttft_p50_ms'] - direct['ttft_p50_ms']:>9.2f}"
            )
    finally:
        stop_process(gateway)
        stop_process(engine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
