"""A streaming load generator for OpenAI ``/v1/completions``: ``concurrency`` clients, each sending the next
prompt as soon as its last answer ended, for the gateway-vs-direct comparisons of ``bench_serving.py``.

Every request streams (``stream: true``, ``ignore_eos``, greedy) and asks for its own number of tokens, so an
engine does the same work whichever way it is reached. A run's figures: output tokens/s over the run's wall
time (tokens counted from the events that carry text: one per token on SGLang), TTFT p50 (request sent → first
text event), and the gaps between text events (ITL p50 and p99) over all requests. aiohttp, one process: its
cost per event is a few microseconds, the same for every arm of a comparison.
"""

import asyncio
import random
import statistics
import time
from dataclasses import dataclass

import aiohttp
import orjson


@dataclass
class Request:
    prompt: str
    max_tokens: int


def random_requests(tokenizer, n: int, in_len: int, out_len: int, range_ratio: float, seed: int) -> list[Request]:
    """``n`` prompts of random token ids decoded to text (lengths uniform in [in_len·range_ratio, in_len]) and
    output lengths uniform in [out_len·range_ratio, out_len], like ``sglang.bench_serving --dataset-name
    random-ids``; a fresh ``seed`` per run keeps the engine's prefix cache from serving a later arm."""
    rng = random.Random(seed)
    vocab = len(tokenizer)
    out = []
    for _ in range(n):
        ids = [rng.randrange(100, vocab) for _ in range(rng.randint(int(in_len * range_ratio), in_len))]
        out.append(Request(tokenizer.decode(ids), rng.randint(int(out_len * range_ratio), out_len)))
    return out


async def _load(url: str, model: str, key: str | None, requests: list[Request], concurrency: int) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    queue = list(reversed(requests))
    ttfts, gaps, tokens, failed = [], [], 0, 0

    async def client(session: aiohttp.ClientSession):
        nonlocal tokens, failed
        while queue:
            req = queue.pop()
            body = {"model": model, "prompt": req.prompt, "max_tokens": req.max_tokens, "stream": True}
            body.update(temperature=0, ignore_eos=True)
            start = last = time.perf_counter()
            first = True
            async with session.post(url + "/v1/completions", json=body, headers=headers) as r:
                if r.status != 200:
                    failed += 1
                    await r.read()
                    continue
                pending = b""
                async for chunk in r.content.iter_any():
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        if not line.startswith(b"data: ") or line == b"data: [DONE]":
                            continue
                        event = orjson.loads(line[6:])
                        if any(c.get("text") for c in event.get("choices") or ()):
                            now = time.perf_counter()
                            if first:
                                ttfts.append(now - start)
                                first = False
                            else:
                                gaps.append(now - last)
                            last = now
                            tokens += 1

    timeout = aiohttp.ClientTimeout(total=600, sock_read=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    gaps.sort()
    return {
        "requests": len(requests),
        "failed": failed,
        "output_tokens": tokens,
        "seconds": round(elapsed, 3),
        "output_tok_s": round(tokens / elapsed, 1),
        "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 2) if ttfts else None,
        "itl_p50_ms": round(gaps[len(gaps) // 2] * 1000, 3) if gaps else None,
        "itl_p99_ms": round(gaps[int(len(gaps) * 0.99)] * 1000, 3) if gaps else None,
    }


def run_load(url: str, model: str, key: str | None, requests: list[Request], concurrency: int) -> dict:
    """One run: ``requests`` through ``concurrency`` streaming clients against ``url``; returns its figures."""
    return asyncio.run(_load(url, model, key, requests, concurrency))
