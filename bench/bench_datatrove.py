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
pipeline's language step). Trafilatura runs as datatrove's ``Trafilatura(favour_precision=True).extract``
(without the extractor's 1 s per-page sandbox). Printed:

- filters only, the same extracted text to both (ours, then trafilatura's): keep/drop agreement and who
  keeps what; datatrove also on our normalized text (what our normalization alone moves); per rule, how
  often each side's rule fires on the same documents (each rule alone on the same input; FineWeb on
  datatrove's C4 output); every disagreement with the rules that decided it and its class (datatrove re-run
  with one normalization step at a time: the step that makes it decide as we do names the class);
- end to end: ours on our extractor's text against datatrove on trafilatura's, and datatrove on our text
  against datatrove on trafilatura's (what extraction alone moves), with a table of those extraction
  differences (rules, text and line ratios, packages);
- the two known differences probed on small texts, both sides' decisions;
- our punctuation and terminal sets against datatrove's, and our word tokenizer against spaCy's
  (``spacy.blank("en")``, datatrove's English word tokenizer);
- throughput, alternating ours / datatrove in repeated rounds on the same texts: filters only, and end to end
  on every k-th page (HTML -> text -> filters; ours also runs language id inside extraction).
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
    "python3.11-doc",
    "sphinx-doc",
    "postgresql-doc-15",
    "openjdk-17-doc",
    "git-doc",
    "debian-handbook",
    "debian-reference-en",
    "developers-reference_",
    "maint-guide_",
    "debian-faq_",
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
    with open(src, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
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
            out.append(
                {"id": r["id"], "kept": kept, "rule": rule, "reason": reason, "alone": alone, "c4_text": c4_text}
            )
    elif task == "tokens":
        from datatrove.utils.text import split_into_words

        for r in rows:
            out.append({"id": r["id"], "tokens": split_into_words(r["text"]) if r["text"] else []})
    elif task == "sets":
        from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION

        out.append({"punctuation": sorted(PUNCTUATION_SET), "terminals": sorted(TERMINAL_PUNCTUATION)})
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
    subprocess.run(
        [dt_python, str(Path(__file__).resolve()), "worker", task, str(src), str(dst)], check=True, env=env, cwd="/"
    )
    return read_jsonl(dst)


def extract_ours(paths: list[str]) -> tuple[list[dict], float]:
    from crawl2serve.assets.corpus.extract import extract_html

    rows = []
    t = time.perf_counter()
    for p in paths:
        ex = extract_html("file://" + p, Path(p).read_bytes(), "text/html; charset=utf-8")
        rows.append({"id": p, "path": p, "text": ex.text, "language": ex.language, "language_score": ex.language_score})
    return rows, time.perf_counter() - t


def prepare(args) -> list[dict]:
    """Pages (English by our extractor) with our extracted text, its normalized form, trafilatura's text, and
    datatrove's decisions on all three; cached in ``--work`` (delete it, or change the page options, to
    rebuild)."""
    from crawl2serve.assets.corpus.filters import normalize_text

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "pages.jsonl"
    key = {"root": args.pages_root, "per_package": args.per_package, "seed": args.seed, "version": 3}
    if cache.exists() and (work / "key.json").exists() and json.loads((work / "key.json").read_text()) == key:
        return read_jsonl(cache)
    paths = select_pages(args.pages_root, args.per_package, args.seed)
    ours, secs = extract_ours(paths)
    pages = [r for r in ours if r["language"] == "en" and r["language_score"] >= 0.5]
    print(
        f"selected {len(paths)} pages, {len(pages)} English by CLD2 (extracted in {secs:.1f}s); "
        "running trafilatura and datatrove in their venv ...",
        flush=True,
    )
    traf = {r["id"]: r for r in run_worker(args.dt_python, "trafilatura", pages, work)}
    for p in pages:
        p["traf_text"] = traf[p["id"]]["text"]
        p["norm_text"] = normalize_text(p["text"])
    for field, out in (("text", "dt"), ("norm_text", "dt_norm"), ("traf_text", "dt_traf")):
        decided = {
            r["id"]: r
            for r in run_worker(args.dt_python, "decide", [{"id": p["id"], "text": p[field]} for p in pages], work)
        }
        for p in pages:
            p[out] = decided[p["id"]]
    rows = [{"id": f"{f}:{p['id']}", "text": p[f]} for p in pages for f in ("text", "traf_text")]
    write_jsonl(work / "spacy_tokens.jsonl", run_worker(args.dt_python, "tokens", rows, work))
    write_jsonl(cache, pages)
    (work / "key.json").write_text(json.dumps(key))
    return pages


# ----- agreement ------------------------------------------------------------------------------------
def ours_decide(text: str, profile) -> tuple[bool, str | None, str | None]:
    from crawl2serve.assets.corpus.cleaning import clean_document

    r = clean_document(text, profile)
    return r.text is not None, r.dropped_by, r.reason


def ours_alone(page: dict, profile, dt_key: str = "dt") -> dict[str, str | None]:
    """Each of the four rules of ``profile`` alone on the same input as datatrove's rule alone (the
    extracted text; FineWeb: datatrove's C4 output), through our normalization."""
    from crawl2serve.assets.corpus.filters import normalize_text
    from crawl2serve.assets.corpus.text_stats import TextStats

    out: dict[str, str | None] = {}
    stats = TextStats(normalize_text(page["text"], keep_indentation=profile.keep_indentation))
    for name in ("gopher_repetition", "gopher_quality"):
        out[name] = getattr(profile, name).check(stats)
    out["c4_quality"] = profile.c4_quality.apply(stats)[2]
    if page[dt_key]["c4_text"] is not None:
        c4 = TextStats(normalize_text(page[dt_key]["c4_text"], keep_indentation=profile.keep_indentation))
        out["fineweb_quality"] = profile.fineweb_quality.check(c4)
    return out


def pct(a: int, n: int) -> str:
    return f"{a / n:.1%}" if n else "n/a"


def agreement(label: str, ours: list[bool], theirs: list[bool]) -> float:
    n = len(ours)
    agree = sum(o == t for o, t in zip(ours, theirs))
    both = sum(o and t for o, t in zip(ours, theirs))
    only_o = sum(o and not t for o, t in zip(ours, theirs))
    only_t = sum(t and not o for o, t in zip(ours, theirs))
    print(
        f"  {label:<58} {pct(agree, n):>6}  ({agree}/{n}; kept by both {both}, only ours {only_o}, "
        f"only datatrove {only_t}; kept ours {sum(ours)} / datatrove {sum(theirs)})"
    )
    return agree / n if n else 0.0


def per_rule_table(pages: list[dict], profile, dt_key: str = "dt") -> None:
    what = "the raw extracted text" if dt_key == "dt" else "our normalized text"
    print(f"  per rule, each alone on the same input ({profile.name}; datatrove on {what}):")
    print(f"    {'rule':<18} {'agree':>7} {'both fire':>10} {'only ours':>10} {'only datatrove':>15} {'neither':>8}")
    alone = [ours_alone(p, profile, dt_key) for p in pages]
    for rule in DT_RULES:
        rows = [
            (a[rule] is not None, p[dt_key]["alone"][rule] is not None)
            for a, p in zip(alone, pages)
            if rule in p[dt_key]["alone"] and rule in a
        ]
        both = sum(o and t for o, t in rows)
        oo = sum(o and not t for o, t in rows)
        ot = sum(t and not o for o, t in rows)
        nn = sum(not o and not t for o, t in rows)
        print(f"    {rule:<18} {pct(both + nn, len(rows)):>7} {both:>10} {oo:>10} {ot:>15} {nn:>8}")


def classify(args, diff: list[tuple[dict, tuple]]) -> list[str]:
    """Why ours and datatrove differ on each page (filters only, our extracted text): datatrove is re-run on
    the text with one normalization step applied at a time; the first step that makes it decide as we do
    names the class."""
    import re

    steps = (
        ("whitespace-only lines (blank lines for us)", lambda t: re.sub(r"(?m)^[^\S\n]+$", "", t)),
        ("no-break spaces (spaces for us)", lambda t: t.replace("\xa0", " ")),
    )
    out = ["rule implementation" if p["dt_norm"]["kept"] != o[0] else None for p, o in diff]
    for label, step in steps:
        todo = [i for i, c in enumerate(out) if c is None]
        if not todo:
            break
        rows = [{"id": str(i), "text": step(diff[i][0]["text"])} for i in todo]
        for r in run_worker(args.dt_python, "decide", rows, Path(args.work)):
            i = int(r["id"])
            if r["kept"] == diff[i][1][0]:
                out[i] = "normalization: " + label
    return [c or "normalization: other (several steps together)" for c in out]


def report_agreement(args, pages: list[dict]) -> None:
    from crawl2serve.assets.corpus.thresholds import FINEWEB, PUBLISHED

    dt = [p["dt"]["kept"] for p in pages]
    dt_traf = [p["dt_traf"]["kept"] for p in pages]
    results = {}
    for profile in (FINEWEB, PUBLISHED):
        results[profile.name] = {
            "text": [ours_decide(p["text"], profile) for p in pages],
            "traf": [ours_decide(p["traf_text"], profile) for p in pages],
        }
    print("\nFILTERS ONLY, same extracted text (our extractor's):")
    for name, r in results.items():
        agreement(f"{name} vs datatrove", [k for k, _, _ in r["text"]], dt)
    agreement(
        "fineweb vs datatrove on our normalized text",
        [k for k, _, _ in results["fineweb"]["text"]],
        [p["dt_norm"]["kept"] for p in pages],
    )
    agreement("datatrove on our normalized text vs on the raw text", [p["dt_norm"]["kept"] for p in pages], dt)
    print("FILTERS ONLY, same extracted text (trafilatura's):")
    for name, r in results.items():
        agreement(f"{name} vs datatrove", [k for k, _, _ in r["traf"]], dt_traf)
    print("END TO END (ours: our extractor + profile; datatrove: trafilatura + its filters):")
    for name, r in results.items():
        agreement(f"{name} vs datatrove", [k for k, _, _ in r["text"]], dt_traf)
    agreement("extraction alone: datatrove on our text vs on trafilatura's", dt, dt_traf)
    for profile, key in ((FINEWEB, "dt"), (FINEWEB, "dt_norm"), (PUBLISHED, "dt")):
        print()
        per_rule_table(pages, profile, key)
    ours = results["fineweb"]["text"]
    diff = [(p, o) for p, o in zip(pages, ours) if o[0] != p["dt"]["kept"]]
    print(f"\nfineweb vs datatrove, our extracted text: {len(diff)} disagreements, by class and deciding rules:")
    classes = Counter((c, o[1] or "kept", p["dt"]["rule"] or "kept") for c, (p, o) in zip(classify(args, diff), diff))
    for (cls, our_rule, dt_rule), n in classes.most_common():
        print(f"  {n:>4}  {cls}: ours {our_rule}, datatrove {dt_rule}")
    traf_diff = [(p, o) for p, o in zip(pages, results["fineweb"]["traf"]) if o[0] != p["dt_traf"]["kept"]]
    print(f"fineweb vs datatrove, trafilatura's text: {len(traf_diff)} disagreements")
    for p, o in traf_diff[:10]:
        print(f"  {p['id']}: ours {o[1] or 'kept'} {o[2] or ''}, datatrove {p['dt_traf']['rule'] or 'kept'}")
    e2e = Counter(
        (o[1] or "kept", p["dt_traf"]["rule"] or "kept") for p, o in zip(pages, ours) if o[0] != p["dt_traf"]["kept"]
    )
    print(
        "end to end, fineweb vs datatrove: disagreements by deciding rules (ours on our text, datatrove on "
        "trafilatura's):"
    )
    for (a, b), n in e2e.most_common(12):
        print(f"  {n:>4}  ours {a}, datatrove {b}")
    by_pkg = Counter()
    by_pkg_n = Counter()
    for p, o in zip(pages, ours):
        pkg = p["id"].split("/")[4]
        by_pkg_n[pkg] += 1
        by_pkg[pkg] += o[0] == p["dt_traf"]["kept"]
    print(
        "end to end agreement by package: "
        + ", ".join(f"{k.split('_')[0]} {pct(by_pkg[k], n)} of {n}" for k, n in sorted(by_pkg_n.items()))
    )
    lens = [(len(p["text"]), len(p["traf_text"])) for p in pages]
    empty = sum(1 for p in pages if not p["traf_text"])
    shorter = sum(1 for a, b in lens if b < a)
    print(
        f"extraction: trafilatura returned nothing on {empty} pages; its text is shorter than ours on "
        f"{shorter}/{len(pages)} (median chars ours {sorted(a for a, _ in lens)[len(lens) // 2]}, "
        f"trafilatura {sorted(b for _, b in lens)[len(lens) // 2]})"
    )


def report_extraction(pages: list[dict]) -> None:
    """What extraction alone changes: datatrove's filters on our text vs on trafilatura's, by the rules that
    decided, with the median text measures of each class (trafilatura's / ours)."""
    from statistics import median

    from crawl2serve.assets.corpus.en_words import DATATROVE_TERMINALS

    def facts(text: str) -> tuple[int, int, float]:
        lines = [line for line in text.split("\n") if line.strip()]
        ends = sum(line.rstrip().endswith(DATATROVE_TERMINALS) for line in lines) / max(len(lines), 1)
        return len(text), len(lines), ends

    groups: dict[tuple[str, str], list[tuple]] = {}
    for p in pages:
        a, b = p["dt"], p["dt_traf"]
        if a["kept"] != b["kept"]:
            key = (a["reason"] or "kept", b["reason"] or "kept")
            groups.setdefault(key, []).append((facts(p["text"]), facts(p["traf_text"]), p["id"].split("/")[4]))
    n = sum(map(len, groups.values()))
    print(f"\nEXTRACTION (datatrove's filters on our text vs on trafilatura's): {n} pages decided differently")
    print(
        f"  {'pages':>5}  {'on our text':<30} {'on trafilatura text':<30} {'chars t/o':>9} {'lines t/o':>9} "
        f"{'punct lines o -> t':>18}  packages"
    )
    for (ours, traf), rows in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:10]:
        chars = median(t[0] / max(o[0], 1) for o, t, _ in rows)
        lines = median(t[1] / max(o[1], 1) for o, t, _ in rows)
        punct = (median(o[2] for o, _, _ in rows), median(t[2] for _, t, _ in rows))
        pkgs = Counter(k.split("_")[0] for _, _, k in rows).most_common(3)
        print(
            f"  {len(rows):>5}  {ours:<30} {traf:<30} {chars:>9.2f} {lines:>9.2f} {punct[0]:>8.2f} -> "
            f"{punct[1]:.2f}  " + ", ".join(f"{k} {v}" for k, v in pkgs)
        )


def report_probes(args) -> None:
    """The two known differences, on small texts: both sides decide on the same input."""
    from crawl2serve.assets.corpus.thresholds import FINEWEB

    prose = [
        "The river begins high in the mountains, where melting snow gathers into small streams.",
        "Those streams join together and carry cold water down through pine forests and valleys.",
        "Farmers in the lower plains have relied on that water for centuries to grow wheat.",
        "During the spring the current becomes strong enough to move heavy stones along its bed.",
        "Engineers built a series of dams to control floods and to produce electricity for towns.",
        "Each dam changed the habitat of fish, so biologists now monitor salmon every year.",
        "Visitors often walk the old towpath that follows the water from the harbor to a lock.",
        "Along the way they pass mills, bridges and warehouses that once served a trading route.",
        "Today the restored buildings hold museums, cafes and workshops where artists sell work.",
        "Most of them open early in summer and close when the first frost arrives with autumn.",
    ]
    heading = "Chapter\xa01.\xa0The river and its valley"
    probes = {
        "whitespace-only lines between prose lines": "\n \n".join(prose),
        "a heading with no-break spaces, and its table-of-contents line": "\n".join(
            [heading.replace("\xa0", " "), *prose[:5], heading, *prose[5:]]
        ),
    }
    decided = run_worker(args.dt_python, "decide", [{"id": k, "text": t} for k, t in probes.items()], Path(args.work))
    print("\nKNOWN DIFFERENCES, probed (same text to both):")
    for r in decided:
        ours = ours_decide(probes[r["id"]], FINEWEB)
        print(
            f"  {r['id']}: datatrove {'kept' if r['kept'] else 'drops (' + r['rule'] + ': ' + r['reason'] + ')'}; "
            f"fineweb {'kept' if ours[0] else 'drops (' + ours[1] + ': ' + ours[2] + ')'}"
        )


def report_tokenizer(args, work: Path, pages: list[dict]) -> None:
    from crawl2serve.assets.corpus.en_words import DATATROVE_TERMINALS, DT_PUNCTUATION, word_tokens

    sets = run_worker(args.dt_python, "sets", [{"id": "sets"}], work)[0]
    print(
        f"\nSETS: datatrove's PUNCTUATION_SET == ours: {set(sets['punctuation']) == DT_PUNCTUATION} "
        f"({len(DT_PUNCTUATION)}); TERMINAL_PUNCTUATION == ours: "
        f"{set(sets['terminals']) == set(DATATROVE_TERMINALS)} ({len(DATATROVE_TERMINALS)})"
    )

    spacy = {r["id"]: r["tokens"] for r in read_jsonl(work / "spacy_tokens.jsonl")}
    docs = same_docs = tokens = same_tokens = 0
    for p in pages:
        for f in ("text", "traf_text"):
            theirs = spacy[f"{f}:{p['id']}"]
            mine = word_tokens(p[f])
            docs += 1
            same_docs += mine == theirs
            tokens += len(theirs)
            if mine == theirs:
                same_tokens += len(theirs)
            else:  # aligned tokens, by a diff of the two lists
                import difflib

                sm = difflib.SequenceMatcher(None, mine, theirs, autojunk=False)
                same_tokens += sum(b.size for b in sm.get_matching_blocks())
    print(
        f"\nTOKENIZER (ours vs spacy.blank('en'), datatrove's English word tokenizer): identical token lists on "
        f"{pct(same_docs, docs)} of {docs} texts; {pct(same_tokens, tokens)} of {tokens:,} tokens aligned"
    )


# ----- throughput -------------------------------------------------------------------------------------
def _clear_caches() -> None:
    from crawl2serve.assets.corpus.en_words import chunk_facts, tokens_of_chunk

    tokens_of_chunk.cache_clear()
    chunk_facts.cache_clear()


def report_throughput(args, pages: list[dict]) -> None:
    from crawl2serve.assets.corpus.cleaning import clean_document
    from crawl2serve.assets.corpus.extract import extract_html
    from crawl2serve.assets.corpus.thresholds import FINEWEB

    work = Path(args.work)
    texts = [{"id": p["id"], "text": p["text"]} for p in pages]
    e2e = [{"id": p["id"], "path": p["path"]} for p in pages[:: max(1, len(pages) // args.e2e_pages)]]
    print(
        f"\nTHROUGHPUT (one core each, alternating, {args.rounds} rounds; our caches cleared each round; "
        "datatrove timed inside its process, import excluded)"
    )
    ratios: dict[str, list[float]] = {"filters": [], "e2e": []}
    for rnd in range(args.rounds):
        _clear_caches()
        t = time.perf_counter()
        for r in texts:
            clean_document(r["text"], FINEWEB)
        ours_f = len(texts) / (time.perf_counter() - t)
        theirs_f = len(texts) / run_worker(args.dt_python, "time_filters", texts, work)[0]["seconds"]
        _clear_caches()
        t = time.perf_counter()
        for r in e2e:
            ex = extract_html("file://" + r["path"], Path(r["path"]).read_bytes(), "text/html; charset=utf-8")
            clean_document(ex.text, FINEWEB)
        ours_e = len(e2e) / (time.perf_counter() - t)
        theirs_e = len(e2e) / run_worker(args.dt_python, "time_e2e", e2e, work)[0]["seconds"]
        ratios["filters"].append(ours_f / theirs_f)
        ratios["e2e"].append(ours_e / theirs_e)
        print(
            f"  round {rnd + 1}: filters only {len(texts)} texts: ours {ours_f:,.0f} docs/s, datatrove "
            f"{theirs_f:,.0f} docs/s ({ours_f / theirs_f:.1f}x); end to end {len(e2e)} pages: ours "
            f"{ours_e:,.0f} docs/s, datatrove {theirs_e:,.1f} docs/s ({ours_e / theirs_e:.1f}x)"
        )
    for k, v in ratios.items():
        v = sorted(v)
        print(
            f"  {('filters only' if k == 'filters' else 'end to end'):<12} ours / datatrove: median "
            f"{v[len(v) // 2]:.1f}x (range {v[0]:.1f}-{v[-1]:.1f}x)"
        )


# ----- fixture ----------------------------------------------------------------------------------------
def write_fixture(args, pages: list[dict], path: str, n: int = 200, cap: int = 6000) -> None:
    """A seeded sample of ``n`` pages' extracted text, each cut at a line boundary before ``cap``
    characters, with datatrove's decision recorded on exactly that text (datatrove runs on the cut text),
    and on our normalization of it (``datatrove_kept_normalized``)."""
    rng = random.Random(f"fixture:{args.seed}")
    sample = sorted(rng.sample(pages, min(n, len(pages))), key=lambda p: p["id"])
    rows = []
    for p in sample:
        text = p["text"]
        if len(text) > cap:
            cut = text.rfind("\n", 0, cap)
            text = text[: cut if cut > 0 else cap]
        rows.append({"id": p["id"].split("/x/", 1)[-1], "text": text})
    from crawl2serve.assets.corpus.filters import normalize_text

    decided = {r["id"]: r for r in run_worker(args.dt_python, "decide", rows, Path(args.work))}
    normalized = {
        r["id"]: r
        for r in run_worker(
            args.dt_python,
            "decide",
            [{"id": r["id"], "text": normalize_text(r["text"])} for r in rows],
            Path(args.work),
        )
    }
    out = [
        {
            "id": r["id"],
            "text": r["text"],
            "datatrove_kept": decided[r["id"]]["kept"],
            "datatrove_rule": decided[r["id"]]["rule"],
            "datatrove_reason": decided[r["id"]]["reason"],
            "datatrove_kept_normalized": normalized[r["id"]]["kept"],
        }
        for r in rows
    ]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for o in out:
            fh.write(json.dumps(o, ensure_ascii=False) + "\n")
    print(f"wrote {len(out)} texts to {path} ({sum(o['datatrove_kept'] for o in out)} kept by datatrove)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages-root", default=PAGES_ROOT)
    ap.add_argument("--per-package", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/bench_datatrove")
    ap.add_argument("--dt-python", default=DT_PYTHON)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--e2e-pages", type=int, default=200)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--write-fixture", default=None, help="write the test fixture (JSONL.gz) here and stop")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    pages = prepare(args)
    if args.write_fixture:
        write_fixture(args, pages, args.write_fixture)
        return
    print(
        f"{len(pages)} English pages from {args.pages_root} ({args.per_package} per package at most, seed {args.seed})"
    )
    report_agreement(args, pages)
    report_extraction(pages)
    report_probes(args)
    report_tokenizer(args, Path(args.work), pages)
    if not args.skip_throughput:
        report_throughput(args, pages)


if __name__ == "__main__":
    main()
