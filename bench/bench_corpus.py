"""Corpus throughput: extract + clean + dedup over the embedded crawl (or WARC files you name).

    .venv/bin/python bench/bench_corpus.py                 # crawls the pydoc site first (~35 s)
    .venv/bin/python bench/bench_corpus.py --warc 'x/*.warc.gz' --profile published
    .venv/bin/python bench/bench_corpus.py --repeat 5      # feed the pages 5x (dedup sees copies)

Prints docs/s per core for each stage (one process, so one core) and end to end, the end-to-end
figure with one worker process per core for the per-document stages (extract, clean), peak RSS, and
the goals (>= 250 docs/s per core end to end; MinHash signatures >= 2,000 docs/s per core).
"""

import argparse
import asyncio
import glob
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl

from crawl2serve.assets.corpus.cleaned import CleanConfig, clean_frame
from crawl2serve.assets.corpus.dedup import MinHashLSH, minhash_signatures
from crawl2serve.assets.corpus.deduplicated import DedupConfig, dedup_frame
from crawl2serve.assets.corpus.extract import content_hash, doc_id, extract_html
from crawl2serve.assets.corpus.extracted import SCHEMA
from crawl2serve.assets.crawl.crawler import Crawler, CrawlSettings, CrawlStore
from crawl2serve.assets.crawl.warc import iter_records
from crawl2serve.resources.crawl_target import PYDOC_EXCLUDES, start_pydoc
from crawl2serve.resources.storage import DataRoot


def crawl_pydoc(directory: str) -> list[str]:
    with start_pydoc() as url:
        settings = CrawlSettings(
            seeds=(url + "index.html", url + "topics.html", url + "keywords.html"),
            private_hosts=("127.0.0.1",),
            exclude_patterns=PYDOC_EXCLUDES,
            max_pages=5000,
            per_host_delay_s=0.0,
            progress_every_s=3600,
        )
        root = DataRoot(url=directory)
        summary = asyncio.run(Crawler(settings, CrawlStore(root, root.root), log=lambda _: None).run())
    print(f"crawled {summary.stored} pydoc pages in {summary.seconds:.1f}s")
    return sorted(glob.glob(f"{directory}/segments/*.warc.gz"))


def load_records(paths: list[str]) -> list[tuple[str, bytes, str | None]]:
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out += [(r.url, r.body, r.content_type) for r in iter_records(f) if r.status == 200]
    return out


def extract_all(records) -> pl.DataFrame:
    rows = []
    for url, body, ctype in records:
        ex = extract_html(url, body, ctype)
        rows.append(
            (
                doc_id(url),
                url,
                ex.canonical_url,
                ex.host,
                ex.title,
                ex.text,
                ex.language,
                ex.language_score,
                content_hash(ex.text),
                ex.encoding,
                len(body),
                len(ex.text),
                None,
            )
        )
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def _extract_and_clean(args) -> tuple[pl.DataFrame, int]:
    records, profile = args
    pages = extract_all(records)
    kept, _, _ = clean_frame(pages, CleanConfig(profile=profile))
    return kept, pages.height


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warc", action="append", default=[], help="WARC glob(s); default: crawl pydoc")
    ap.add_argument("--profile", default="documentation", choices=["published", "documentation"])
    ap.add_argument("--repeat", type=int, default=1, help="feed every page this many times (distinct URLs)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        paths = sorted(p for g in a.warc for p in glob.glob(g)) or crawl_pydoc(tmp)
        base = load_records(paths)
    records = [(f"{u}#{i}" if i else u, b, c) for i in range(a.repeat) for u, b, c in base]
    n = len(records)
    print(f"{n} HTML pages from {len(paths)} WARC files ({sum(len(b) for _, b, _ in records) / 1e6:.1f} MB)\n")

    pages, t_extract = timed(extract_all, records)
    (kept, _, _), t_clean = timed(clean_frame, pages, CleanConfig(profile=a.profile))
    _, t_sig = timed(minhash_signatures, kept["text"].to_list(), MinHashLSH())
    (deduped, _, facts), t_dedup = timed(dedup_frame, kept, DedupConfig())
    serial = t_extract + t_clean + t_dedup

    chunks = [(records[i :: a.workers], a.profile) for i in range(a.workers)]
    t = time.perf_counter()
    with mp.get_context("fork").Pool(a.workers) as pool:
        parts = pool.map(_extract_and_clean, chunks)
    kept_par = pl.concat([k for k, _ in parts])
    dedup_frame(kept_par, DedupConfig())
    t_parallel = time.perf_counter() - t

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [
        ("extract (WARC bytes -> text, lang, hash)", n, t_extract),
        ("clean (normalize, rules, PII, score)", pages.height, t_clean),
        ("minhash signatures (14x8, 5-grams)", kept.height, t_sig),
        ("dedup (exact + LSH + verify + clusters)", kept.height, t_dedup),
        ("end to end, 1 process", n, serial),
    ]
    print(f"{'stage':45} {'docs':>7} {'seconds':>8} {'docs/s/core':>12}")
    for name, docs, secs in rows:
        print(f"{name:45} {docs:7d} {secs:8.2f} {docs / secs:12.0f}")
    per_core = n / t_parallel / a.workers
    print(
        f"{'end to end, ' + str(a.workers) + ' processes':45} {n:7d} {t_parallel:8.2f} {per_core:12.0f}"
        f"   ({n / t_parallel:.0f} docs/s total)"
    )
    print(
        f"\nkept {kept.height}/{pages.height} after cleaning ({a.profile}), {deduped.height} after dedup "
        f"({facts['exact_removed']} exact, {facts['near_removed']} near removed; "
        f"{facts['candidate_pairs']} LSH candidates, {facts['rejected_pairs']} rejected by verification)"
    )
    print(f"peak RSS {peak_mb:.0f} MB (main process)")
    print(
        f"goals: end to end {n / serial:.0f} docs/s/core (1 proc) and {per_core:.0f} ({a.workers} procs) vs 250; "
        f"signatures {kept.height / t_sig:.0f} docs/s/core vs 2,000"
    )


if __name__ == "__main__":
    main()
