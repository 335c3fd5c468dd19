"""Where the gateway's CPU goes: the gateway app in this process under cProfile, in front of ``bench_gateway.py``'s load generator engine (2 ms between tokens), driven by ``streamload``
with random-token prompts from a thread. For each concurrency: wall TTFT p50 and tokens/s, then the functions
with the most own time (``tottime``) and the gateway's own functions by cumulative time, per request and per
token. Profiling slows Python code about 2×: read the shares, not the absolute times. On Python ≥ 3.12 cProfile
follows every thread (on 3.11 only the loop's, where it is switched on): the total then holds the load
generator's and the log writer's time too, so compare the gateway's own entries (``run_asgi``, ``handle``,
``screen_prompt``, ``_stream``, uvicorn's ``send``), not the total.

    python bench/profile_gateway.py --tokenizer <folder with tokenizer.json> [--concurrency 1 64] [--http h11]
"""

import argparse
import cProfile
import io
import pstats
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn
from bench_gateway import ENGINE
from streamload import random_requests, run_load

from crawl2serve.serving.engines import start_process, stop_process, wait_healthy
from crawl2serve.serving.gateway.app import create_app
from crawl2serve.serving.gateway.auth import KeyStore
from crawl2serve.serving.gateway.routing import write_routing
from crawl2serve.serving.gateway.settings import EngineSettings, GatewaySettings, TierSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoadGeneratorRig:
    """``bench_gateway.py``'s load generator engine (2 ms between tokens) started in a process of its own, and
    the settings of a gateway in front of it (one version, routed to it; prompts counted with ``tokenizer``, as
    in production; a tier without limits): what the gateway benches here share."""

    tmp: Path
    engine: object  # its process
    engine_url: str
    port: int  # the gateway's
    key: str
    settings: GatewaySettings

    @classmethod
    def start(cls, tokenizer: str, prefix: str) -> "LoadGeneratorRig":
        tmp = Path(tempfile.mkdtemp(prefix=prefix))
        (tmp / "engine.py").write_text(ENGINE)
        engine_port, port = free_port(), free_port()
        engine = start_process([sys.executable, str(tmp / "engine.py"), str(engine_port), "2"], str(tmp / "engine.log"))
        engine_url = f"http://127.0.0.1:{engine_port}"
        write_routing(
            str(tmp / "routing.json"),
            {
                "model": "crawl2serve",
                "stable": "1",
                "canary": None,
                "canary_share": 0,
                "versions": {"1": {"primary": "m"}},
                "tokenizers": {"1": tokenizer},
            },
        )
        key, _ = KeyStore.load(tmp / "keys.json").add("bench", "bench")
        settings = GatewaySettings(
            port=port,
            routing_file=str(tmp / "routing.json"),
            keys_file=str(tmp / "keys.json"),
            log_dir=str(tmp / "spool"),
            engines=[EngineSettings(name="primary", url=engine_url)],
            tiers={"bench": TierSettings(requests_per_minute=1e9, tokens_per_minute=1e12)},
        )
        return cls(tmp, engine, engine_url, port, key, settings)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--requests", type=int, default=0, help="per concurrency (default: max(40, 3 * c))")
    parser.add_argument("--http", default="h11")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    rig = LoadGeneratorRig.start(args.tokenizer, "profile-gateway-")
    tmp, engine, engine_url, port, key, settings = rig.tmp, rig.engine, rig.engine_url, rig.port, rig.key, rig.settings
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, http=args.http, log_level="warning")
    )
    prof, profiling = cProfile.Profile(), threading.Event()
    url, reports = f"http://127.0.0.1:{port}", []

    def drive():
        try:
            wait_healthy(engine_url, pid=engine, log_path=str(tmp / "engine.log"), timeout_s=60)
            wait_healthy(url, pid=None, log_path="", timeout_s=60, path="/ready")
            run_load(url, "crawl2serve", key, random_requests(tok, 32, 256, 64, 0.5, 0), 8)  # warm-up
            for seed, c in enumerate(args.concurrency, 1):
                n = args.requests or max(40, 3 * c)
                reqs = random_requests(tok, n, 256, 256, 0.5, seed)
                direct = run_load(engine_url, "m", None, reqs, c)
                profiling.set()
                time.sleep(0.05)
                m = run_load(url, "crawl2serve", key, reqs, c)
                profiling.clear()
                time.sleep(0.05)
                reports.append((c, direct, m))
        finally:
            server.should_exit = True

    stats_by_c = {}

    async def toggler():  # cProfile follows one thread: switch it on and off from inside the loop's thread
        import asyncio

        on, c_index = False, 0
        while not server.should_exit:
            if profiling.is_set() and not on:
                prof.enable()
                on = True
            elif not profiling.is_set() and on:
                prof.disable()
                on = False
                stats_by_c[args.concurrency[c_index]] = pstats.Stats(prof)
                prof.clear()
                c_index += 1
            await asyncio.sleep(0.005)

    thread = threading.Thread(target=drive, daemon=True)

    async def serve():
        import asyncio

        task = asyncio.create_task(toggler())
        thread.start()
        await server.serve()
        task.cancel()

    from uvicorn._compat import asyncio_run

    try:  # on the event loop uvicorn.run would use (uvloop where installed)
        asyncio_run(serve(), loop_factory=server.config.get_loop_factory())
    finally:
        stop_process(engine)
    for c, direct, m in reports:
        stats = stats_by_c.get(c)
        print(
            f"\n=== c={c}: {m['requests']} requests, {m['output_tokens']} tokens; gateway {m['output_tok_s']:.0f} tok/s, "
            f"TTFT p50 {m['ttft_p50_ms']} ms; direct {direct['output_tok_s']:.0f} tok/s, TTFT p50 "
            f"{direct['ttft_p50_ms']} ms"
        )
        if stats is None:
            continue
        idle = ("poll", "select", "sleep")  # the loop waiting for I/O is no CPU of the gateway's
        total = sum(t for (_, _, name), (_, _, t, _, _) in stats.stats.items() if not any(w in name for w in idle))
        print(
            f"profiled CPU (all profiled threads, idle waits excluded): {total:.2f} s = {total / m['requests'] * 1e3:.2f} ms per request, "
            f"{total / max(1, m['output_tokens']) * 1e6:.1f} us per token"
        )
        for key_order in ("tottime", "cumulative"):
            buf = io.StringIO()
            stats.stream = buf
            stats.sort_stats(key_order).print_stats(
                *(["serving/gateway"] if key_order == "cumulative" else []), args.top
            )
            print(f"--- by {key_order} ---")
            print("\n".join(line[:170] for line in buf.getvalue().splitlines() if line.strip())[-6000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
