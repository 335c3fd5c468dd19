"""Monitoring throughput: read the spool, describe 100k requests, test drift with Evidently.

    .venv/bin/python bench/bench_drift.py                  # 100,000 requests, 3,000 reference docs
    .venv/bin/python bench/bench_drift.py --rows 20000 --cores 1

Builds a synthetic but realistic window of traffic: prompts from templates and free text over a word
vocabulary mixing the Python reference documentation (``pydoc_data.topics``, the text the pydoc
crawl serves) and the docstrings of ~100 standard-library modules (plus numpy and polars) and their
classes' methods, with plain English; lengths vary from a few words to pasted paragraphs, and ~15% of
requests repeat one of 500 popular prompts (as real traffic does: templated and retried prompts).
Outputs are documentation excerpts. Serving fields (latency, TTFT, status, verdicts) follow plausible
distributions. Those ~3,400 documentation texts are the corpus: the reference samples 3,000 of them
(seeded), and the pipeline's byte-level BPE (:func:`assets.training.base_model.train_bpe_tokenizer`,
4,096 tokens) is trained on all of them.

The log is written to a spool (4 hour folders, 2 gateway files each, one torn last line), then timed:

* ``read_spool`` (NDJSON -> typed polars frame);
* ``build_reference`` (descriptors of the sampled corpus, plus a 20k-request baseline window);
* ``build_current`` with 1 process and with one process per core (the per-text quality score and
  language on a forkserver pool; the first call includes starting the pool);
* ``drift_report`` (Evidently DataDriftPreset over every column, HTML written), with the one-time
  Evidently import (seconds: every Dagster run is a fresh process and pays it) timed apart.

Prints seconds and rows/s per stage and the end-to-end figures against the goal: <= 15 s on 2 cores
for 100k requests. ``--cores N`` pins the process (and its workers) to the first N cores first.
"""

from __future__ import annotations

import argparse
import os
import sys

_ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
_ap.add_argument("--rows", type=int, default=100_000, help="requests in the current window")
_ap.add_argument("--reference-docs", type=int, default=3_000)
_ap.add_argument("--baseline-rows", type=int, default=20_000)
_ap.add_argument("--cores", type=int, default=None, help="pin to the first N cores (before polars starts)")
ARGS = _ap.parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.cores:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: ARGS.cores])

import importlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from assets.corpus.extract import detect_language  # noqa: E402
from assets.corpus.filters import normalize_text, quality_score  # noqa: E402
from assets.corpus.text_stats import TextStats  # noqa: E402
from assets.monitoring.drift import (  # noqa: E402
    build_current,
    build_reference,
    drift_report,
    rates,
    unknown_token_share,
)
from assets.monitoring.logs import LOG_SCHEMA, daily_hours, read_spool  # noqa: E402

DOC_MODULES = ("builtins", "os", "os.path", "re", "json", "collections", "itertools", "functools", "pathlib",
               "datetime", "math", "statistics", "random", "string", "textwrap", "typing", "subprocess",
               "shutil", "asyncio", "logging", "argparse", "csv", "sqlite3", "urllib.parse", "http.client",
               "unittest", "dataclasses", "contextlib", "inspect", "io", "threading", "decimal", "heapq",
               "email.message", "xml.etree.ElementTree", "zipfile", "tarfile", "socket", "ssl", "selectors",
               "queue", "multiprocessing", "concurrent.futures", "pickle", "copy", "pprint", "enum", "abc",
               "operator", "fractions", "hashlib", "secrets", "base64", "struct", "array", "bisect", "weakref",
               "types", "traceback", "warnings", "time", "calendar", "locale", "gettext", "glob", "fnmatch",
               "tempfile", "gzip", "bz2", "lzma", "zlib", "configparser", "tomllib", "http.server",
               "urllib.request", "smtplib", "uuid", "ipaddress", "codecs", "difflib", "doctest", "pdb", "timeit",
               "cProfile", "pstats", "importlib", "pkgutil", "ast", "dis", "tokenize", "platform", "sysconfig",
               "signal", "mmap", "sched", "numbers", "shlex", "optparse", "numpy", "polars")
