"""Which CPU engine, by measurement: ``transformers serve`` as the serving asset starts it, against the same
server with continuous batching (``--continuous-batching``, its cache sized from the default 2048 MB budget),
on the embedded model the lineage trained.

Streams ``--tokens`` tokens per request at each concurrency, straight to the engine, and prints output
tokens/s and TTFT p50 for each variant, with the ratio to the default.

    .venv/bin/python bench/bench_cpu_engine.py [--model data/sglang_deployment/_/models/v1-merged]
"""

import argparse
import asyncio
import glob
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import free_port, load

from crawl2serve.serving.engines import (
    EngineConfig,
    Launch,
    TransformersCpuEngine,
    start_process,
    stop_process,
    wait_healthy,
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model",
        default=None,
        help="a merged model folder (default: the newest one the serving asset built under ./data)",
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    model = args.model or (sorted(glob.glob("data/sglang_deployment/_/models/v*-merged")) or [None])[-1]
    if not model:
        print("no merged model: run ./dev.sh main first, or pass --model", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-cpu-engine-"))
    variants = {"transformers serve": [], "transformers serve --continuous-batching": ["--continuous-batching"]}
    results = {}
    for name, extra in variants.items():
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = str(tmp / f"{len(results)}.log")
        engine = TransformersCpuEngine(
            EngineConfig(name="bench", backend="cpu", port=port, extra_args=extra, memory_budget_mb=2048)
        )  # the serving resource's default
        pid = start_process(engine.command(Launch(model, {}, {}, "bench")), log)
        try:
            wait_healthy(url, pid=pid, log_path=log, timeout_s=120)
            asyncio.run(load(url, None, model, 1, 2, 4))  # load the model, warm up
            results[name] = {
                c: asyncio.run(load(url, None, model, c, max(8, 2 * c), args.tokens)) for c in args.concurrency
            }
        except Exception as exc:
            print(f"{name}: failed: {exc}")
        finally:
            stop_process(pid)
    print(f"model {model}, {args.tokens} tokens per request")
    base = results.get("transformers serve", {})
    for name, by_c in results.items():
        for c, r in by_c.items():
            ratio = r["tok_s"] / base[c]["tok_s"] if c in base else float("nan")
            print(f"{name:45} c={c:<3} {r['tok_s']:8.1f} tok/s  TTFT p50 {r['ttft_p50_ms']:7.1f} ms  x{ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
