"""What shadow traffic costs the client: p50 latency through a gateway that mirrors every request (share 1.0)
against the same gateway configuration without shadow traffic, in alternating on/off pairs, repeated.

Both gateways are real processes (``python -m crawl2serve.serving gateway``) in front of one engine serving two
versions ("1" answers the client, "2" is the challenger). ``--engine fake`` (default) is bench_gateway.py's load
generator (answers after ``tokens x itl_ms``, non-blocking, so the two versions do not queue behind each other):
the figures isolate the gateway's own cost of mirroring. ``--engine cpu`` is the real CPU engine
(``transformers serve``) on a tiny random Llama: there the challenger's answer takes the engine's (and this
machine's) CPU too, which is what a challenger sharing the champion's engine costs. ``--engine cpu-own`` gives
the challenger a CPU engine of its own, as production gives it its own GPU: the champion's engine on core 0, the
challenger's on core 1 (``taskset``), the gateways unpinned. Each round sends ``--requests``
sequential non-streamed completions to each gateway, in alternating order; the figure is the median over rounds of
(p50 on - p50 off), with the min and max.

    .venv/bin/python bench/bench_shadow.py [--rounds 8] [--requests 40] [--engine fake|cpu|cpu-own]

Measured on this machine (2 cores shared with 4 other helpers' work, so per-round spread is mostly noise):

====================================================  ==========  =========  ==================  =====
run                                                   p50 off     p50 on     added p50 (median,   ratio
                                                                             min .. max of rounds)
====================================================  ==========  =========  ==================  =====
fake engine, shadow rows committed, 8 x 40            33.03 ms    33.72 ms   +1.23 (-2.03..+5.02) 1.038
fake engine, shadow rows appended (now), 10 x 40      31.67 ms    31.51 ms   +0.04 (-2.57..+2.98) 1.001
fake engine, shadow rows appended (now), 10 x 40      31.31 ms    30.38 ms   -2.79 (-7.66..+2.25) 0.913
CPU engine shared by both versions, 8 tokens, 6 x 20  30.70 ms    37.78 ms   +4.70 (-7.46..+27.92) 1.171
====================================================  ==========  =========  ==================  =====

Re-measured 2026-12-01 evening on the quiet machine (nothing else running), 8 rounds x 40 requests, 8 tokens:

====================================================  ==========  =========  ==================  =====
run                                                   p50 off     p50 on     added p50 (median,   ratio
                                                                             min .. max of rounds)
====================================================  ==========  =========  ==================  =====
``--engine cpu-own``: challenger on its own engine    11.21 ms    11.41 ms   +0.80 (-2.58..+0.92) 1.073
``--engine cpu-own``, again                           8.00 ms     8.49 ms    +0.36 (-0.52..+0.75) 1.048
``--engine cpu``: one engine serves both versions     10.70 ms    24.57 ms   +13.59 (+12.81..+15.28) 2.289
====================================================  ==========  =========  ==================  =====

(325 mirrored requests answered ok in each run.) The shared engine answers one request at a time, so the
champion's next request waits for the challenger's mirror.

So the gateway's own cost of mirroring is within the noise, under a millisecond at the median with a real
challenger engine of its own (the goal: at most 2 ms); a challenger that shares the champion's engine (and, here,
its CPU) costs the champion's clients that engine's time: give the challenger its own engine (or GPU).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from bench_gateway import ENGINE, free_port

from crawl2serve.serving.engines import cpu_command, start_process, stop_process, wait_healthy
from crawl2serve.serving.gateway.settings import ShadowSettings, TierSettings
from tests.serving import helpers as serving_helpers


def cpu_engine(tmp: Path, name: str, cores: str | None = None) -> tuple[int, str]:
    """A CPU engine (``transformers serve``) as its own process, on ``cores`` only (taskset) when given."""
    port, log = free_port(), str(tmp / f"engine-{name}.log")
    command = cpu_command(python=sys.executable, host="127.0.0.1", port=port)
    pid = start_process([*(["taskset", "-c", cores] if cores else []), *command], log)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, pid=pid, log_path=log, timeout_s=120)
    return pid, url


def start_engine(tmp: Path, kind: str, itl_ms: float) -> tuple[list[int], list[tuple[str, str]], dict, dict]:
    """The engine(s), ``[(name, url)]`` for the gateway, the versions' model folders, and which engine serves
    which version (``cpu-own``: the champion on core 0, the challenger on an engine of its own on core 1)."""
    if kind == "fake":
        port, log = free_port(), str(tmp / "engine.log")
        (tmp / "engine.py").write_text(ENGINE)
        pid = start_process([sys.executable, str(tmp / "engine.py"), str(port), str(itl_ms)], log)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, pid=pid, log_path=log, timeout_s=120)
        return [pid], [("primary", url)], {"1": "champion", "2": "challenger"}, {}
    else:
        from crawl2serve.assets.training.base_model import (
            TinyLlamaSpec,
            build_tiny_llama,
            save_base,
            train_bpe_tokenizer,
        )
        from crawl2serve.serving.bundle import build_merged

        tok = train_bpe_tokenizer(["The committee reviewed the budget and the library opened late."] * 50, 300)
        save_base(build_tiny_llama(TinyLlamaSpec(hidden_size=64, intermediate_size=128), tok), tok, tmp / "base")
        one = str(build_merged(str(tmp / "base"), None, str(tmp / "v1")))
        two = str(build_merged(str(tmp / "base"), None, str(tmp / "v2")))
        if kind == "cpu":
            pid, url = cpu_engine(tmp, "shared")
            return [pid], [("primary", url)], {"1": one, "2": two}, {}
        champion, champion_url = cpu_engine(tmp, "champion", "0")
        challenger, challenger_url = cpu_engine(tmp, "challenger", "1")
        engines = [("champion", champion_url), ("challenger", challenger_url)]
        return [champion, challenger], engines, {"1": one, "2": two}, {"1": ["champion"], "2": ["challenger"]}


def start_gateway(
    tmp: Path, name: str, engines: list, versions: dict, served_by: dict, shadow: bool
) -> tuple[int, str, str]:
    """The tests' gateway (tests/serving/helpers.py) with limits no bench reaches, mirroring to "2" or not."""
    gw = serving_helpers.start_gateway(
        tmp / name,
        engines,
        versions["1"],
        {"2": versions["2"]},
        served_by=served_by,
        tiers={"pro": TierSettings(requests_per_minute=1e9, tokens_per_minute=1e12)},
        shadow=ShadowSettings(version="2", share=1.0) if shadow else ShadowSettings(),
    )
    return gw.pid, gw.url, gw.key


