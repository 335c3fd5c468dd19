"""What answering only after the request's log row is on disk costs: latency and throughput through the gateway
with ``log_commit_before_answer`` (each response waits for its row's group commit: ``InferenceLog.commit``)
against the old fire-and-forget (the row only enqueued; written within ``log_flush_interval_s``).

Two gateways, identical but for that setting, in front of one load generator speaking SGLang's
``/v1/completions`` (``bench_gateway.ENGINE``: a request of ``--tokens`` tokens takes ``--itl-ms`` per token),
spools on this machine's disk. Rounds alternate the order of the two; per kind of request (whole answers,
streams read to ``[DONE]``) and concurrency: requests/s and the p50/p99 of the time to the complete answer,
the median over rounds, and commit/fire-and-forget ratios.

    .venv/bin/python bench/bench_log_commit.py [--rounds 3] [--requests 400] [--concurrency 1 32]
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from bench_gateway import ENGINE, free_port

from crawl2serve.serving.engines import start_process, stop_process, wait_healthy
from crawl2serve.serving.gateway.logstore import read_rows
from crawl2serve.serving.gateway.settings import TierSettings
from tests.serving import helpers as serving_helpers

MODES = ("fire-and-forget", "commit")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def load(url: str, key: str, concurrency: int, requests: int, tokens: int, stream: bool) -> dict:
    """``requests`` requests from ``concurrency`` workers; the time of each to its complete answer."""
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "crawl2serve", "prompt": "The module", "max_tokens": tokens, "stream": stream}
    latencies: list[float] = []
    left = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            if stream:
                async with client.stream("POST", url + "/v1/completions", headers=headers, json=body) as r:
                    last = ""
                    async for line in r.aiter_lines():
                        last = line or last
                assert r.status_code == 200 and last == "data: [DONE]", (r.status_code, last)
            else:
                r = await client.post(url + "/v1/completions", headers=headers, json=body)
                assert r.status_code == 200, r.text
            latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency * 2)) as client:
        left = concurrency
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])  # warm connections
        latencies.clear()
        left = requests
        start = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
        elapsed = time.perf_counter() - start
    return {
        "req_s": requests / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def start_gateway(tmp: Path, name: str, engine_url: str, commit: bool) -> tuple[int, str, str]:
    """The tests' gateway (tests/serving/helpers.py) with limits no bench reaches, committing rows first or not."""
    gw = serving_helpers.start_gateway(
        tmp / name,
        [("primary", engine_url)],
        "m",
        tiers={"pro": TierSettings(requests_per_minute=1e9, tokens_per_minute=1e12)},
        log_commit_before_answer=commit,
    )
    return gw.pid, gw.url, gw.key


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--itl-ms", type=float, default=0.25)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=400, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-log-commit-", dir=os.environ.get("BENCH_DIR")))
    (tmp / "engine.py").write_text(ENGINE)
    engine_port = free_port()
    engine = start_process(
        [sys.executable, str(tmp / "engine.py"), str(engine_port), str(args.itl_ms)], str(tmp / "engine.log")
    )
    engine_url = f"http://127.0.0.1:{engine_port}"
    gateways = {}
    try:
        wait_healthy(engine_url, pid=engine, log_path=str(tmp / "engine.log"), timeout_s=60)
        for mode in MODES:
            gateways[mode] = start_gateway(tmp, mode, engine_url, commit=mode == "commit")
        results: dict[tuple[str, int, str], list[dict]] = {}
        for r in range(args.rounds):
            for stream in (False, True):
                for c in args.concurrency:
                    for mode in MODES if r % 2 == 0 else MODES[::-1]:
                        _, url, key = gateways[mode]
                        results.setdefault(("stream" if stream else "whole", c, mode), []).append(
                            asyncio.run(load(url, key, c, args.requests, args.tokens, stream))
                        )
        print(
            f"{args.tokens} tokens per request, {args.itl_ms} ms per token; {args.requests} requests x "
            f"{args.rounds} rounds (medians); spool on {tmp}; cpu count {os.cpu_count()}"
        )
        print(
            f"{'kind':>6} {'c':>3} | {'fire-and-forget req/s':>21} {'p50':>7} {'p99':>7} | {'commit req/s':>12} "
            f"{'p50':>7} {'p99':>7} | {'req/s ratio':>11} {'p50 +ms':>7} {'p99 +ms':>7}"
        )
        for kind in ("whole", "stream"):
            for c in args.concurrency:
                med = {
                    mode: {
                        k: statistics.median(x[k] for x in results[(kind, c, mode)])
                        for k in ("req_s", "p50_ms", "p99_ms")
                    }
                    for mode in MODES
                }
                ff, cm = med["fire-and-forget"], med["commit"]
                print(
                    f"{kind:>6} {c:>3} | {ff['req_s']:>21.0f} {ff['p50_ms']:>7.2f} {ff['p99_ms']:>7.2f} | "
                    f"{cm['req_s']:>12.0f} {cm['p50_ms']:>7.2f} {cm['p99_ms']:>7.2f} | "
                    f"{cm['req_s'] / ff['req_s']:>11.3f} {cm['p50_ms'] - ff['p50_ms']:>7.2f} "
                    f"{cm['p99_ms'] - ff['p99_ms']:>7.2f}"
                )
        for mode in gateways:
            rows, _ = read_rows(str(tmp / mode / "spool"))
            print(f"{mode}: {len(rows)} rows logged")
    finally:
        for pid, _, _ in gateways.values():
            stop_process(pid)
        stop_process(engine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
