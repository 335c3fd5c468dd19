"""Where a streamed request's time before its first token goes in the gateway, at c=1: the gateway app in this
process in front of ``bench_gateway.py``'s load generator engine (2 ms between tokens), each step of the
request path timed from the call's start (wrapped, not changed), and the client's TTFT direct and through the
gateway. Run it from the root of the tree whose gateway code it should time (a checkout of another branch: its
``bench/`` and ``crawl2serve`` are the ones imported), alternating trees for a before/after comparison.

    python bench/bench_ttft_steps.py --tokenizer <folder with tokenizer.json> [--requests 40]
"""

import argparse
import collections
import statistics
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path.cwd() / "bench"))
sys.path.insert(0, str(Path.cwd()))

import uvicorn
from profile_gateway import LoadGeneratorRig
from streamload import random_requests, run_load

from crawl2serve.serving.engines import stop_process, wait_healthy
from crawl2serve.serving.gateway.app import create_app


class Timed:
    """A step of the request path that records when it ended, in ms from the call's start."""

    def __init__(self, step, marks):
        self.step, self.name, self.marks = step, type(step).__name__, marks

    async def __call__(self, call):
        await self.step(call)
        self.marks[self.name].append(call.elapsed_ms())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    rig = LoadGeneratorRig.start(args.tokenizer, "ttft-steps-")
    tmp, engine, engine_url, key, settings = rig.tmp, rig.engine, rig.engine_url, rig.key, rig.settings
    url = f"http://127.0.0.1:{rig.port}"
    app = create_app(settings)
    gateway, marks = app.state.gateway, collections.defaultdict(list)
    gateway.steps = [Timed(s, marks) for s in gateway.steps]
    stream = gateway._stream

    async def first_token_timed(call):
        first = True
        async for event in stream(call):
            if first and b'"text"' in (event if isinstance(event, bytes) else event.encode()):
                marks["first token event"].append(call.elapsed_ms())
                first = False
            yield event

    gateway._stream = first_token_timed
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=rig.port, http="h11", log_level="warning"))
    runs = {}

    def drive():
        try:
            wait_healthy(engine_url, pid=engine, log_path=str(tmp / "engine.log"), timeout_s=60)
            wait_healthy(url, pid=None, log_path="", timeout_s=60, path="/ready")
            run_load(url, "crawl2serve", key, random_requests(tok, 16, 256, 32, 0.5, 0), 1)  # warm-up
            marks.clear()
            reqs = random_requests(tok, args.requests, 256, 32, 0.5, 5)
            runs["direct"] = run_load(engine_url, "m", None, reqs, 1)
            runs["gateway"] = run_load(url, "crawl2serve", key, reqs, 1)
        finally:
            server.should_exit = True

    threading.Thread(target=drive, daemon=True).start()
    try:
        server.run()
    finally:
        stop_process(engine)
    d, g = runs["direct"]["ttft_p50_ms"], runs["gateway"]["ttft_p50_ms"]
    print(f"client TTFT p50: direct {d:.2f} ms, through the gateway {g:.2f} ms (+{g - d:.2f})")
    for name, values in marks.items():
        print(f"  {name:<20} ends at {statistics.median(values):6.2f} ms p50 from the call's start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