def p50(client: httpx.Client, url: str, key: str, n: int, tokens: int) -> float:
    times = []
    for i in range(n):
        start = time.perf_counter()
        r = client.post(
            url + "/v1/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "crawl2serve", "prompt": f"The committee {i}", "max_tokens": tokens, "temperature": 0},
        )
        times.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
    return statistics.median(times)


def shadow_outcomes(url: str) -> dict[str, float]:
    """The mirrored requests by outcome (queued, ok, failed, shed, log_full), from the gateway's /metrics."""
    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("c2s_gateway_shadow_requests_total{"):
            out[line.split('outcome="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out


def drained(url: str, timeout_s: float = 120.0) -> None:
    """Wait until every mirrored request has an outcome (the shadow queue is empty)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = shadow_outcomes(url)
        if sum(v for k, v in seen.items() if k != "queued") >= seen.get("queued", 0):
            return
        time.sleep(0.2)
    raise TimeoutError(f"shadow queue not drained in {timeout_s}s: {shadow_outcomes(url)}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["fake", "cpu", "cpu-own"], default="fake")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--itl-ms", type=float, default=1.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    pids, engines, versions, served_by = start_engine(tmp, args.engine, args.itl_ms)
    try:
        off_pid, off_url, off_key = start_gateway(tmp, "off", engines, versions, served_by, shadow=False)
        pids.append(off_pid)
        on_pid, on_url, on_key = start_gateway(tmp, "on", engines, versions, served_by, shadow=True)
        pids.append(on_pid)
        with httpx.Client(timeout=120) as client:
            for url, key in ((off_url, off_key), (on_url, on_key)):  # warm both (and the engine's two models)
                p50(client, url, key, 5, args.tokens)
            drained(on_url)  # the challenger has loaded its model: its first answers are not in the rounds
            rows = []
            for r in range(args.rounds):
                order = [("off", off_url, off_key), ("on", on_url, on_key)]
                if r % 2:
                    order.reverse()
                got = {name: p50(client, url, key, args.requests, args.tokens) for name, url, key in order}
                rows.append((got["off"], got["on"]))
                print(
                    f"round {r}: p50 off {got['off']:.2f} ms, on {got['on']:.2f} ms, added {got['on'] - got['off']:+.2f} ms"
                )
        drained(on_url)
        deltas = [on - off for off, on in rows]
        ratios = [on / off for off, on in rows]
        print(
            f"engine={args.engine}, {args.tokens} tokens"
            + (f" x {args.itl_ms} ms" if args.engine == "fake" else "")
            + f"; {args.rounds} rounds x {args.requests} sequential requests; mirrored: {shadow_outcomes(on_url)}"
        )
        print(
            f"p50 off (median of rounds) {statistics.median(r[0] for r in rows):.2f} ms, "
            f"on {statistics.median(r[1] for r in rows):.2f} ms"
        )
        print(
            f"added p50: median {statistics.median(deltas):+.2f} ms (min {min(deltas):+.2f}, max {max(deltas):+.2f}); "
            f"ratio on/off median {statistics.median(ratios):.3f}"
        )
    finally:
        for pid in reversed(pids):
            stop_process(pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
