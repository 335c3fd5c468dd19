"""Language id on real multilingual documentation: accuracy, half-translated pages, docs/s.

    python bench/bench_language.py [--root /work/realdocs/x] [--fixtures tests/corpus/fixtures]

Pages: every HTML page of the Debian manuals unpacked under ``--root`` (debian-reference-*,
debian-faq[-*], developers-reference[-*], maint-guide[-*]: the same manuals in English and 16
translations) plus python3.11-doc and sphinx-doc (English), extracted with
``assets.corpus.extract.extract_html``, kept when they hold at least 200 words (whitespace tokens
plus one word per two CJK characters).

Truth. A page's language is its package's (``debian-reference-fr`` -> ``fr``, ``-zh-tw`` ->
``zh-Hant``, ``-pt-br`` -> ``pt``; English packages -> ``en``), except that translations are often
partial: for each translated page the share of its prose lines (>= 5 words, >= 60% letters, by UTF-8
bytes) that occur verbatim in the English original page puts it in one of three classes:

* ``translated`` (< 20% verbatim English prose): correct verdict = the package language;
* ``partial`` (20-50%): correct = the package language or ``mixed``;
* ``untranslated`` (>= 50%): correct = ``en`` or ``mixed``.

English pages: correct = ``en``.

Half-translated pages: for each translated page with an English original, the original's non-empty
lines and the translation's lines that are not verbatim English alternate (E1, T1, E2, T2, ...) up to
the shorter of the two; pages of >= 200 words are kept. A page is flagged when its verdict is
``mixed``.

"main" is the rule main had (CLD2 on the first 4,000 characters, HTML mode, no ``mixed``
verdict), reproduced here for comparison; "new" is ``assets.corpus.extract.detect_language``.
docs/s: the best of 3 passes over the same real pages, one process.
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import random
import re
import sys
import time

import pycld2

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from crawl2serve.assets.corpus.extract import detect_language, extract_html

MANUALS = ("debian-reference", "debian-faq", "developers-reference", "maint-guide")
ENGLISH_PACKAGES = ("python3.11-doc", "sphinx-doc")
LANG_OF_SUFFIX = {"zh-cn": "zh", "zh-tw": "zh-Hant", "pt-br": "pt"}
_SUFFIX = r"en|de|es|fr|it|ja|pt|pt-br|zh-cn|zh-tw|id|ko|nl|ru|ca|vi"
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
MIN_WORDS = 200


def words(text: str) -> int:
    return len(text.split()) + len(_CJK.findall(text)) // 2


def main_rule(text: str) -> str:
    """main's detect_language: CLD2 (HTML mode) on the first 4,000 characters, no mixed verdict."""
    try:
        _, _, details = pycld2.detect(_CTRL.sub("", text[:4000]))
    except pycld2.error:
        return "unknown"
    return "unknown" if details[0][1] == "un" else details[0][1]


def new_rule(text: str) -> str:
    return detect_language(text)[0]


def real_pages(root: pathlib.Path) -> list[dict]:
    pages = []
    for pkg in sorted(root.iterdir()):
        name = re.sub(r"_[^_]+_all$", "", pkg.name)
        m = re.match(rf"({'|'.join(MANUALS)})(?:-(.+))?$", name)
        if not m and name not in ENGLISH_PACKAGES:
            continue
        suffix = m.group(2) if m else None
        lang = LANG_OF_SUFFIX.get(suffix, suffix) if suffix else "en"
        for f in sorted(pkg.rglob("*.html")):
            if f.is_symlink() or f.name in ("search.html", "genindex.html"):
                continue
            ex = extract_html("https://docs.example.org/" + str(f.relative_to(root)), f.read_bytes(), "text/html")
            stem = re.sub(rf"\.({_SUFFIX})\.html$", ".html", f.name)
            pages.append(
                {
                    "package": name,
                    "lang": lang,
                    "key": f"{m.group(1)}/{stem}" if m else None,
                    "path": str(f.relative_to(root)),
                    "text": ex.text,
                }
            )
    return pages


def _prose(text: str) -> list[str]:
    out = []
    for line in (s.strip() for s in text.splitlines()):
        if len(line.split()) >= 5 and sum(c.isalpha() for c in line) >= 0.6 * len(line):
            out.append(line)
    return out


def classify(pages: list[dict]) -> None:
    """Adds ``cls`` (english / translated / partial / untranslated) and ``verbatim_en`` to each page."""
    english = {p["key"]: p["text"] for p in pages if p["lang"] == "en" and p["key"]}
    for p in pages:
        if p["lang"] == "en":
            p["cls"], p["verbatim_en"] = "english", 0.0
            continue
        original = {line.strip() for line in english.get(p["key"], "").splitlines()}
        prose = _prose(p["text"])
        total = sum(len(s.encode()) for s in prose) or 1
        share = sum(len(s.encode()) for s in prose if s in original) / total
        p["verbatim_en"] = share
        p["cls"] = "translated" if share < 0.2 else "partial" if share < 0.5 else "untranslated"


