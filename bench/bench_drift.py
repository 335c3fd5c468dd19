"""Monitoring: throughput of the drift stage, and the error rates of its drift verdict.

    .venv/bin/python bench/bench_drift.py                  # throughput: 100,000 requests, 3,000 reference docs
    .venv/bin/python bench/bench_drift.py --rows 20000 --cores 1
    .venv/bin/python bench/bench_drift.py rates            # false-positive and detection rates, old rule vs new
    .venv/bin/python bench/bench_drift.py rates --hours 50 --no-old

``throughput`` (the default) builds a synthetic but realistic window of traffic: prompts from templates and
free text over a word
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

``rates`` simulates hours of traffic and judges each as the ``drift_report`` asset does, with main's old
rule and with the new one (:func:`assets.monitoring.drift.drift_verdict`), on the same hours:

* the corpus is the same documentation texts; the prompt reference is 2,000 corpus snippets (seed 0), as
  the asset builds it;
* an in-distribution hour has 30-300 requests (log-uniform): prompts are corpus snippets (other seeds),
  outputs documentation excerpts, latency log-normal, 60% streamed, 0.5% 5xx, 2.5% / 0.5% flagged / blocked
  prompts: drawn from the one fixed distribution, hour after hour;
* in-distribution groups: ``steady`` (baseline: the 24 previous hours), ``early`` (the first 0-5 hours of
  a deployment: a baseline of 0 to ~1,000 requests), ``demo`` (the observed case: the baseline is the 6
  requests of ``python -m crawl2serve.serving demo``, short document openings with 16-token answers);
* clearly shifted hours (baseline: the 24 previous in-distribution hours): ``language`` (every prompt in
  German or French), ``long_prompts`` (3-10 pasted documents per prompt), ``latency_x3`` (latency and TTFT
  x3), ``error_burst`` (20% of requests fail with a 5xx); and, not part of the goal, moderate shifts (30% of
  prompts in another language, prompts twice as long, latency x1.5, 5% errors) and a negligible one in
  large hours (latency x1.1 in 2,000-request hours: what PSI is there to ignore).

Prints, per rule, the share of in-distribution hours flagged (false positives) and of shifted hours flagged
(detection), per group and overall, and variants of the new rule (no PSI, no p-value, no Bonferroni,
dataset rules by share or by count) computed from the same per-column statistics: the calibration.
Goal: <= 5% false positives, >= 95% detection.
"""

from __future__ import annotations

import argparse
import os
import sys

_ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
_ap.add_argument("mode", nargs="?", default="throughput", choices=["throughput", "rates"])
_ap.add_argument("--rows", type=int, default=100_000, help="throughput: requests in the current window")
_ap.add_argument("--reference-docs", type=int, default=3_000)
_ap.add_argument("--baseline-rows", type=int, default=20_000)
_ap.add_argument(
    "--hours", type=int, default=25, help="rates: hours per group (3 in-distribution, 4 clear and 4 moderate shifts)"
)
_ap.add_argument("--seed", type=int, default=0, help="rates: seed of the simulated traffic")
_ap.add_argument("--no-old", action="store_true", help="rates: skip main's old rule (Evidently, ~1 s per hour)")
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
import pandas as pd  # noqa: E402
import polars as pl  # noqa: E402

from crawl2serve.assets.corpus.extract import detect_language  # noqa: E402
from crawl2serve.assets.corpus.filters import normalize_text, quality_score  # noqa: E402
from crawl2serve.assets.corpus.text_stats import TextStats  # noqa: E402
from crawl2serve.assets.monitoring.drift import (  # noqa: E402
    ALL_COLUMNS,
    CORPUS_CONTENT_COLUMNS,
    OUTPUT_COLUMNS,
    PROMPT_SHAPE_COLUMNS,
    SERVING_COLUMNS,
    DriftRule,
    build_current,
    build_reference,
    coarsen_languages,
    corpus_snippets,
    drift_report,
    drift_verdict,
    rates,
    unknown_token_share,
)
from crawl2serve.assets.monitoring.logs import LOG_SCHEMA, read_spool  # noqa: E402
from crawl2serve.serving.gateway.hours import daily_hours  # noqa: E402

