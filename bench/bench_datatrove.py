"""Recipe fidelity: our ``fineweb`` profile against datatrove 0.10.1's own FineWeb-style filters.

    .venv/bin/python bench/bench_datatrove.py                      # real Debian doc pages (English)
    .venv/bin/python bench/bench_datatrove.py --per-package 100 --rounds 3 --e2e-pages 200
    .venv/bin/python bench/bench_datatrove.py --write-fixture tests/corpus/fixtures/fineweb_datatrove.jsonl.gz

datatrove never enters the project's environment: it lives in its own venv (``--dt-python``; datatrove
0.10.1 needs ``xxhash<4``, spaCy, tokenizers and lxml_html_clean to import, trafilatura for extraction)::

    python3 -m venv /work/venvs/datatrove
    /work/venvs/datatrove/bin/pip install 'datatrove[processing]==0.10.1' 'xxhash<4' spacy tokenizers \\
        lxml_html_clean trafilatura

and this same file runs there as a subprocess (``worker`` mode, which imports datatrove and the standard
library only), fed the same inputs through JSONL files.

The pipelines compared (FineWeb as datatrove's ``examples/fineweb.py`` builds it, after extraction and
language filtering): ``GopherRepetitionFilter() -> GopherQualityFilter() ->
C4QualityFilter(filter_no_terminal_punct=False) -> FineWebQualityFilter()``, against
``clean_document(text, PROFILES[...])`` (``fineweb``, and ``published`` for the before figure).

Pages: every HTML page of the English Debian documentation packages under ``--pages-root`` (at most
``--per-package`` per package, a seeded sample), kept where our extractor's CLD2 says English (the
pipeline's language step). Printed:

- filters only (same extracted text, ours): keep/drop agreement overall, the confusion matrix, and per
  rule how often each side's rule fires on the same documents (each rule run alone on the same input; FineWeb
  on datatrove's C4 output); the disagreements listed by the rules that decided them;
- end to end: datatrove's filters on trafilatura's text (``Trafilatura(favour_precision=True)`` as datatrove
  calls it) against ours on our extractor's text, and datatrove's filters on our text against datatrove's on
  trafilatura's (what extraction alone moves);
- our word tokenizer against spaCy's (``spacy.blank("en")``, datatrove's English word tokenizer);
- throughput, alternating ours / datatrove in repeated rounds on the same texts: filters only, and end to end
  (HTML -> text -> filters; ours also runs CLD2 language id inside extraction).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DT_PYTHON = "/work/venvs/datatrove/bin/python"
PAGES_ROOT = "/work/realdocs/x"
# English documentation packages (the other packages there are translations of these).
PACKAGES = (
    "python3.11-doc", "sphinx-doc", "postgresql-doc-15", "openjdk-17-doc", "git-doc", "debian-handbook",
    "debian-reference-en", "developers-reference_", "maint-guide_", "debian-faq_",
)
DT_RULES = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")


# ================================================================================================
# worker: runs in datatrove's venv; imports datatrove and the standard library only
# ================================================================================================
def _dt_filters():
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return {
        "gopher_repetition": GopherRepetitionFilter(),
        "gopher_quality": GopherQualityFilter(),
        "c4_quality": C4QualityFilter(filter_no_terminal_punct=False),
        "fineweb_quality": FineWebQualityFilter(),
    }


def _dt_chain(filters, text: str):
    """(kept, rule, reason) through the chain; C4 rewrites the text for FineWeb, as in the pipeline."""
    from datatrove.data import Document

    if not text:
        return False, "extraction", "empty"
    doc = Document(text=text, id="x")
    for name, f in filters.items():
        res = f.filter(doc)
        ok, reason = (res, None) if not isinstance(res, tuple) else res
        if not ok:
            return False, name, reason
    return True, None, None


def _dt_alone(f, text: str):
    from datatrove.data import Document

    doc = Document(text=text, id="x")
    res = f.filter(doc)
    ok, reason = (res, None) if not isinstance(res, tuple) else res
    return ok, reason, doc.text


def _extract_trafilatura(html: str) -> str:
    from datatrove.pipeline.extractors import Trafilatura

    global _TRAFILATURA
    try:
        ex = _TRAFILATURA
    except NameError:
        ex = _TRAFILATURA = Trafilatura(favour_precision=True)
    try:
        return ex.extract(html) or ""
    except Exception:
        return ""


def _read_html(path: str) -> str:
    # datatrove's readers hand the extractor text; WARC readers decode with the record's charset. These
    # pages are UTF-8 (declared); errors are replaced, as datatrove's readers do.
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", "replace")


def worker(task: str, src: str, dst: str) -> None:
    rows = [json.loads(line) for line in open(src, encoding="utf-8")]
    out: list[dict] = []
    if task == "trafilatura":
        for r in rows:
            t = time.perf_counter()
            text = _extract_trafilatura(_read_html(r["path"]))
            out.append({"id": r["id"], "text": text, "seconds": time.perf_counter() - t})
    elif task == "decide":
        filters = _dt_filters()
        for r in rows:
            text = r["text"]
            kept, rule, reason = _dt_chain(filters, text)
            alone = {}
            c4_text = None
            if text:
                for name in ("gopher_repetition", "gopher_quality", "c4_quality"):
                    ok, why, after = _dt_alone(filters[name], text)
                    alone[name] = why if not ok else None
                    if name == "c4_quality" and ok:
                        c4_text = after
                if c4_text is not None:
                    ok, why, _ = _dt_alone(filters["fineweb_quality"], c4_text)
                    alone["fineweb_quality"] = why if not ok else None
            out.append({"id": r["id"], "kept": kept, "rule": rule, "reason": reason, "alone": alone,
                        "c4_text": c4_text})
    elif task == "tokens":
        from datatrove.utils.text import split_into_words

        for r in rows:
            out.append({"id": r["id"], "tokens": split_into_words(r["text"]) if r["text"] else []})
    elif task == "time_filters":
        filters = _dt_filters()
        _dt_chain(filters, "Warm up the tokenizer. " * 60)
        t = time.perf_counter()
        kept = sum(_dt_chain(filters, r["text"])[0] for r in rows)
        out.append({"seconds": time.perf_counter() - t, "kept": kept})
    elif task == "time_e2e":
        filters = _dt_filters()
        _dt_chain(filters, "Warm up the tokenizer. " * 60)
        _extract_trafilatura("<html><body><p>warm up</p></body></html>")
        t = time.perf_counter()
        kept = sum(_dt_chain(filters, _extract_trafilatura(_read_html(r["path"])))[0] for r in rows)
        out.append({"seconds": time.perf_counter() - t, "kept": kept})
    else:
        raise SystemExit(f"unknown worker task {task!r}")
    with open(dst, "w", encoding="utf-8") as fh:
        for o in out:
            fh.write(json.dumps(o, ensure_ascii=False) + "\n")


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    worker(*sys.argv[2:5])
    raise SystemExit(0)


# ================================================================================================
# main: runs in the project's venv
# ================================================================================================
def select_pages(root: str, per_package: int, seed: int) -> list[str]:
    """HTML files of the English documentation packages: at most ``per_package`` of each (seeded sample),
    symlinks and byte-identical copies counted once."""
    import hashlib

    chosen: list[str] = []
    for pkg_dir in sorted(Path(root).iterdir()):
        if not pkg_dir.name.startswith(PACKAGES):
            continue
        files, seen = [], set()
        for p in sorted(pkg_dir.rglob("*.html")):
            if pkg_dir.name.startswith("debian-handbook") and "/en-US/" not in str(p):
                continue
            real = os.path.realpath(p)
            if not os.path.isfile(real):
                continue
            digest = hashlib.blake2b(Path(real).read_bytes(), digest_size=16).digest()
            if digest in seen:
                continue
            seen.add(digest)
            files.append(str(p))
        rng = random.Random(f"{seed}:{pkg_dir.name}")
        chosen += sorted(rng.sample(files, min(per_package, len(files))))
    return chosen


def write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def run_worker(dt_python: str, task: str, rows: list[dict], work: Path) -> list[dict]:
    src, dst = work / f"in-{task}.jsonl", work / f"out-{task}.jsonl"
    write_jsonl(src, rows)
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "true"}
    subprocess.run([dt_python, str(Path(__file__).resolve()), "worker", task, str(src), str(dst)],
                   check=True, env=env, cwd="/")
    return read_jsonl(dst)


def extract_ours(paths: list[str]) -> tuple[list[dict], float]:
    from assets.corpus.extract import extract_html

    rows = []
    t = time.perf_counter()
    for p in paths:
        ex = extract_html("file://" + p, Path(p).read_bytes(), "text/html; charset=utf-8")
        rows.append({"id": p, "path": p, "text": ex.text, "language": ex.language,
                     "language_score": ex.language_score})
    return rows, time.perf_counter() - t


def prepare(args) -> list[dict]:
    """Pages (English by our extractor), with our text, trafilatura's text and datatrove's decisions on
    both; cached in ``--work`` (delete it to rebuild)."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "pages.jsonl"
    key = {"root": args.pages_root, "per_package": args.per_package, "seed": args.seed}
    if cache.exists() and (work / "key.json").exists() and json.loads((work / "key.json").read_text()) == key:
        return read_jsonl(cache)
    paths = select_pages(args.pages_root, args.per_package, args.seed)
    ours, secs = extract_ours(paths)
    pages = [r for r in ours if r["language"] == "en" and r["language_score"] >= 0.5]
    print(f"selected {len(paths)} pages, {len(pages)} English by CLD2 (extracted in {secs:.1f}s)", flush=True)
    traf = {r["id"]: r for r in run_worker(args.dt_python, "trafilatura", pages, work)}
    for p in pages:
        p["traf_text"] = traf[p["id"]]["text"]
        p["traf_seconds"] = traf[p["id"]]["seconds"]
    dec_ours = {r["id"]: r for r in run_worker(args.dt_python, "decide", pages, work)}
    dec_traf = {r["id"]: r for r in run_worker(
        args.dt_python, "decide", [{"id": p["id"], "text": p["traf_text"]} for p in pages], work)}
    for p in pages:
        p["dt"] = dec_ours[p["id"]]
        p["dt_traf"] = dec_traf[p["id"]]
    write_jsonl(cache, pages)
    (work / "key.json").write_text(json.dumps(key))
    return pages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages-root", default=PAGES_ROOT)
    ap.add_argument("--per-package", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/bench_datatrove")
    ap.add_argument("--dt-python", default=DT_PYTHON)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--e2e-pages", type=int, default=300)
    ap.add_argument("--write-fixture", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    pages = prepare(args)
    print(len(pages))


if __name__ == "__main__":
    main()