def half_translated(pages: list[dict]) -> list[dict]:
    english = {p["key"]: p["text"] for p in pages if p["lang"] == "en" and p["key"]}
    out = []
    for p in pages:
        if p["lang"] == "en" or p["key"] not in english:
            continue
        e = [s for s in english[p["key"]].splitlines() if s.strip()]
        seen = {s.strip() for s in e}
        t = [s for s in p["text"].splitlines() if s.strip() and s.strip() not in seen]
        text = "\n\n".join(x for pair in zip(e, t) for x in pair)
        if words(text) >= MIN_WORDS:
            out.append({"package": p["package"], "key": p["key"], "langs": ["en", p["lang"]], "text": text})
    return out


def correct(page: dict, verdict: str) -> bool:
    cls, lang = page["cls"], page["lang"]
    if cls in ("english", "translated"):
        return verdict == lang
    if cls == "partial":
        return verdict in (lang, "mixed")
    return verdict in ("en", "mixed")


def evaluate(rule, pages: list[dict], half: list[dict]) -> dict:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        verdicts = [rule(p["text"]) for p in pages]
        best = min(best, time.perf_counter() - t0)
    res = {"docs_per_s": round(len(pages) / best), "accuracy": sum(map(correct, pages, verdicts)) / len(pages)}
    for cls in ("english", "translated", "partial", "untranslated"):
        idx = [i for i, p in enumerate(pages) if p["cls"] == cls]
        res[cls] = (
            len(idx),
            sum(correct(pages[i], verdicts[i]) for i in idx) / max(len(idx), 1),
            sum(verdicts[i] == "mixed" for i in idx) / max(len(idx), 1),
        )
    hv = [rule(h["text"]) for h in half]
    res["half_flagged"] = sum(v == "mixed" for v in hv) / len(hv)
    res["half_as_en"] = sum(v == "en" for v in hv) / len(hv)
    res["errors"] = [
        (p["package"], p["key"] or p["path"], p["cls"], v) for p, v in zip(pages, verdicts) if not correct(p, v)
    ]
    return res


def _head(text: str, chars: int) -> str:
    """The text up to the last line break before ``chars`` characters."""
    if len(text) <= chars:
        return text
    cut = text.rfind("\n", 0, chars)
    return text[: cut if cut > 0 else chars]


def write_fixtures(pages: list[dict], half: list[dict], out: pathlib.Path) -> None:
    """tests/corpus/fixtures/language_pages.json.gz: the real pages main got wrong (whole text, at
    most 12k characters, one per manual page), the shortest page of each language (English: of the
    Debian manuals) whose class is english or translated, whole, and 24 half-translated pages (their first 5k characters) drawn with a fixed seed."""
    rng = random.Random(13)
    wrong, seen = [], set()
    for p in pages:
        if not correct(p, main_rule(p["text"])) and len(p["text"]) <= 12_000 and p["key"] not in seen:
            wrong.append(p)
            seen.add(p["key"])
    mono = {}
    for p in sorted(pages, key=lambda p: (p["lang"], len(p["text"]), p["path"])):
        if p["cls"] in ("english", "translated") and p["lang"] not in mono and p["key"]:
            mono[p["lang"]] = p
    sample = rng.sample(half, 24)
    keep = ("package", "lang", "cls", "path", "verbatim_en")
    doc = {
        "real_main_wrong": [{**{k: p[k] for k in keep}, "text": p["text"]} for p in wrong],
        "monolingual": [{**{k: p[k] for k in keep}, "text": p["text"]} for p in mono.values()],
        "half_translated": [
            {"package": h["package"], "key": h["key"], "langs": h["langs"], "text": _head(h["text"], 5000)}
            for h in sample
        ],
    }
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, ensure_ascii=False, indent=0, sort_keys=True)
    (out / "language_pages.json.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
    print(f"fixtures: {len(wrong)} real pages main got wrong, {len(mono)} monolingual, {len(sample)} half-translated")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/work/realdocs/x", type=pathlib.Path)
    ap.add_argument("--fixtures", type=pathlib.Path)
    a = ap.parse_args()
    pages = [p for p in real_pages(a.root) if words(p["text"]) >= MIN_WORDS]
    classify(pages)
    half = half_translated(pages)
    print(f"{len(pages)} real pages >= {MIN_WORDS} words; {len(half)} half-translated pages")
    for name, rule in (("main", main_rule), ("new", new_rule)):
        r = evaluate(rule, pages, half)
        print(
            f"{name}: accuracy {r['accuracy']:.4f}  half-translated flagged {r['half_flagged']:.4f} "
            f"(labelled en: {r['half_as_en']:.4f})  {r['docs_per_s']} docs/s"
        )
        for cls in ("english", "translated", "partial", "untranslated"):
            n, acc, mixed = r[cls]
            print(f"    {cls:13s} n={n:4d} correct {acc:.4f}  mixed {mixed:.3f}")
        for e in r["errors"]:
            print("    error:", *e)
    if a.fixtures:
        write_fixtures(pages, half, a.fixtures)


if __name__ == "__main__":
    main()