DOC_MODULES = (
    "builtins",
    "os",
    "os.path",
    "re",
    "json",
    "collections",
    "itertools",
    "functools",
    "pathlib",
    "datetime",
    "math",
    "statistics",
    "random",
    "string",
    "textwrap",
    "typing",
    "subprocess",
    "shutil",
    "asyncio",
    "logging",
    "argparse",
    "csv",
    "sqlite3",
    "urllib.parse",
    "http.client",
    "unittest",
    "dataclasses",
    "contextlib",
    "inspect",
    "io",
    "threading",
    "decimal",
    "heapq",
    "email.message",
    "xml.etree.ElementTree",
    "zipfile",
    "tarfile",
    "socket",
    "ssl",
    "selectors",
    "queue",
    "multiprocessing",
    "concurrent.futures",
    "pickle",
    "copy",
    "pprint",
    "enum",
    "abc",
    "operator",
    "fractions",
    "hashlib",
    "secrets",
    "base64",
    "struct",
    "array",
    "bisect",
    "weakref",
    "types",
    "traceback",
    "warnings",
    "time",
    "calendar",
    "locale",
    "gettext",
    "glob",
    "fnmatch",
    "tempfile",
    "gzip",
    "bz2",
    "lzma",
    "zlib",
    "configparser",
    "tomllib",
    "http.server",
    "urllib.request",
    "smtplib",
    "uuid",
    "ipaddress",
    "codecs",
    "difflib",
    "doctest",
    "pdb",
    "timeit",
    "cProfile",
    "pstats",
    "importlib",
    "pkgutil",
    "ast",
    "dis",
    "tokenize",
    "platform",
    "sysconfig",
    "signal",
    "mmap",
    "sched",
    "numbers",
    "shlex",
    "optparse",
    "numpy",
    "polars",
)
ENGLISH = [
    "the",
    "a",
    "an",
    "and",
    "or",
    "but",
    "if",
    "then",
    "when",
    "while",
    "because",
    "so",
    "that",
    "this",
    "these",
    "those",
    "it",
    "its",
    "i",
    "you",
    "we",
    "they",
    "my",
    "our",
    "your",
    "what",
    "how",
    "why",
    "which",
    "where",
    "who",
    "can",
    "could",
    "should",
    "would",
    "will",
    "do",
    "does",
    "did",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "have",
    "has",
    "had",
    "not",
    "no",
    "yes",
    "please",
    "help",
    "me",
    "explain",
    "show",
    "example",
    "write",
    "code",
    "function",
    "class",
    "file",
    "list",
    "error",
    "problem",
    "way",
    "best",
    "fast",
    "simple",
    "easy",
    "need",
    "want",
    "get",
    "make",
    "use",
    "using",
    "work",
    "works",
    "working",
    "difference",
    "between",
    "into",
    "from",
    "with",
    "without",
    "about",
    "for",
    "to",
    "of",
    "in",
    "on",
    "at",
    "by",
    "as",
    "like",
    "just",
    "also",
    "very",
    "more",
    "most",
    "some",
    "any",
    "all",
    "each",
    "every",
    "other",
    "new",
    "old",
    "good",
    "bad",
    "right",
    "wrong",
    "first",
    "last",
    "next",
    "same",
    "different",
]
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
VERBS = (
    "sort",
    "parse",
    "read",
    "write",
    "copy",
    "merge",
    "split",
    "filter",
    "convert",
    "format",
    "compare",
    "iterate",
    "serialize",
    "validate",
    "open",
    "close",
    "join",
    "cache",
    "test",
    "log",
)
NOUNS = (
    "list",
    "dict",
    "string",
    "file",
    "path",
    "tuple",
    "generator",
    "iterator",
    "class",
    "module",
    "date",
    "socket",
    "thread",
    "process",
    "decorator",
    "context manager",
    "dataclass",
    "regex",
    "JSON object",
    "CSV file",
)
ERRORS = (
    "TypeError",
    "ValueError",
    "KeyError",
    "IndexError",
    "AttributeError",
    "ImportError",
    "RecursionError",
    "UnicodeDecodeError",
    "FileNotFoundError",
    "ZeroDivisionError",
)


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
    funcs = [
        (m, a)
        for m in ("os", "re", "json", "pathlib.Path", "itertools", "functools", "str", "dict")
        for a in ("join", "split", "loads", "dumps", "sub", "chain", "reduce", "get", "items", "exists")
    ]

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
        return (
            t.format(
                v=VERBS[rng.integers(len(VERBS))],
                n=NOUNS[rng.integers(len(NOUNS))],
                n2=NOUNS[rng.integers(len(NOUNS))],
                m=m,
                f=f,
                e=ERRORS[rng.integers(len(ERRORS))],
                free=free(),
                para=para[: int(rng.integers(100, 1500))],
            )
            + tail
        )

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
        rows.append(
            {
                "request_id": f"req-{seed}-{i:07d}",
                "ts": ts.isoformat(timespec="microseconds"),
                "tenant": f"t{int(rng.integers(20))}",
                "key_id": f"k{int(rng.integers(200))}",
                "endpoint": "chat.completions" if rng.random() < 0.8 else "completions",
                "model": "crawl2serve",
                "served_model": "crawl2serve-lora",
                "model_version": "7",
                "adapter": "lora-7",
                "engine": "sglang",
                "route": rng.choice(["stable", "canary", "fallback"], p=[0.9, 0.08, 0.02]),
                "stream": stream,
                "status": status,
                "error": "upstream error" if failed else None,
                "prompt": p,
                "output": output,
                "prompt_tokens": len(p) // 4,
                "completion_tokens": len(output) // 4,
                "latency_ms": latency,
                "ttft_ms": latency * float(rng.uniform(0.05, 0.3)) if stream else None,
                "input_verdict": iv,
                "output_verdict": ov,
                "verdict_reasons": "" if iv == ov == "allow" else "pii;toxicity",
                "finish_reason": None if failed else rng.choice(["stop", "length"], p=[0.9, 0.1]),
            }
        )
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