ENGLISH = ("the a an and or but if then when while because so that this these those it its i you we they my our "
           "your what how why which where who can could should would will do does did is are was were be been "
           "have has had not no yes please help me explain show example write code function class file list "
           "error problem way best fast simple easy need want get make use using work works working difference "
           "between into from with without about for to of in on at by as like just also very more most some "
           "any all each every other new old good bad right wrong first last next same different").split()
TEMPLATES = (
    "How do I {v} a {n} in Python?",
    "What does {m}.{f}() return?",
    "Explain the difference between {n} and {n2}.",
    "Why does my {n} raise {e}?",
    "Write a function that {v}s a {n} using {m}.",
    "Can you show an example of {m}.{f} with a {n}?",
    "{free}",
    "{free} {free}",
    "Fix this: {e}: {free}",
    "Summarize: {para}",
)
VERBS = ("sort", "parse", "read", "write", "copy", "merge", "split", "filter", "convert", "format", "compare",
         "iterate", "serialize", "validate", "open", "close", "join", "cache", "test", "log")
NOUNS = ("list", "dict", "string", "file", "path", "tuple", "generator", "iterator", "class", "module", "date",
         "socket", "thread", "process", "decorator", "context manager", "dataclass", "regex", "JSON object", "CSV file")
ERRORS = ("TypeError", "ValueError", "KeyError", "IndexError", "AttributeError", "ImportError", "RecursionError",
          "UnicodeDecodeError", "FileNotFoundError", "ZeroDivisionError")


def documentation() -> list[str]:
    """Paragraphs of the Python reference (pydoc topics) and docstrings of common modules (>= 200 chars)."""
    from pydoc_data.topics import topics

    docs = [p.strip() for t in topics.values() for p in re.split(r"\n\s*\n", t) if len(p.strip()) >= 200]
    seen = set(docs)

    def add(obj) -> None:
        doc = inspect.getdoc(obj) if obj is not None else None
        if doc and len(doc) >= 200 and doc not in seen:
            seen.add(doc)
            docs.append(doc)

    warnings.simplefilter("ignore", DeprecationWarning)  # typing.io and friends, reached through dir()
    for name in DOC_MODULES:
        mod = importlib.import_module(name)
        add(mod)
        for attr in dir(mod):
            obj = getattr(mod, attr, None) if not attr.startswith("_") else None
            add(obj)
            if inspect.isclass(obj):  # and the methods of its classes
                for m in dir(obj):
                    if not m.startswith("_"):
                        add(getattr(obj, m, None))
    return docs


