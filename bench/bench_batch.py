"""The batch path's throughput against the same prompts sent one by one, on the real CPU engine.

Per engine variant (``transformers serve`` as the serving asset starts it, and with ``--continuous-batching``,
what an engine that serves only batches would run), one gateway in front of it, and per round, in alternating
order:

* ``one by one (gateway)``: the prompts as ``/v1/completions`` requests through the gateway, each sent when
  the previous one is answered (what a client loop does);
* ``Batch API (gateway)``: the same prompts uploaded as one file, ``/v1/batches`` created, polled until
  completed, output file fetched (``serving.gateway.batches``, ``batch.concurrency`` lines in flight);
* ``one by one (engine)`` and ``batch runner (engine)``: the same two straight to the engine, the second the
  ``batch_generations`` asset's path (``serving.batch.run_batch`` at ``--concurrency``).

Prints requests/s and output tokens/s (median over rounds) and each batch path over its one-by-one baseline.
Greedy, ``--tokens`` tokens per prompt (``ignore_eos`` off: a random-weight model rarely stops early; the
tokens counted are the ones the engine reports).

    .venv/bin/python bench/bench_batch.py [--model FOLDER] [--prompts 32] [--tokens 32] [--rounds 3] [--concurrency 8]
        [--engine plain | continuous-batching | both]
"""

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import openai

from crawl2serve.serving.batch import BatchLine, ChunkStore, HttpSend, run_batch
from crawl2serve.serving.engines import (
    EngineConfig,
    Launch,
    TransformersCpuEngine,
    start_process,
    stop_process,
    wait_healthy,
)
from tests.serving.helpers import free_port, start_gateway


def tiny_model(tmp: Path) -> str:
    """The embedded default's shape (``TinyLlamaSpec()``, random weights) with a BPE tokenizer on prose."""
    from crawl2serve.assets.training.base_model import TinyLlamaSpec, build_tiny_llama, save_base, train_bpe_tokenizer
    from crawl2serve.serving.bundle import build_merged
    from tests.support import PROSE

    tok = train_bpe_tokenizer([PROSE] * 20, vocab_size=1000)
    save_base(build_tiny_llama(TinyLlamaSpec(), tok), tok, tmp / "base")
    return str(build_merged(str(tmp / "base"), None, str(tmp / "merged")))


def prompts(n: int) -> list[str]:
    words = [
        "the",
        "module",
        "provides",
        "functions",
        "to",
        "read",
        "and",
        "write",
        "files",
        "with",
        "a",
        "path",
        "object",
    ]
    return [" ".join(words[(i + j) % len(words)] for j in range(6 + i % 10)) for i in range(n)]


def one_by_one(url: str, key: str | None, model: str, texts: list[str], tokens: int) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    out = 0
    with httpx.Client(timeout=300) as client:
        start = time.perf_counter()
        for text in texts:
            body = {"model": model, "prompt": text, "max_tokens": tokens, "temperature": 0}
            r = client.post(url + "/v1/completions", json=body, headers=headers)
            r.raise_for_status()
            out += r.json()["usage"]["completion_tokens"]
        return time.perf_counter() - start, out


