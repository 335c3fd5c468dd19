"""The CPU engine's memory: its KV cache sized from a budget (serving/engines/transformers_cpu.py), and a real
``transformers serve`` under load staying within it."""

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from crawl2serve.serving.engines import (
    EngineConfig,
    Launch,
    TransformersCpuEngine,
    cache_plan,
    start_process,
    stop_process,
    tree_rss_mb,
    wait_healthy,
)
from crawl2serve.serving.engines.transformers_cpu import HEADROOM, PAGE_SIZE, PROCESS_BASELINE_MB
from tests.serving.helpers import free_port


def model_config(folder, **overrides) -> str:
    """A config.json of the embedded model's shape (TinyLlamaSpec(), 4096 tokens of vocabulary), no weights."""
    config = {
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_size": 128,
        "vocab_size": 4096,
        "max_position_embeddings": 1024,
        "dtype": "float32",
        **overrides,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_the_cache_fills_the_budget_and_no_more(tmp_path):
    model = model_config(tmp_path / "m")
    plan = cache_plan(model, 2048)
    assert plan.estimate_mb <= 2048 * (1 - HEADROOM)
    bigger = cache_plan(model, 2048 + 256)
    # one more MB of budget buys the same number of tokens each time: the costs are linear in cache tokens
    per_token = 256 * (1 - HEADROOM) * 2**20 / ((bigger.num_blocks - plan.num_blocks) * PAGE_SIZE)
    kv, read, mask = 2 * 2 * 2 * 32 * 4, (2 * 4 + 2) * 32 * 4 + 16, 1024 * 4  # layers*k,v*kv_heads*head_dim*a, ...
    assert per_token == pytest.approx(kv + read + mask + (128 * 4 + 4096 * 4) / PAGE_SIZE, rel=0.01)
    assert cache_plan(model, 2048, max_batch_tokens=256).num_blocks > 1.8 * plan.num_blocks, (
        "the mask row (max_batch_tokens values per cache token) is the largest cost: a quarter of it, ~2x the tokens"
    )


def test_bf16_halves_the_cost_and_a_model_too_big_for_the_budget_is_refused(tmp_path):
    fp32 = cache_plan(model_config(tmp_path / "a"), 2048)
    bf16 = cache_plan(model_config(tmp_path / "b", dtype="bfloat16"), 2048)
    assert bf16.num_blocks == pytest.approx(2 * fp32.num_blocks, rel=0.03)  # logits stay float32
    big = model_config(
        tmp_path / "big",
        num_hidden_layers=48,
        num_key_value_heads=32,
        num_attention_heads=32,
        hidden_size=4096,
        max_position_embeddings=32768,
    )
    with open(Path(big) / "model.safetensors", "wb") as f:
        f.truncate(1200 * 2**20)  # sparse: its size, not its bytes
    with pytest.raises(
        ValueError,
        match=r"cpu memory budget 2048 MB is too small for .*big: its weights "
        r"\(1200 MB\), the engine process \(512 MB\) .*raise "
        r"serving_engine.cpu_memory_budget_mb",
    ):
        cache_plan(big, 2048)
    assert PROCESS_BASELINE_MB == 512


def test_the_command_carries_the_plan_unless_told_otherwise(tmp_path):
    model = model_config(tmp_path / "m")
    launch = Launch(model_path=model, adapters={}, models={}, anchor="1")

    def command(args, budget=2048):
        return TransformersCpuEngine(
            EngineConfig(name="e", backend="cpu", extra_args=args, memory_budget_mb=budget)
        ).command(launch)

    plan = cache_plan(model, 2048)
    assert command(["--continuous-batching"])[-4:] == [
        "--cb-num-blocks",
        str(plan.num_blocks),
        "--cb-max-batch-tokens",
        "1024",
    ]
    mine = command(["--continuous-batching", "--cb-max-batch-tokens", "256"])
    assert mine.count("--cb-max-batch-tokens") == 1 and mine[-2:] == [
        "--cb-num-blocks",
        str(cache_plan(model, 2048, max_batch_tokens=256).num_blocks),
    ]
    for args, budget in (
        (["--continuous-batching", "--cb-num-blocks", "64"], 2048),
        ([], 2048),
        (["--continuous-batching"], None),
    ):
        assert command(args, budget).count("--cb-num-blocks") == args.count("--cb-num-blocks"), (args, budget)


def test_a_bounded_engine_under_load_stays_within_its_budget(tmp_path, tiny_model):
    """16 streams of prompts up to ~700 tokens for 15 s; RSS sampled every 0.1 s. transformers' own sizing on
    this VM: 5 GB at the first request (bench/bench_cpu_engine_memory.py)."""
    budget = 1024
    engine = TransformersCpuEngine(
        EngineConfig(
            name="e", backend="cpu", port=free_port(), memory_budget_mb=budget, extra_args=["--continuous-batching"]
        )
    )
    command = engine.command(Launch(model_path=tiny_model, adapters={}, models={}, anchor="1"))
    log = str(tmp_path / "engine.log")
    pid = start_process(command, log)
    peak, stop, served = [0.0], threading.Event(), []

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss_mb(pid))
            time.sleep(0.1)

    def stream(i: int):
        words = ["the", "committee", "said", "that", "a", "module", "of", "the", "city", "was", "reported"]
        with httpx.Client(timeout=60) as client:
            n = 0
            while not stop.is_set():
                n += 1
                prompt = " ".join(words[(i + k) % len(words)] for k in range(30 + 25 * ((i + n) % 8)))
                r = client.post(
                    engine.url + "/v1/completions",
                    json={"model": tiny_model, "prompt": prompt, "max_tokens": 64 + 16 * (n % 8)},
                )
                served.append(r.status_code)

    threads = [threading.Thread(target=sample)] + [threading.Thread(target=stream, args=(i,)) for i in range(16)]
    try:
        wait_healthy(engine.url, pid=pid, log_path=log, timeout_s=120)
        for t in threads:
            t.start()
        time.sleep(15)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60) if t.ident else None
        stop_process(pid, timeout_s=10)
    assert served and set(served) == {200}, served[-5:]
    assert peak[0] < budget, f"peak RSS {peak[0]:.0f} MB with a budget of {budget} MB"