def throughput() -> None:
    a = ARGS
    cores = len(os.sched_getaffinity(0))
    docs = documentation()
    corpus = pl.DataFrame({"text": docs}).with_columns(
        pl.col("text").str.len_chars().alias("char_count"), pl.lit("en").alias("language")
    )
    print(
        f"{len(docs)} documentation texts (mean {np.mean([len(d) for d in docs]):.0f} chars); "
        f"{cores} core(s), polars threads {pl.thread_pool_size()}"
    )

    from crawl2serve.assets.training.base_model import train_bpe_tokenizer

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
        pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC")
    )
    n_distinct = log["prompt"].n_unique()
    prompt_chars = log["prompt"].str.len_chars()

    n_ref_docs = min(a.reference_docs, len(docs))
    ref, t_ref = timed(build_reference, corpus, tokenizer, sample=n_ref_docs, seed=0, baseline_log_df=baseline)
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
    base_cur, t_base = timed(build_current, baseline, tokenizer, workers=cores)  # the asset describes the baseline
    with tempfile.TemporaryDirectory() as tmp:
        verdict, t_verdict = timed(drift_verdict, cur1, ref, base_cur, None, DriftRule(), Path(tmp) / "verdict.html")
        verdict_mb = Path(verdict.html_path).stat().st_size / 1e6
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
        (f"build_current of the baseline, {cores} processes", a.baseline_rows, t_base),
        (f"drift_verdict ({len(verdict.tested_columns)} columns, p + PSI, HTML)", n, t_verdict),
        ("rates", n, t_rates),
    ]
    print(f"{'stage':52} {'rows':>7} {'seconds':>8} {'rows/s':>9}")
    for name, k, secs in stages:
        print(f"{name:52} {k:7d} {secs:8.2f} {k / secs:9.0f}")
    serial = t_read + t_ref + t_cur1 + t_import + t_drift + t_rates
    parallel = t_read + t_ref + t_cur2 + t_import + t_drift + t_rates
    print(
        f"\nrows {n} ({skipped} torn line skipped), distinct prompts {n_distinct} ({n_distinct / n:.0%}), "
        f"prompt chars median {prompt_chars.median():.0f} / p99 {prompt_chars.quantile(0.99):.0f}"
    )
    print(
        f"drift vs reference: share {result.drift_share:.2f}, drifted {result.drifted_columns}, "
        f"skipped {list(result.skipped_columns)}; HTML {html_mb:.1f} MB"
    )
    print(f"drift_verdict: {verdict.verdict}, drifted {verdict.drifted_columns}; HTML {verdict_mb:.1f} MB")
    print("rates:", json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in health.items()}))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (main process)")
    print(
        f"goal: <= 15 s on 2 cores for {n} requests end to end (read + reference + descriptors + "
        f"Evidently import + drift): {serial:.1f} s with 1 descriptor process, {parallel:.1f} s with {cores} "
        f"({n / parallel:.0f} requests/s)"
    )
    asset = t_read + t_ref + t_cur2 + t_base + t_import + t_verdict + t_rates
    print(
        f"the drift_report asset's path (descriptors of the hour and of the baseline, {cores} processes; "
        f"drift_verdict with its HTML): {asset:.1f} s"
    )


