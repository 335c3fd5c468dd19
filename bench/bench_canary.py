"""What one evaluation of the ``canary_rollout`` sensor costs as the stage's window grows: reading the stage's hour
of the inference-log spool (``assets.monitoring.logs.read_spool``), the window's per-version stats
(``serving.canary.window``) and the decision (``serving.canary.decide``), against reading alone (the baseline).

The spool is one hour folder of ``--rows`` rows (two gateway files, 5% canary, 1% of the canary's rows 5xx), written
as the gateway writes them (``LogRow.json_line``). Rounds alternate the two measurements; medians.

    .venv/bin/python bench/bench_canary.py [--rows 10000 100000 300000] [--rounds 5]

Figures (``--rows 10000 100000 300000 --rounds 5``, 2 cores shared with other jobs, load average 4-5; medians of
5 rounds; two runs):

    rows      read_spool       read + window + decide   ratio
    10,000     43 /   28 ms      43 /   30 ms           0.99 / 1.06
    100,000   537 /  305 ms     495 /  328 ms           0.92 / 1.08
    300,000  1559 / 1544 ms    1661 / 1698 ms           1.07 / 1.10

The window and the decision add at most ~10% to reading the stage's hour (within the noise here): the tick's cost
is the read, ~0.3-0.5 s at 100k rows an hour (~28 requests/s), well inside the sensor's 30 s interval. A busier
gateway would want the stage's window read incrementally (a byte offset per file in the sensor's cursor).
"""

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crawl2serve.assets.monitoring.logs import read_spool
from crawl2serve.serving.canary import Policy, decide, window
from crawl2serve.serving.gateway.hours import hour_of
from crawl2serve.serving.gateway.logrow import LogRow


def write_spool(root: Path, rows: int, start: datetime) -> str:
    rng = random.Random(0)
    folder = root / hour_of(start)
    folder.mkdir(parents=True)
    lines: list[list[bytes]] = [[], []]  # two gateway processes' files
    for i in range(rows):
        canary = rng.random() < 0.05
        failed = canary and rng.random() < 0.01
        row = LogRow(
            request_id=f"req-{i:032x}",
            ts=(start + timedelta(milliseconds=i)).isoformat(timespec="microseconds"),
            tenant="acme",
            endpoint="completions",
            model="crawl2serve",
            model_version="2" if canary else "1",
            route="canary" if canary else "stable",
            status=502 if failed else 200,
            error="engine_request_failed" if failed else None,
            prompt="The module " * 4,
            output="" if failed else "provides functions " * 3,
            latency_ms=rng.lognormvariate(5.5, 0.5),
        )
        lines[i % 2].append(row.json_line())
    for i, part in enumerate(lines):
        (folder / f"host-{i}.jsonl").write_bytes(b"".join(part))
    return str(root)


def evaluate(spool: str, hour: str, since: datetime, full: bool) -> None:
    rows, _ = read_spool(spool, [hour])
    if full:
        stats = window(rows, since, ["2", "1"])
        decide(Policy(), 0.05, stats["2"], stats["1"], 120.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 500_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    print(f"{'rows':>9}  {'read_spool':>12}  {'read + window + decide':>22}  ratio")
    for n in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            spool = write_spool(Path(tmp), n, start)
            times = {False: [], True: []}
            for r in range(args.rounds):
                for full in (False, True) if r % 2 == 0 else (True, False):
                    t = time.perf_counter()
                    evaluate(spool, hour_of(start), start, full)
                    times[full].append(time.perf_counter() - t)
            base, full = statistics.median(times[False]), statistics.median(times[True])
            print(f"{n:>9,}  {base * 1000:>9.0f} ms  {full * 1000:>19.0f} ms  {full / base:.2f}")


if __name__ == "__main__":
    main()
