"""Token budgets hold end to end: parallel streams of emoji, CJK and ASCII prompts through the real gateway and
CPU engine use at most burst + rate·T + one request's worth of tokens, counted by the engine itself.

(Before the gateway counted prompts with the served tokenizer and charged overruns, a 600 tokens/min tier let
such traffic through at len/4 per prompt: several times its budget.)"""

import concurrent.futures
import random
import threading
import time
from datetime import datetime

import httpx
import openai
import pytest

from crawl2serve.serving.gateway.logstore import read_rows
from tests.serving.helpers import metric, silent_server, start_gateway

RATE_PER_MIN, BURST, MAX_TOKENS, DURATION_S, CLIENTS = 600, 600, 16, 15.0, 8
EMOJI = ["😀", "🚀", "👍🏽", "🇫🇷", "🧑‍💻", "❤️", "🎉"]
CJK = "数据中心的模型训练需要大量计算资源東京の天気は晴れです서울은한국의수도입니다"
ASCII = "The committee reviewed the budget and asked for a shorter report on the harbour. "


def prompt(rng: random.Random) -> str:
    kind = rng.choice(["emoji", "emoji", "cjk", "cjk", "ascii"])
    if kind == "emoji":
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(10, 40)))
    if kind == "cjk":
        return "".join(rng.choice(CJK) for _ in range(rng.randint(20, 70)))
    return ASCII * rng.randint(1, 4)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, cpu_engine, tiny_model):
    gw = start_gateway(
        tmp_path_factory.mktemp("gw_accounting"),
        [("primary", cpu_engine.url)],
        tiny_model,
        tiers={"metered": {"requests_per_minute": 60_000, "tokens_per_minute": RATE_PER_MIN, "burst_tokens": BURST}},
    )
    yield gw
    gw.stop()


def drive(gateway, key: str, seed: int, deadline: float, admitted: list, lock: threading.Lock) -> int:
    """One client until ``deadline``: streams (and now and then a whole answer) of completions and chats; a 429
    is retried after 0.2 s. Records (sent at, tokens the engine reported) of every answered request."""
    rng = random.Random(seed)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=60)
    denied = 0
    while time.time() < deadline:
        text, chat, stream = prompt(rng), rng.random() < 0.5, rng.random() < 0.8
        sent = time.time()
        try:
            if chat:
                out = client.chat.completions.create(
                    model="crawl2serve",
                    messages=[{"role": "user", "content": text}],
                    max_tokens=MAX_TOKENS,
                    stream=stream,
                    **({"stream_options": {"include_usage": True}} if stream else {}),
                )
            else:
                out = client.completions.create(
                    model="crawl2serve",
                    prompt=text,
                    max_tokens=MAX_TOKENS,
                    stream=stream,
                    **({"stream_options": {"include_usage": True}} if stream else {}),
                )
            usage = [c.usage for c in out if c.usage][-1] if stream else out.usage
        except openai.RateLimitError:
            denied += 1
            time.sleep(0.2)
            continue
        with lock:
            admitted.append((sent, usage.prompt_tokens + usage.completion_tokens))
    return denied


def test_parallel_emoji_and_cjk_streams_stay_within_the_token_budget(gateway):
    tenant = f"metered-{time.time_ns()}"
    key, _ = gateway.keys.add(tenant, "metered")
    time.sleep(1.1)  # a running gateway picks up new keys within a second
    admitted: list[tuple[float, int]] = []
    lock = threading.Lock()
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        denied = sum(pool.map(lambda i: drive(gateway, key, i, start + DURATION_S, admitted, lock), range(CLIENTS)))
    elapsed = time.time() - start  # >= the span between the first and the last admission
    rate = RATE_PER_MIN / 60
    used = sum(u for _, u in admitted)
    biggest = max(u for _, u in admitted)
    budget = BURST + rate * elapsed
    print(
        f"\n{len(admitted)} answered, {denied} denied (429) in {elapsed:.1f} s: {used} tokens used by the engine; "
        f"budget burst + rate·T = {budget:.0f}, one request at most {biggest} ({used / budget:.2f}× the budget)"
    )
    assert denied > 0 and len(admitted) >= 3
    assert used <= budget + biggest, f"{used} tokens used; the budget is {budget:.0f} + one request ({biggest})"

    # the engine's counts as the inference log has them, and every window of its arrival times
    time.sleep(0.5)
    rows = [r for r in read_rows(gateway.settings.log_dir)[0] if r["tenant"] == tenant and r["status"] == 200]
    assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows) == used
    times = sorted(
        (datetime.fromisoformat(r["ts"]).timestamp(), r["prompt_tokens"] + r["completion_tokens"]) for r in rows
    )
    for window in (1.0, 3.0, 5.0, 10.0):
        for i, (t0, _) in enumerate(times):
            in_window = sum(u for t, u in times[i:] if t <= t0 + window)
            # + 0.5 s: a row's time is its arrival, a few ms before the limiter admits it
            assert in_window <= BURST + rate * (window + 0.5) + biggest, (window, t0, in_window)


def test_a_hung_redis_fails_open_without_stalling_the_gateway(tmp_path, cpu_engine, tiny_model):
    """redis_url names a server that never answers: requests are still served (each waits at most the
    limiter's deadline), the outage is counted, and /health answers at once meanwhile."""
    with silent_server() as url:
        gw = start_gateway(tmp_path, [("primary", cpu_engine.url)], tiny_model, redis_url=url)
        try:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0, timeout=30)

            def one(i: int) -> float:
                start = time.perf_counter()
                out = client.completions.create(
                    model="crawl2serve", prompt="数据 😀 The committee", max_tokens=4, stream=bool(i % 2)
                )
                if i % 2:
                    list(out)
                return time.perf_counter() - start

            one(0)  # the engine loads the model on its first request
            alone = one(0)  # the limiter's deadline (0.25 s) + the engine's few ms
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(one, i) for i in range(8)]
                health = []
                while not all(f.done() for f in futures):
                    start = time.perf_counter()
                    assert httpx.get(gw.url + "/health", timeout=5).status_code == 200
                    health.append(time.perf_counter() - start)
                latencies = [f.result() for f in futures]
            print(
                f"\nhung Redis: one request {alone:.3f} s; 8 in parallel {[round(x, 2) for x in latencies]} s; "
                f"/health at most {max(health):.3f} s meanwhile"
            )
            assert alone < 1.5 and max(latencies) < 10, (alone, latencies)
            assert health and max(health) < 0.5, f"/health took {max(health):.2f} s while Redis hung"
            assert metric(gw.url, "c2s_gateway_errors_total", kind="ratelimit_unavailable") >= 8
        finally:
            gw.stop()