# ----- rates: false positives and detection of the drift verdict ----------------------------------
GERMAN = [
    "der",
    "ausschuss",
    "prüfte",
    "den",
    "jahresbericht",
    "und",
    "beschloss",
    "dass",
    "die",
    "bibliothek",
    "ihre",
    "öffnungszeiten",
    "verlängern",
    "soll",
    "mehrere",
    "mitglieder",
    "wiesen",
    "darauf",
    "hin",
    "dass",
    "die",
    "studenten",
    "während",
    "der",
    "prüfungszeit",
    "um",
    "ruhige",
    "räume",
    "gebeten",
    "hatten",
    "der",
    "schatzmeister",
    "erklärte",
    "dass",
    "das",
    "budget",
    "im",
    "nächsten",
    "frühjahr",
    "zwei",
    "weitere",
    "mitarbeiter",
    "erlauben",
    "würde",
    "wie",
    "kann",
    "ich",
    "eine",
    "liste",
    "in",
    "python",
    "sortieren",
    "und",
    "warum",
    "gibt",
    "meine",
    "funktion",
    "keinen",
    "wert",
    "zurück",
    "wenn",
    "ich",
    "die",
    "datei",
    "öffne",
]
FRENCH = [
    "les",
    "habitants",
    "de",
    "la",
    "ville",
    "travaillent",
    "dans",
    "les",
    "champs",
    "et",
    "dans",
    "les",
    "boutiques",
    "près",
    "de",
    "la",
    "rivière",
    "pendant",
    "que",
    "leurs",
    "enfants",
    "vont",
    "à",
    "l'école",
    "chaque",
    "matin",
    "comment",
    "est-ce",
    "que",
    "je",
    "peux",
    "trier",
    "une",
    "liste",
    "en",
    "python",
    "et",
    "pourquoi",
    "ma",
    "fonction",
    "ne",
    "renvoie",
    "rien",
    "quand",
    "j'ouvre",
    "le",
    "fichier",
    "avec",
    "le",
    "module",
    "des",
    "expressions",
    "régulières",
    "le",
    "marché",
    "était",
    "plein",
    "de",
    "pain",
    "frais",
    "de",
    "fromage",
    "et",
    "de",
    "légumes",
]
DEMO_PROMPTS = (
    "The itertools module provides",
    "To open a file for reading, use",
    "The json module can serialize",
    "A dictionary maps keys to",
    "The subprocess module lets you",
    "Regular expressions in Python are handled by",
)  # serving/__main__.py's demo requests
SHIFTS = ("language", "long_prompts", "latency_x3", "error_burst")
IN_GROUPS = ("steady", "early", "demo")
HOUR_SIZES = (30, 300)


