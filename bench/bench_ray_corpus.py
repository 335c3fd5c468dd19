"""The corpus stages on Ray: throughput in process vs Ray (1 and 2 workers), and memory per worker vs crawl size.

    .venv/bin/python bench/bench_ray_corpus.py                        # crawls the pydoc site first (~60 s)
    .venv/bin/python bench/bench_ray_corpus.py --warc-dir DIR --rounds 3 --scale 2 --memory 1,4,16

Input: the embedded pydoc crawl's WARC files (``--warc-dir``, else crawled into ``--cache``), re-ingested under new
URLs: copy k of every file has its pages at ``http://copy-k.pydoc.example/...`` (real pages, distinct URLs), so
``--scale 2`` is two crawls' worth. Each run materializes the real assets (``raw_crawl`` in ingest mode,
``extracted_pages``, ``clean_documents``; profile ``documentation``) with ``dg.materialize`` into a fresh data root,
one WARC file per shard:

- throughput: in process (1 worker) vs Ray with 1 and 2 workers, alternating (in-process, Ray 1, Ray 2, repeated
  ``--rounds`` times) on one local Ray started once (2 CPUs, workers warmed up first); docs/s end to end (wall of
  the three materializations, the driver's serial part included: manifest, commit of the shards, checks) and of the
  extract and clean shard maps (their ``docs_per_s`` metadata). Ratios are of medians.
- yardstick: each round also times 20 pure-CPU shards (no data, no I/O) on Ray with 1 and 2 workers: what a second
  worker can gain on this machine at that moment (on a host shared with other jobs, well under 2x).
- memory: at 1x, 4x, 16x the embedded crawl, each in a fresh process with a fresh local Ray: the workers' peak RSS
  (``worker_peak_rss_mb``: each worker's ``ru_maxrss`` over every shard it ran) and the driver's.

Measured on this machine, 2026-12-01 20:50 UTC (load average 0.9-2.1, yardstick 1.74x; medians of 5 alternating
rounds on 6,514 pages, 66 files; "Ray, 2 workers" is the default executor: tasks queued ahead of the CPUs, small
shards batched; "task per shard" is max_batch=1, the executor before batching):

                        end to end docs/s  extract docs/s  clean docs/s  extract docs/CPU-s  clean docs/CPU-s  cores got
    in process, 1 worker       466               887           1341              892               1360        1.00, 0.99
    Ray, 1 worker              433               840           1328              856               1401        0.98, 0.95
    Ray, 2 workers             823              1664           2738              907               1616        1.83, 1.72
    Ray, 2, task per shard     759              1662           2483              918               1540        1.81, 1.61
    Ray 2 workers / in process: 1.76x end to end (rounds 1.64-2.00, median 1.71x); task per shard 1.63x.
    Other runs of the same command: 1.65x (quieter: yardstick 1.99x; task per shard 1.51x), 1.87x (3 rounds,
    yardstick 1.75-2.03) and 1.41x (yardstick 1.56-2.10, the workers' CPU seconds 14% dearer than in process):
    the 1.7x goal is not met reliably. Read the ratio beside the yardstick.

    memory, 2 Ray workers:  1x 2,623 pages: worker peak 310 MB, driver 536 MB;  4x 10,492: 324, 536;
                            16x 41,968 (432 files): 331, 554 (another run: 319/329/334 and 530/530/582): flat.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

import dagster as dg  # noqa: E402
from warcio.statusandheaders import StatusAndHeaders  # noqa: E402
from warcio.warcwriter import WARCWriter  # noqa: E402

from crawl2serve.assets.corpus.cleaned import clean_documents  # noqa: E402
from crawl2serve.assets.corpus.extracted import extracted_pages  # noqa: E402
from crawl2serve.assets.crawl.assets import raw_crawl  # noqa: E402
from crawl2serve.assets.crawl.warc import iter_records  # noqa: E402
from crawl2serve.resources.corpus_executor import (  # noqa: E402
    CorpusExecutor,
    RayExecutor,
    Shard,
    ensure_ray,
    run_shards,
)
from crawl2serve.resources.crawl_target import CrawlTarget  # noqa: E402
from crawl2serve.resources.io_manager import ParquetIOManager  # noqa: E402
from crawl2serve.resources.storage import DataRoot  # noqa: E402

PARTITION = "2026-11-20"
STAGES = [raw_crawl, extracted_pages, clean_documents]


def pydoc_warcs(cache: Path, warc_dir: str | None) -> list[Path]:
    if warc_dir:
        return sorted(Path(warc_dir).glob("*.warc.gz"))
    segments = cache / "pydoc" / "segments"
    if not list(segments.glob("*.warc.gz")):
        sys.path.insert(0, str(REPO / "bench"))
        from bench_corpus import crawl_pydoc

        crawl_pydoc(str(cache / "pydoc"))
    return sorted(segments.glob("*.warc.gz"))


def copies(sources: list[Path], cache: Path, n: int) -> list[list[str]]:
    """``n`` copies of the crawl, each a list of WARC files whose pages live under a host of their own."""
    out = []
    for k in range(n):
        folder = cache / "copies" / str(k)
        if not (folder / "done").exists():
            folder.mkdir(parents=True, exist_ok=True)
            for src in sources:
                buf = io.BytesIO()
                writer = WARCWriter(buf, gzip=True)
                with open(src, "rb") as f:
                    for rec in iter_records(f, name=str(src)):
                        if rec.kind != "response":
                            continue
                        path = rec.url.split("://", 1)[1].split("/", 1)[1]
                        headers = StatusAndHeaders(
                            f"{rec.status} OK", [("Content-Type", rec.content_type or "text/html")], protocol="HTTP/1.1"
                        )
                        record = writer.create_warc_record(
                            f"http://copy-{k}.pydoc.example/{path}",
                            "response",
                            payload=io.BytesIO(rec.body),
                            http_headers=headers,
                            warc_headers_dict={"WARC-Date": rec.date or "2026-11-20T00:00:00Z"},
                        )
                        writer.write_record(record)
                (folder / src.name).write_bytes(buf.getvalue())
            (folder / "done").write_text("")
        out.append(sorted(str(p) for p in folder.glob("*.warc.gz")))
    return out


def materialize(files: list[str], executor: CorpusExecutor) -> dict:
    """The three stages on a fresh data root; pages, wall seconds and the stages' shard figures."""
    with tempfile.TemporaryDirectory(prefix="bench-ray-corpus-") as tmp:
        data_root = DataRoot(url=tmp)
        list_file = Path(tmp) / "warc.paths.gz"
        list_file.write_bytes(gzip.compress("\n".join(files).encode()))
        resources = {
            "data_root": data_root,
            "io_manager": ParquetIOManager(data_root=data_root),
            "crawl_target": CrawlTarget(data_root=data_root, mode="pydoc"),
            "corpus_executor": executor,
        }
        started, cpu = time.perf_counter(), time.process_time()
        result = dg.materialize(
            STAGES,
            resources=resources,
            partition_key=PARTITION,
            run_config={
                "ops": {
                    "raw_crawl": {"config": {"ingest_paths": [str(list_file)]}},
                    "clean_documents": {"config": {"profile": "documentation"}},
                },
                "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            },
        )
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert result.success
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    return {
        "pages": meta["extracted_pages"]["documents"].value,
        "seconds": seconds,
        "driver_cpu_s": cpu,  # this process's CPU: all of the work in process, the serial part under Ray
        "extract_docs_per_s": meta["extracted_pages"]["docs_per_s"].value,
        "clean_docs_per_s": meta["clean_documents"]["docs_per_s"].value,
        "extract_docs_per_cpu_s": meta["extracted_pages"]["docs_per_cpu_s"].value,
        "clean_docs_per_cpu_s": meta["clean_documents"]["docs_per_cpu_s"].value,
        "extract_cores": meta["extracted_pages"]["cores_used"].value,
        "clean_cores": meta["clean_documents"]["cores_used"].value,
        "load": os.getloadavg()[0],
        "worker_peak_mb": max(meta[a]["worker_peak_rss_mb"].value for a in ("extracted_pages", "clean_documents")),
        "failed_shards": sum(meta[a]["failed_shards"].value for a in ("extracted_pages", "clean_documents")),
    }


def spin(n: int) -> float:
    """About n million additions of pure Python (the yardstick's shard: CPU only, no data); its CPU seconds."""
    started = time.process_time()
    total = 0
    for i in range(n * 1_000_000):
        total += i
    return time.process_time() - started


def yardstick() -> float:
    """What a second worker gains on this machine now: 20 pure-CPU shards on Ray, 1 worker over 2 workers."""
    shards = [Shard(str(i), (4,)) for i in range(20)]
    one = run_shards(RayExecutor(workers=1), spin, shards).seconds
    return one / run_shards(RayExecutor(workers=2), spin, shards).seconds


def throughput(files: list[str], rounds: int) -> None:
    ensure_ray(num_cpus=2)
    configs = {
        "in process, 1 worker": CorpusExecutor(backend="in_process"),
        "Ray, 1 worker": CorpusExecutor(workers=1),
        # the default (workers unset): tasks queued ahead of the 2 CPUs, so a worker that finishes a shard starts
        # the next at once (workers=2, two in flight, left a CPU idle for a round trip per shard: 1.56x, not 1.7x)
        "Ray, 2 workers": CorpusExecutor(),
        # one Ray task per shard (the executor before guided batching): what batching gains, side by side
        "Ray, 2, task per shard": CorpusExecutor(max_batch=1),
    }
    materialize(files[:4], configs["Ray, 2 workers"])  # warm both workers (imports) and the process
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    yardsticks = []
    for r in range(rounds):
        for name, executor in configs.items():
            out = materialize(files, executor)
            assert out["failed_shards"] == 0
            runs[name].append(out)
            print(f"  round {r + 1} {name:22} {out['pages']} pages in {out['seconds']:6.1f}s", flush=True)
        yardsticks.append(yardstick())
        print(f"  round {r + 1} yardstick: pure-CPU shards, 2 Ray workers {yardsticks[-1]:.2f}x 1 worker", flush=True)
    print(
        f"\n{'':22} {'end to end docs/s':>24} {'extract docs/s':>15} {'clean docs/s':>13}"
        f" {'extract docs/CPU-s':>19} {'clean docs/CPU-s':>17} {'cores got (extract, clean)':>27}"
    )
    medians = {}
    for name, outs in runs.items():
        rates = [o["pages"] / o["seconds"] for o in outs]
        keys = ("extract_docs_per_s", "clean_docs_per_s", "extract_docs_per_cpu_s", "clean_docs_per_cpu_s")
        medians[name] = [statistics.median(rates), *(statistics.median(o[k] for o in outs) for k in keys)]
        e2e, ex, cl, ex_cpu, cl_cpu = medians[name]
        cores = statistics.median(o["extract_cores"] for o in outs), statistics.median(o["clean_cores"] for o in outs)
        print(
            f"{name:22} {e2e:10.0f} (runs {min(rates):.0f}-{max(rates):.0f}) {ex:15.0f} {cl:13.0f} {ex_cpu:19.0f}"
            f" {cl_cpu:17.0f} {cores[0]:17.2f}, {cores[1]:.2f}"
        )
    base = medians["in process, 1 worker"]
    for name, values in medians.items():
        print(f"{name + ' / in process':36} " + "  ".join(f"{v / b:.2f}x" for v, b in zip(values, base)))
    for name, outs in runs.items():
        cpu = statistics.median(o["driver_cpu_s"] / o["pages"] * 1000 for o in outs)
        print(f"{name:22} driver CPU {cpu:.2f} s per 1,000 pages (in process: all the work)")
    loads = [o["load"] for outs in runs.values() for o in outs]
    print(f"1-minute load average during the runs: {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")
    print(
        f"yardstick (what a second worker could gain here, pure-CPU shards): {statistics.median(yardsticks):.2f}x "
        f"(rounds {min(yardsticks):.2f}-{max(yardsticks):.2f})"
    )
    print("goals: Ray 2 workers >= 1.7x one in-process worker (docs/s); Ray per core within 10% (docs/CPU-s >= 0.9x)")


def memory_child(files: list[str]) -> None:
    out = materialize(files, CorpusExecutor(num_cpus=2, workers=2))
    out["driver_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def memory(crawls: list[list[str]], scales: list[int]) -> None:
    print(
        f"\n{'scale':>6} {'pages':>7} {'WARC files':>10} {'worker peak MB':>15} {'driver peak MB':>15} {'seconds':>8}"
    )
    for scale in scales:
        files = [f for crawl in crawls[:scale] for f in crawl]
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", json.dumps(files)], capture_output=True, text=True, check=True
        )
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
        out = json.loads(line[len("RESULT ") :])
        print(
            f"{scale:>5}x {out['pages']:7d} {len(files):10d} {out['worker_peak_mb']:15.0f} "
            f"{out['driver_peak_mb']:15.0f} {out['seconds']:8.1f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warc-dir", help="the embedded crawl's WARC files (default: crawl pydoc into --cache)")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "ray-corpus-bench"))
    ap.add_argument("--scale", type=int, default=2, help="crawl copies for the throughput runs (2: >= 5,000 pages)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory", default="1,4,16", help="crawl copies for the memory runs ('' to skip)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        memory_child(json.loads(a.memory_child))
        return
    cache = Path(a.cache)
    sources = pydoc_warcs(cache, a.warc_dir)
    scales = [int(s) for s in a.memory.split(",") if s]
    crawls = copies(sources, cache, max([a.scale, *scales]))
    print(f"embedded crawl: {len(sources)} WARC files; copies under {cache / 'copies'}; {os.cpu_count()} cores")
    if not a.skip_throughput:
        files = [f for crawl in crawls[: a.scale] for f in crawl]
        print(f"throughput: {a.scale} copies, {len(files)} WARC files, {a.rounds} alternating rounds")
        throughput(files, a.rounds)
    if scales:
        memory(crawls, scales)


if __name__ == "__main__":
    main()
