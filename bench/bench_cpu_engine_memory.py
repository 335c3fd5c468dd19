"""Peak resident memory of the CPU engine under load: ``transformers serve --continuous-batching`` with the cache
transformers sizes from the host, with the cache sized from ``serving_engine.cpu_memory_budget_mb``, and
(``--plain``) without continuous batching, the default.

Each run starts the engine as the serving asset does (``TransformersCpuEngine.command``), sends ``--streams``
concurrent streaming completions for ``--seconds`` (prompts of 60-600 tokens, up to 400 tokens out: requests
near the embedded model's 1024-token context), and samples the RSS of the engine's process tree every 0.1 s.
Variants alternate, ``--repeats`` times each. A run whose RSS passes ``--kill-above-mb`` is killed (this host
is shared) and reported as ">= that".

    .venv/bin/python bench/bench_cpu_engine_memory.py [--model DIR] [--streams 16] [--seconds 60] [--repeats 2]
        [--budgets 2048] [--alternate-models]
"""

import argparse
import glob
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from crawl2serve.serving.engines import (
    EngineConfig,
    Launch,
    TransformersCpuEngine,
    start_process,
    stop_process,
    tree_rss_mb,
    wait_healthy,
)

WORDS = [
    w
    for w in [
        "the",
        "module",
        "provides",
        "functions",
        "for",
        "working",
        "with",
        "files",
        "paths",
        "processes",
        "threads",
        "sockets",
        "and",
        "data",
        "structures",
        "such",
        "as",
        "lists",
        "dictionaries",
        "sets",
        "tuples",
        "queues",
        "heaps",
        "arrays",
        "strings",
        "bytes",
        "which",
        "are",
        "used",
        "by",
        "many",
        "programs",
        "written",
        "in",
        "python",
        "to",
        "read",
        "write",
        "parse",
        "and",
        "format",
    ]
]


def embedded_model(folder: Path) -> str:
    """A model of the embedded default's shape (``TinyLlamaSpec()``, 4096-token vocabulary), as a servable folder."""
    from crawl2serve.assets.training.base_model import TinyLlamaSpec, build_tiny_llama, save_base, train_bpe_tokenizer
    from crawl2serve.serving.bundle import build_merged

    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(20000)]
    tok = train_bpe_tokenizer([" ".join(rng.choice(vocab) for _ in range(200)) for _ in range(500)])
    save_base(build_tiny_llama(TinyLlamaSpec(), tok), tok, folder / "base")
    return str(build_merged(str(folder / "base"), None, str(folder / "merged")))


def load(url: str, models: list[str], streams: int, seconds: float, stop: threading.Event) -> dict:
    done = {"ok": 0, "errors": 0, "tokens": 0}
    end = time.monotonic() + seconds

    def worker(i: int) -> None:
        rng = random.Random(i)
        with httpx.Client(timeout=120) as client:
            n = 0
            while time.monotonic() < end and not stop.is_set():
                prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 200)))
                body = {
                    "model": models[(i + n) % len(models)],
                    "prompt": prompt,
                    "stream": True,
                    "max_tokens": rng.randint(100, 400),
                }
                n += 1
                try:
                    with client.stream("POST", url + "/v1/completions", json=body) as r:
                        events = sum(
                            1 for line in r.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"
                        )
                    done["ok" if r.status_code == 200 else "errors"] += 1
                    done["tokens"] += events
                except httpx.HTTPError:
                    done["errors"] += 1
                    stop.wait(0.2)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done["tok_s"] = round(done["tokens"] / (time.monotonic() - start), 1)
    return done


def run(variant: str, budget: int | None, extra_args: list[str], models: list[str], args, tmp: Path) -> dict:
    from tests.serving.helpers import free_port

    port = free_port()
    engine = TransformersCpuEngine(
        EngineConfig(name="bench", backend="cpu", port=port, memory_budget_mb=budget, extra_args=extra_args)
    )
    launch = Launch(model_path=models[0], adapters={}, models={}, anchor="bench")
    command = engine.command(launch)
    log = str(tmp / f"{variant}-{port}.log")
    pid = start_process(command, log)
    peak, killed, stop = [0.0], [False], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = tree_rss_mb(pid)
            peak[0] = max(peak[0], rss)
            if rss > args.kill_above_mb:
                killed[0] = True
                stop.set()
                os.killpg(pid, signal.SIGKILL)
                return
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wait_healthy(engine.url, pid=pid, log_path=log, timeout_s=120)
        result = load(engine.url, models, args.streams, args.seconds, stop)
    finally:
        stop.set()
        sampler.join()
        stop_process(pid, timeout_s=10)
    plan = engine.plan(models[0])
    return {
        "variant": variant,
        "peak_rss_mb": round(peak[0]),
        "killed_at_cap": killed[0],
        **result,
        "cache_tokens": plan.cache_tokens if plan else None,
        "estimate_mb": plan.estimate_mb if plan else None,
        "command": " ".join(command[2:]),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model",
        help="a merged model folder (default: the newest under ./data, else one of the "
        "embedded model's shape built here)",
    )
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--budgets", type=int, nargs="+", default=[2048])
    parser.add_argument("--no-host-sized", action="store_true", help="skip transformers' own sizing")
    parser.add_argument("--plain", action="store_true", help="also without continuous batching (the default)")
    parser.add_argument("--alternate-models", action="store_true", help="alternate two model folders (a canary)")
    parser.add_argument("--kill-above-mb", type=float, default=8000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cpu-memory-"))
    model = (
        args.model
        or (sorted(glob.glob("data/sglang_deployment/_/models/v*-merged")) or [None])[-1]
        or embedded_model(tmp)
    )
    models = [model]
    if args.alternate_models:
        import shutil

        models.append(shutil.copytree(model, tmp / "second"))
    cb = ["--continuous-batching"]
    variants = (
        ([] if args.no_host_sized else [("host-sized", None, cb)])
        + [(f"budget-{b}", b, cb) for b in args.budgets]
        + ([("plain", None, [])] if args.plain else [])
    )
    results = []
    for rep in range(args.repeats):
        for name, budget, extra in variants:
            r = run(name, budget, extra, [str(m) for m in models], args, tmp)
            results.append(r)
            print(
                f"rep {rep} {name:12} peak RSS {r['peak_rss_mb']:6} MB{' (killed at cap)' if r['killed_at_cap'] else ''}"
                f"  {r['tok_s']:7.1f} tok/s  ok {r['ok']} errors {r['errors']}  cache tokens {r['cache_tokens']}"
                f"  estimate {r['estimate_mb']} MB",
                flush=True,
            )
    print(
        f"\nmodel {model}, {args.streams} streams x {args.seconds:.0f} s, {args.repeats} repeats, "
        f"models {'alternating' if args.alternate_models else 'one'}"
    )
    for name, _, _ in variants:
        rs = [r for r in results if r["variant"] == name]
        print(
            f"{name:12} peak RSS max {max(r['peak_rss_mb'] for r in rs):6} MB"
            f"{' (killed at cap)' if any(r['killed_at_cap'] for r in rs) else ''}"
            f"  tok/s median {statistics.median(r['tok_s'] for r in rs):7.1f}  command: {rs[0]['command']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