def hour_size(rng: np.random.Generator) -> int:
    lo, hi = np.log(HOUR_SIZES[0]), np.log(HOUR_SIZES[1])
    return int(round(np.exp(rng.uniform(lo, hi))))


#: shift -> (share of prompts in German/French, prompt kind, latency factor, share of 5xx)
SHIFT_PARAMS = {
    None: (0.0, "snippet", 1.0, 0.005),
    "language": (1.0, "snippet", 1.0, 0.005),
    "long_prompts": (0.0, "documents", 1.0, 0.005),
    "latency_x3": (0.0, "snippet", 3.0, 0.005),
    "error_burst": (0.0, "snippet", 1.0, 0.2),
    # moderate shifts, not part of the goal: where detection fades
    "language_30%": (0.3, "snippet", 1.0, 0.005),
    "prompts_x2": (0.0, "snippet_x2", 1.0, 0.005),
    "latency_x1.5": (0.0, "snippet", 1.5, 0.005),
    "errors_5%": (0.0, "snippet", 1.0, 0.05),
    # a negligible change in large hours (2,000 requests): a p-value alone flags it, PSI does not
    "latency_x1.1_large": (0.0, "snippet", 1.1, 0.005),
}
MODERATE = ("language_30%", "prompts_x2", "latency_x1.5", "errors_5%", "latency_x1.1_large")


def simulate_hour(
    n: int,
    docs: list[str],
    rng: np.random.Generator,
    shift: str | None = None,
    start: datetime = datetime(2026, 11, 23, 6, tzinfo=UTC),
) -> pl.DataFrame:
    """``n`` requests of one hour (:data:`LOG_SCHEMA`): in-distribution, or with one ``shift``
    (:data:`SHIFT_PARAMS`)."""
    foreign, kind, scale, error_p = SHIFT_PARAMS[shift]
    seed = int(rng.integers(2**31))
    corpus = pl.DataFrame({"text": docs})
    if kind == "documents":  # 3-10 pasted documents
        prompts = [
            "\n\n".join(docs[int(rng.integers(len(docs)))] for _ in range(int(rng.integers(3, 11)))) for _ in range(n)
        ]
    elif kind == "snippet_x2":  # twice as long on average: 8-128 words instead of 4-64
        prompts = corpus_snippets(corpus, n, min_words=8, max_words=128, seed=seed)["text"].to_list()
    else:
        prompts = corpus_snippets(corpus, n, seed=seed)["text"].to_list()
    for i in range(n):
        if rng.random() < foreign:
            words = (GERMAN, FRENCH)[int(rng.integers(2))]
            prompts[i] = (
                " ".join(words[int(rng.integers(len(words)))] for _ in range(int(rng.integers(6, 40)))).capitalize()
                + "?"
            )
    rows = []
    for i, p in enumerate(prompts):
        failed = bool(rng.random() < error_p)
        stream = bool(rng.random() < 0.6)
        status = int(rng.choice([500, 502, 503])) if failed else (429 if rng.random() < 0.002 else 200)
        out_doc = docs[int(rng.integers(len(docs)))]
        output = "" if failed or rng.random() < 0.01 else out_doc[: int(rng.integers(20, 2000))]
        iv = str(rng.choice(["allow", "flag", "block"], p=[0.97, 0.025, 0.005]))
        ov = "allow" if iv == "block" else str(rng.choice(["allow", "flag", "block"], p=[0.98, 0.017, 0.003]))
        latency = float(rng.lognormal(6.5, 0.6)) * scale
        rows.append(
            _log_row(
                i,
                seed,
                start,
                p,
                output,
                status,
                stream,
                latency,
                latency * float(rng.uniform(0.05, 0.3)) if stream else None,
                iv,
                ov,
            )
        )
    return _log_frame(rows)