def make_log(n: int, docs: list[str], start: datetime, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    doc_words = sorted({w for d in docs for w in re.findall(r"[A-Za-z_][A-Za-z_.]+", d)})
    funcs = [(m, a) for m in ("os", "re", "json", "pathlib.Path", "itertools", "functools", "str", "dict")
             for a in ("join", "split", "loads", "dumps", "sub", "chain", "reduce", "get", "items", "exists")]

    def free() -> str:
        k = max(1, int(rng.lognormal(2.3, 0.8)))  # median ~10 words, long tail
        mix = rng.random(k) < 0.5
        words = [ENGLISH[rng.integers(len(ENGLISH))] if m else doc_words[rng.integers(len(doc_words))] for m in mix]
        return " ".join(words).capitalize() + rng.choice([".", "?", "", "!"])

    def prompt() -> str:
        t = TEMPLATES[rng.integers(len(TEMPLATES))]
        m, f = funcs[rng.integers(len(funcs))]
        para = docs[rng.integers(len(docs))]
        tail = " " + free() if t != "{free}" and rng.random() < 0.6 else ""  # context after the question
        return t.format(v=VERBS[rng.integers(len(VERBS))], n=NOUNS[rng.integers(len(NOUNS))],
                        n2=NOUNS[rng.integers(len(NOUNS))], m=m, f=f, e=ERRORS[rng.integers(len(ERRORS))],
                        free=free(), para=para[: int(rng.integers(100, 1500))]) + tail

    popular = [prompt() for _ in range(500)]
    rows = []
    for i in range(n):
        p = popular[int(rng.zipf(1.5)) % 500] if rng.random() < 0.15 else prompt()
        stream = bool(rng.random() < 0.6)
        failed = rng.random() < 0.005
        status = int(rng.choice([500, 502, 503])) if failed else (429 if rng.random() < 0.002 else 200)
        out_doc = docs[rng.integers(len(docs))]
        output = "" if failed or rng.random() < 0.01 else out_doc[: int(rng.integers(20, 2000))]
        iv = rng.choice(["allow", "flag", "block"], p=[0.97, 0.025, 0.005])
        ov = "allow" if iv == "block" else rng.choice(["allow", "flag", "block"], p=[0.98, 0.017, 0.003])
        latency = float(rng.lognormal(6.5, 0.6))
        ts = start + timedelta(seconds=float(i) * 4 * 3600 / n)
        rows.append({
            "request_id": f"req-{seed}-{i:07d}", "ts": ts.isoformat(timespec="microseconds"),
            "tenant": f"t{int(rng.integers(20))}", "key_id": f"k{int(rng.integers(200))}",
            "endpoint": "chat.completions" if rng.random() < 0.8 else "completions", "model": "crawl2serve",
            "served_model": "crawl2serve-lora", "model_version": "7", "adapter": "lora-7", "engine": "sglang",
            "route": rng.choice(["stable", "canary", "fallback"], p=[0.9, 0.08, 0.02]), "stream": stream,
            "status": status, "error": "upstream error" if failed else None, "prompt": p, "output": output,
            "prompt_tokens": len(p) // 4, "completion_tokens": len(output) // 4, "latency_ms": latency,
            "ttft_ms": latency * float(rng.uniform(0.05, 0.3)) if stream else None,
            "input_verdict": iv, "output_verdict": ov,
            "verdict_reasons": "" if iv == ov == "allow" else "pii;toxicity",
            "finish_reason": None if failed else rng.choice(["stop", "length"], p=[0.9, 0.1]),
        })
    return rows


def write_spool(root: Path, rows: list[dict]) -> list[str]:
    """One folder per hour, two gateway files per hour (rows alternate), a torn line ending one file."""
    hours: dict[str, list[dict]] = {}
    for r in rows:
        hours.setdefault(r["ts"][:13], []).append(r)
    for hour, hr in hours.items():
        d = root / hour
        d.mkdir(parents=True)
        for w in range(2):
            with open(d / f"gw-{w}-{1000 + w}-1764000000000000000.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in hr[w::2])
    with open(next((root / next(iter(hours))).glob("*.jsonl")), "a") as f:
        f.write('{"request_id": "torn", "ts": "2026-')
    return list(hours)


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def main() -> None:
    a = ARGS
    cores = len(os.sched_getaffinity(0))
    docs = documentation()
    corpus = pl.DataFrame({"text": docs}).with_columns(
        pl.col("text").str.len_chars().alias("char_count"), pl.lit("en").alias("language"))
    print(f"{len(docs)} documentation texts (mean {np.mean([len(d) for d in docs]):.0f} chars); "
          f"{cores} core(s), polars threads {pl.thread_pool_size()}")

    from assets.training.base_model import train_bpe_tokenizer

    tokenizer, t_tok = timed(train_bpe_tokenizer, docs, vocab_size=4096)
    print(f"tokenizer: {len(tokenizer)} tokens, trained in {t_tok:.1f}s (not counted)")

    day = datetime(2026, 11, 23, 6, tzinfo=UTC)
    rows, t_gen = timed(make_log, a.rows, docs, day, 1)
    baseline_rows = make_log(a.baseline_rows, docs, day - timedelta(days=7), 2)
    with tempfile.TemporaryDirectory() as tmp:
        write_spool(Path(tmp), rows)
        spool_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*.jsonl")) / 1e6
        print(f"generated {a.rows} requests in {t_gen:.1f}s, spool {spool_mb:.0f} MB\n")
        (log, skipped), t_read = timed(read_spool, tmp, daily_hours("2026-11-23"))
    baseline = pl.DataFrame(baseline_rows, schema={**LOG_SCHEMA, "ts": pl.String}).with_columns(
        pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC"))
    n_distinct = log["prompt"].n_unique()
    prompt_chars = log["prompt"].str.len_chars()

    n_ref_docs = min(a.reference_docs, len(docs))
    ref, t_ref = timed(build_reference, corpus, tokenizer, sample=n_ref_docs, seed=0,
                       baseline_log_df=baseline)
    cur1, t_cur1 = timed(build_current, log, tokenizer, workers=1)
    distinct = log["prompt"].unique(maintain_order=True).to_list()
    normalized = [normalize_text(t) for t in distinct]
    _, t_quality = timed(lambda: [quality_score(TextStats(t)) for t in normalized])
    _, t_lang = timed(lambda: [detect_language(t) for t in distinct])
    _, t_unk = timed(unknown_token_share, log["prompt"].to_list(), tokenizer)
    cur2, t_cur2 = timed(build_current, log, tokenizer, workers=cores)  # first use: starts the pool
    _, t_cur2_warm = timed(build_current, log, tokenizer, workers=cores)
    assert cur1.equals(cur2)
    t = time.perf_counter()
    import evidently.presets  # noqa: F401 - the import drift_report would otherwise pay on first use

    t_import = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        result, t_drift = timed(drift_report, cur1, ref, None, 0.5, Path(tmp) / "drift.html")
        html_mb = Path(result.html_path).stat().st_size / 1e6
    health, t_rates = timed(rates, log)

    n = log.height
    stages = [
        ("read_spool (NDJSON -> typed frame)", n, t_read),
        (f"build_reference ({n_ref_docs} docs + {a.baseline_rows} baseline)", n_ref_docs + a.baseline_rows, t_ref),
        ("build_current, 1 process", n, t_cur1),
        ("  of which: quality score (TextStats), per distinct", len(distinct), t_quality),
        ("  of which: language (CLD2), per distinct", len(distinct), t_lang),
        ("  of which: unknown-token share (all rows)", n, t_unk),
        (f"build_current, {cores} processes (pool start incl.)", n, t_cur2),
        (f"build_current, {cores} processes (warm pool)", n, t_cur2_warm),
        ("import evidently (once per process)", n, t_import),
        (f"drift_report ({len(result.per_column)} columns, HTML)", n, t_drift),
        ("rates", n, t_rates),
    ]
    print(f"{'stage':52} {'rows':>7} {'seconds':>8} {'rows/s':>9}")
    for name, k, secs in stages:
        print(f"{name:52} {k:7d} {secs:8.2f} {k / secs:9.0f}")
    serial = t_read + t_ref + t_cur1 + t_import + t_drift + t_rates
    parallel = t_read + t_ref + t_cur2 + t_import + t_drift + t_rates
    print(f"\nrows {n} ({skipped} torn line skipped), distinct prompts {n_distinct} ({n_distinct / n:.0%}), "
          f"prompt chars median {prompt_chars.median():.0f} / p99 {prompt_chars.quantile(0.99):.0f}")
    print(f"drift vs reference: share {result.drift_share:.2f}, drifted {result.drifted_columns}, "
          f"skipped {list(result.skipped_columns)}; HTML {html_mb:.1f} MB")
    print("rates:", json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in health.items()}))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (main process)")
    print(f"goal: <= 15 s on 2 cores for {n} requests end to end (read + reference + descriptors + "
          f"Evidently import + drift): {serial:.1f} s with 1 descriptor process, {parallel:.1f} s with {cores} "
          f"({n / parallel:.0f} requests/s)")


if __name__ == "__main__":
    main()