def batch_api(url: str, key: str, texts: list[str], tokens: int) -> tuple[float, int]:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    lines = [
        {
            "custom_id": f"p{i}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "crawl2serve", "prompt": t, "max_tokens": tokens, "temperature": 0},
        }
        for i, t in enumerate(texts)
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    start = time.perf_counter()
    file = client.files.create(file=("bench.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/completions", completion_window="24h")
    while batch.status not in ("completed", "failed", "cancelled"):
        time.sleep(0.05)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts.failed == 0, batch
    out = client.files.content(batch.output_file_id).text.splitlines()
    seconds = time.perf_counter() - start
    return seconds, sum(json.loads(x)["response"]["body"]["usage"]["completion_tokens"] for x in out)


def runner(url: str, model: str, texts: list[str], tokens: int, concurrency: int, tmp: Path) -> tuple[float, int]:
    lines = [
        BatchLine(f"p{i}", "/v1/completions", {"model": model, "prompt": t, "max_tokens": tokens, "temperature": 0})
        for i, t in enumerate(texts)
    ]

    async def go():
        send = HttpSend(url, concurrency=concurrency)
        try:
            store = ChunkStore(tempfile.mkdtemp(dir=tmp))
            return await run_batch(lines, send, store, concurrency=concurrency, chunk_size=16)
        finally:
            await send.aclose()

    start = time.perf_counter()
    stats = asyncio.run(go())
    assert stats.failed == 0
    return time.perf_counter() - start, stats.completion_tokens


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="a merged model folder (default: the embedded default's shape, random)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--engine", choices=["plain", "continuous-batching", "both"], default="both")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    model = args.model or tiny_model(tmp)
    texts = prompts(args.prompts)
    variants = {"transformers serve": [], "transformers serve --continuous-batching": ["--continuous-batching"]}
    if args.engine != "both":
        variants = dict([list(variants.items())[args.engine != "plain"]])
    results: dict[str, dict[str, list[tuple[float, int]]]] = {}
    for name, extra in variants.items():
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        engine = TransformersCpuEngine(
            EngineConfig(name="bench", backend="cpu", port=port, extra_args=extra, memory_budget_mb=2048)
        )
        pid = start_process(engine.command(Launch(model, {}, {}, "bench")), str(tmp / f"{len(results)}.log"))
        gateway = None
        try:
            wait_healthy(url, pid=pid, log_path=str(tmp / f"{len(results)}.log"), timeout_s=120)
            gateway = start_gateway(
                tmp / f"gw{len(results)}",
                [("primary", url)],
                model,
                tiers={"pro": {"requests_per_minute": 1e6, "tokens_per_minute": 1e9}},
                batch={"concurrency": args.concurrency, "chunk_size": 16},
            )
            one_by_one(url, None, model, texts[:2], 4)  # load the model, warm up
            modes = {
                "one by one (gateway)": partial(
                    one_by_one, gateway.url, gateway.key, "crawl2serve", texts, args.tokens
                ),
                "Batch API (gateway)": partial(batch_api, gateway.url, gateway.key, texts, args.tokens),
                "one by one (engine)": partial(one_by_one, url, None, model, texts, args.tokens),
                "batch runner (engine)": partial(runner, url, model, texts, args.tokens, args.concurrency, tmp),
            }
            by_mode = results[name] = {m: [] for m in modes}
            for r in range(args.rounds):
                order = list(modes) if r % 2 == 0 else list(reversed(modes))
                for mode in order:
                    by_mode[mode].append(modes[mode]())
                print(f"{name}: round {r + 1} done", file=sys.stderr)
        finally:
            if gateway is not None:
                gateway.stop()
            stop_process(pid)
    print(f"model {model}; {args.prompts} prompts x {args.tokens} tokens, greedy; batch concurrency {args.concurrency}")
    for name, by_mode in results.items():
        for mode, runs in by_mode.items():
            rps = [len(texts) / s for s, _ in runs]
            tps = [t / s for s, t in runs]
            print(
                f"{name:42} {mode:24} {statistics.median(rps):7.2f} req/s  {statistics.median(tps):8.1f} tok/s"
                f"  (rounds: {', '.join(f'{x:.1f}' for x in tps)} tok/s)"
            )
        for batch, single in (
            ("Batch API (gateway)", "one by one (gateway)"),
            ("batch runner (engine)", "one by one (engine)"),
        ):
            ratios = [s1 / s0 for (s0, _), (s1, _) in zip(by_mode[batch], by_mode[single], strict=True)]
            print(
                f"{name:42} {batch} / {single}: x{statistics.median(ratios):.2f} (rounds: "
                + ", ".join(f"{r:.2f}" for r in ratios)
                + ")"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