def demo_baseline(
    docs: list[str], rng: np.random.Generator, start: datetime = datetime(2026, 11, 23, 5, tzinfo=UTC)
) -> pl.DataFrame:
    """The 6 requests of ``python -m crawl2serve.serving demo`` (max_tokens=16; every 4th from the second streamed)."""
    rows = []
    for i, p in enumerate(DEMO_PROMPTS):
        stream = i % 4 == 1
        latency = float(rng.lognormal(6.5, 0.6))
        out = docs[int(rng.integers(len(docs)))][:64]
        rows.append(
            _log_row(
                i,
                0,
                start,
                p,
                out,
                200,
                stream,
                latency,
                latency * 0.2 if stream else None,
                "allow",
                "allow",
                completion_tokens=16,
            )
        )
    return _log_frame(rows)


def _log_row(i, seed, start, prompt, output, status, stream, latency, ttft, iv, ov, completion_tokens=None):
    failed = status >= 500
    return {
        "request_id": f"sim-{seed}-{i}",
        "ts": start + timedelta(seconds=i),
        "tenant": "t0",
        "key_id": "k0",
        "endpoint": "completions",
        "model": "crawl2serve",
        "served_model": "crawl2serve-lora",
        "model_version": "7",
        "adapter": "lora-7",
        "engine": "sglang",
        "route": "stable",
        "stream": stream,
        "status": status,
        "error": "upstream error" if failed else None,
        "prompt": prompt,
        "output": output,
        "prompt_tokens": len(prompt) // 4,
        "completion_tokens": completion_tokens if completion_tokens is not None else len(output) // 4,
        "latency_ms": latency,
        "ttft_ms": ttft,
        "input_verdict": iv,
        "output_verdict": ov,
        "verdict_reasons": "" if iv == ov == "allow" else "pii",
        "finish_reason": None if failed else "stop",
    }


def _log_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=LOG_SCHEMA)


def old_rule(current, snippet_reference, baseline, requests: int):
    """main's ``drift_report`` asset before this change: < 50 requests no verdict; content vs the corpus
    snippets; with any earlier traffic, shape/outputs/serving vs it; Evidently K-S / chi-square at
    p <= 0.05; the hour drifts when >= 50% of the tested columns drift."""
    if requests < 50:
        return None
    reference = snippet_reference.copy()
    columns = list(CORPUS_CONTENT_COLUMNS)
    if baseline is not None and len(baseline):
        reference[list(PROMPT_SHAPE_COLUMNS)] = float("nan")
        earlier = baseline.copy()
        earlier[list(CORPUS_CONTENT_COLUMNS)] = None
        earlier["source"] = "baseline"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # concatenating all-null columns
            reference = pd.concat([reference, earlier[reference.columns]], ignore_index=True)
        columns += list(PROMPT_SHAPE_COLUMNS + OUTPUT_COLUMNS + SERVING_COLUMNS)
    cur, ref = coarsen_languages(current, reference)
    return drift_report(cur, ref, columns, drift_share_threshold=0.5, num_method="ks", cat_method="chisquare")


def _variants(rule: DriftRule) -> dict[str, callable]:
    """Dataset rules over one verdict's per-column (p, PSI): the calibration table."""

    def judge(v, *, p_of, psi_gate, count=None, share=None):
        tested = [c for c in v.columns.values() if c.p_value is not None]
        if not tested:
            return False
        bound = p_of(len(tested))
        drifted = [
            c for c in tested if (bound is None or c.p_value < bound) and (not psi_gate or c.psi > rule.psi_threshold)
        ]
        return len(drifted) >= count if count is not None else len(drifted) / len(tested) >= share

    bonf = lambda m: rule.alpha / m  # noqa: E731
    raw = lambda m: rule.alpha  # noqa: E731
    return {
        "new tests, p < 0.05 only, share >= 0.5 (old dataset rule)": lambda v: judge(
            v, p_of=raw, psi_gate=False, share=0.5
        ),
        "p < 0.05 only (no Bonferroni), >= 1 column": lambda v: judge(v, p_of=raw, psi_gate=False, count=1),
        "p < 0.05 and PSI > 0.2 (no Bonferroni), >= 1 column": lambda v: judge(v, p_of=raw, psi_gate=True, count=1),
        "p < 0.05/m only, >= 1 column": lambda v: judge(v, p_of=bonf, psi_gate=False, count=1),
        "PSI > 0.2 only, >= 1 column": lambda v: judge(v, p_of=lambda m: None, psi_gate=True, count=1),
        "p < 0.05/m and PSI > 0.2, >= 2 columns": lambda v: judge(v, p_of=bonf, psi_gate=True, count=2),
        "p < 0.05/m and PSI > 0.2, share >= 0.5": lambda v: judge(v, p_of=bonf, psi_gate=True, share=0.5),
    }


def error_rates() -> None:
    a = ARGS
    rng = np.random.default_rng(a.seed)
    docs = documentation()
    corpus = pl.DataFrame({"text": docs})
    from crawl2serve.assets.training.base_model import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(docs, vocab_size=4096)
    snippet_reference = build_reference(corpus_snippets(corpus, 2000, seed=0), tokenizer, sample=None)
    rule = DriftRule()
    n = a.hours
    print(
        f"{len(docs)} documentation texts; prompt reference: 2,000 corpus snippets; {n} hours per group; "
        f"hour sizes {HOUR_SIZES[0]}-{HOUR_SIZES[1]} requests (log-uniform); rule: {rule.describe(len(ALL_COLUMNS))}\n"
    )

    t0 = time.perf_counter()
    # one in-distribution timeline: 24 warm-up hours, then n steady hours judged against their 24 previous,
    # then 4 x n shifted hours judged against the 24 hours before the first of them
    timeline = [build_current(simulate_hour(hour_size(rng), docs, rng), tokenizer) for _ in range(24 + n)]
    cases: list[tuple[str, pd.DataFrame, pd.DataFrame | None, int]] = []
    for i in range(24, 24 + n):
        cases.append(("steady", timeline[i], pd.concat(timeline[i - 24 : i], ignore_index=True), len(timeline[i])))
    for i in range(n):  # a fresh deployment: hour k judged against hours 0..k-1
        k = i % 6
        hours = [build_current(simulate_hour(hour_size(rng), docs, rng), tokenizer) for _ in range(k + 1)]
        cases.append(("early", hours[-1], pd.concat(hours[:-1], ignore_index=True) if k else None, len(hours[-1])))
    demo = build_current(demo_baseline(docs, rng), tokenizer)
    for i in range(n):
        size = 120 if i == 0 else hour_size(rng)  # the observed case first: 120 requests vs the 6 demo requests
        cur = build_current(simulate_hour(size, docs, rng), tokenizer)
        cases.append(("demo", cur, demo, size))
    window = pd.concat(timeline[-24:], ignore_index=True)
    for shift in SHIFTS + MODERATE:
        for _ in range(n):
            size = 2000 if shift.endswith("_large") else hour_size(rng)
            cur = build_current(simulate_hour(size, docs, rng, shift), tokenizer)
            cases.append((shift, cur, window, len(cur)))
    t_sim = time.perf_counter() - t0

    variants = _variants(rule)
    flags: dict[str, list[tuple[str, bool]]] = {"old rule (main)": [], "new rule": [], **{k: [] for k in variants}}
    t_old = t_new = 0.0
    fp_columns: dict[str, int] = {}
    for group, cur, base, size in cases:
        if not a.no_old:
            t = time.perf_counter()
            old = old_rule(cur, snippet_reference, base, size)
            flags["old rule (main)"].append((group, old is not None and old.dataset_drift))
            t_old += time.perf_counter() - t
        t = time.perf_counter()
        v = drift_verdict(cur, snippet_reference, base, rule=rule)
        t_new += time.perf_counter() - t
        flags["new rule"].append((group, v.dataset_drift))
        if group in IN_GROUPS:
            for c in v.drifted_columns:
                fp_columns[c] = fp_columns.get(c, 0) + 1
        for name, judge in variants.items():
            flags[name].append((group, judge(v)))
        if group == "demo" and [g for g, _ in flags["new rule"]].count("demo") == 1:
            print(
                f"observed case, 120 in-distribution requests vs the 6 demo requests: new rule: {v.verdict}, "
                f"{len(v.tested_columns)} columns tested, drifted {v.drifted_columns}, no verdict "
                f"{sorted(v.no_verdict)}"
                + (
                    ""
                    if a.no_old
                    else f"; old rule: {len(old.drifted_columns)} of {len(old.per_column)} columns "
                    f"drifted (share {old.drift_share:.2f}): {old.drifted_columns}"
                )
            )
    sizes = [s for _, _, _, s in cases]
    print(
        f"{len(cases)} hours simulated and described in {t_sim:.0f} s (median {int(np.median(sizes))} requests); "
        f"judging: new rule {t_new / len(cases) * 1000:.0f} ms/hour"
        + ("" if a.no_old else f", old rule (Evidently) {t_old / len(cases) * 1000:.0f} ms/hour")
        + "\n"
    )

    def pct(group_flags: list[bool]) -> str:
        return f"{100 * sum(group_flags) / len(group_flags):5.1f}%" if group_flags else "    -"

    header = ["rule", *[f"FP {g}" for g in IN_GROUPS], "FP all", *[f"det {s}" for s in SHIFTS], "det all"]
    widths = [58] + [max(8, len(h)) for h in header[1:]]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for name, fl in flags.items():
        if not fl:
            continue
        cells = [pct([f for g, f in fl if g == grp]) for grp in IN_GROUPS]
        cells.append(pct([f for g, f in fl if g in IN_GROUPS]))
        cells += [pct([f for g, f in fl if g == s]) for s in SHIFTS]
        cells.append(pct([f for g, f in fl if g in SHIFTS]))
        print("  ".join([name.ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells, widths[1:])]))
    print("\nmoderate shifts, and a negligible one in 2,000-request hours (not part of the goal): hours flagged")
    print("  ".join([" " * widths[0]] + [f"{s}".rjust(18) for s in MODERATE]))
    for name in ("old rule (main)", "new rule", "p < 0.05/m only, >= 1 column"):
        if flags[name]:
            print(
                "  ".join(
                    [name.ljust(widths[0])] + [pct([f for g, f in flags[name] if g == s]).rjust(18) for s in MODERATE]
                )
            )
    n_in, n_sh = sum(g in IN_GROUPS for g, *_ in cases), sum(g in SHIFTS for g, *_ in cases)
    print(f"\ncolumns drifted in the new rule's false positives: {fp_columns or 'none'}")
    fp = sum(f for g, f in flags["new rule"] if g in IN_GROUPS) / n_in
    det = sum(f for g, f in flags["new rule"] if g in SHIFTS) / n_sh
    print(
        f"\ngoal: <= 5% false positives over {n_in} in-distribution hours, >= 95% detection over {n_sh} shifted "
        f"hours: new rule {fp:.1%} / {det:.1%} ({'met' if fp <= 0.05 and det >= 0.95 else 'NOT met'})"
    )


if __name__ == "__main__":
    error_rates() if ARGS.mode == "rates" else throughput()
