"""Keep rates of the corpus rules on real translated documentation, per language, against English.

    python bench/bench_multilingual.py [--root /work/realdocs/x] [--code DIR] [--profiles published,documentation,fineweb]
                                       [--json OUT.json] [--write-fixture tests/corpus/fixtures/multilingual_pages.json.gz]

Pages. The Debian manuals unpacked under ``--root`` (debian-reference-*, debian-faq[-*],
developers-reference[-*], maint-guide[-*]; HTML) and GNOME's user help (gnome-user-docs: the Mallard
``.page`` files of ``gnome-help``, one folder per language, ``C`` = English), each extracted with
``assets.corpus.extract.extract_html``; from a ``.page`` file its ``<comment>`` (editors' notes, never
translated) and ``<info>`` (credits, licence, links) elements are removed first, as the help viewer
does not show them. A page's language is its package's or folder's (``zh-cn``,
``zh_CN`` -> ``zh``; ``zh-tw`` -> ``zh-Hant``; ``pt-br``, ``pt_BR`` -> ``pt``); its English original is
the page of the same manual and file name in the English package.

Translated pages. Translations are often partial. A page is **translated** when less than 20% of its
prose (lines of >= 5 whitespace tokens and >= 60% letters, by UTF-8 bytes) occurs verbatim in its English
original (the rule of ``bench/bench_language.py``); only translated pages are measured.

Measure, per profile: the English pages' keep rate; for each language, over its translated pages whose
English original is **kept**, the share kept (the English originals of those pages are kept by
construction: English's keep rate on them is 100%, so the gap is 100 - that share). Documents are
cleaned as ``clean_documents`` cleans them: ``clean_document(text, profile, language=...)`` with the
page's detected language (CLD2 over the whole text, ``assets.corpus.language.identify``; a mixed page by
its first language), when the code under test takes a language; without it otherwise.

``--speed`` times ``clean_document`` (published profile) on English, Latin-script and CJK pages instead.
``--code DIR`` measures another checkout (e.g. ``/work/main`` for "before"); by default this one.
``--write-fixture`` writes a small sample (for ``tests/corpus/test_multilingual.py``): for each profile
(published, documentation, fineweb), the languages with at least ``--fixture-min-pairs`` (15) translated pages
whose English original the profile keeps (English rules: the same before and after), and per language
the first ``--fixture-pages`` (12) of those pages, by manual and file name, of at most
``--fixture-chars`` (6,000) characters; the union over the profiles, and their English originals.
"""

from __future__ import annotations

import argparse
import gzip
import inspect
import json
import pathlib
import re
import sys
import time
from collections import defaultdict

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--root", default="/work/realdocs/x")
ap.add_argument("--code", default=str(pathlib.Path(__file__).resolve().parents[1]))
ap.add_argument("--profiles", default="published,documentation,fineweb")
ap.add_argument("--json", default=None)
ap.add_argument("--speed", action="store_true", help="only time clean_document per group of pages")
ap.add_argument("--write-fixture", default=None)
ap.add_argument("--fixture-pages", type=int, default=12)
ap.add_argument("--fixture-min-pairs", type=int, default=15)
ap.add_argument("--fixture-chars", type=int, default=6000)
ap.add_argument("--pages-cache", default=None, help="JSON(.gz) of extracted pages, written if missing")
args = ap.parse_args()
sys.path.insert(0, args.code)

from crawl2serve.assets.corpus.cleaning import clean_document  # noqa: E402
from crawl2serve.assets.corpus.extract import extract_html  # noqa: E402
from crawl2serve.assets.corpus.thresholds import PROFILES  # noqa: E402

try:
    from crawl2serve.assets.corpus.language import identify
except ImportError:  # a checkout without whole-text language id
    identify = None

TAKES_LANGUAGE = "language" in inspect.signature(clean_document).parameters
MANUALS = ("debian-reference", "debian-faq", "developers-reference", "maint-guide")
LANG_OF = {"zh-cn": "zh", "zh_CN": "zh", "zh-tw": "zh-Hant", "pt-br": "pt", "pt_BR": "pt", "C": "en"}
_SUFFIX = re.compile(r"\.(en|de|es|fr|it|ja|pt|pt-br|zh-cn|zh-tw|id|ko|nl|ru|ca|vi)\.html$")
GNOME = "gnome-user-docs"
_MALLARD_HIDDEN = re.compile(rb"<comment\b[^>]*>.*?</comment>|<info\b[^>]*>.*?</info>", re.DOTALL)


def real_pages(root: pathlib.Path) -> list[dict]:
    pages = []
    for pkg in sorted(root.iterdir()):
        name = re.sub(r"_[^_]+_all$", "", pkg.name)
        m = re.match(rf"({'|'.join(MANUALS)})(?:-(.+))?$", name)
        if m:
            lang = LANG_OF.get(m.group(2), m.group(2)) if m.group(2) else "en"
            files = [(f, f"{m.group(1)}/{_SUFFIX.sub('.html', f.name)}") for f in sorted(pkg.rglob("*.html"))]
        elif name == GNOME:
            files = []
            for d in sorted((pkg / "usr/share/help").iterdir()):
                if "@" in d.name:
                    continue
                for f in sorted((d / "gnome-help").glob("*.page")):
                    files.append((f, f"gnome-help/{f.name}", LANG_OF.get(d.name, d.name)))
        else:
            continue
        for item in files:
            f, key = item[0], item[1]
            page_lang = item[2] if len(item) > 2 else lang
            if f.is_symlink() or f.name in ("search.html", "genindex.html"):
                continue
            body = f.read_bytes()
            if f.suffix == ".page":  # what Yelp shows: no editorial comments, no metadata (credits, licence)
                body = _MALLARD_HIDDEN.sub(b"", body)
            ex = extract_html("https://docs.example.org/" + str(f.relative_to(root)), body, "text/html")
            pages.append(
                {"package": name, "lang": page_lang, "key": key, "path": str(f.relative_to(root)), "text": ex.text}
            )
    return pages


def _prose(text: str) -> list[str]:
    return [
        s
        for s in (x.strip() for x in text.splitlines())
        if len(s.split()) >= 5 and sum(c.isalpha() for c in s) >= 0.6 * len(s)
    ]


def classify(pages: list[dict]) -> None:
    english = {p["key"]: p["text"] for p in pages if p["lang"] == "en"}
    for p in pages:
        if p["lang"] == "en":
            p["cls"] = "english"
            continue
        original = {line.strip() for line in english.get(p["key"], "").splitlines()}
        prose = _prose(p["text"])
        total = sum(len(s.encode()) for s in prose) or 1
        share = sum(len(s.encode()) for s in prose if s in original) / total
        p["cls"] = (
            "no_original"
            if p["key"] not in english
            else "translated"
            if share < 0.2
            else "partial"
            if share < 0.5
            else "untranslated"
        )


def detected(text: str) -> str:
    if identify is not None:
        return identify(text).language
    return extract_html("https://x.org/", text.encode(), "text/plain").language


def kept(text: str, profile, language: str | None) -> bool:
    if TAKES_LANGUAGE:
        return clean_document(text, profile, language=language).text is not None
    return clean_document(text, profile).text is not None


def measure(pages: list[dict], profile_name: str) -> dict:
    profile = PROFILES[profile_name]
    english = [p for p in pages if p["lang"] == "en"]
    en_kept = {p["key"] for p in english if kept(p["text"], profile, "en")}
    by_lang: dict[str, list[bool]] = defaultdict(list)
    all_by_lang: dict[str, list[bool]] = defaultdict(list)
    dropped_by: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for p in pages:
        if p["lang"] == "en" or p["cls"] != "translated":
            continue
        if TAKES_LANGUAGE:
            res = clean_document(p["text"], profile, language=p["detected"])
        else:
            res = clean_document(p["text"], profile)
        ok = res.text is not None
        all_by_lang[p["lang"]].append(ok)
        if p["key"] in en_kept:
            by_lang[p["lang"]].append(ok)
            if not ok:
                dropped_by[p["lang"]][f"{res.dropped_by}:{res.reason}"] += 1
    en_with_translation = {p["key"] for p in pages if p["cls"] == "translated"}
    en_rate = sum(p["key"] in en_kept for p in english if p["key"] in en_with_translation)
    n_en = sum(p["key"] in en_with_translation for p in english)
    return {
        "english": {"pages": n_en, "kept": en_rate, "rate": round(100 * en_rate / max(n_en, 1), 1)},
        "languages": {
            lang: {
                "pairs": len(v),
                "kept": sum(v),
                "rate": round(100 * sum(v) / len(v), 1),
                "gap": round(100 - 100 * sum(v) / len(v), 1),
                "all_translated": len(all_by_lang[lang]),
                "all_rate": round(100 * sum(all_by_lang[lang]) / len(all_by_lang[lang]), 1),
                "top_drops": dict(sorted(dropped_by[lang].items(), key=lambda kv: -kv[1])[:3]),
            }
            for lang, v in sorted(by_lang.items())
        },
    }


def load_pages() -> list[dict]:
    cache = pathlib.Path(args.pages_cache) if args.pages_cache else None
    if cache and cache.exists():
        return json.loads(gzip.decompress(cache.read_bytes()))
    pages = real_pages(pathlib.Path(args.root))
    classify(pages)
    for p in pages:
        p["detected"] = detected(p["text"])
    if cache:
        cache.write_bytes(gzip.compress(json.dumps(pages, ensure_ascii=False).encode(), mtime=0))
    return pages


def write_fixture(pages: list[dict], out: str) -> None:
    """For each profile (published, documentation, fineweb): the languages with at least
    ``--fixture-min-pairs`` translated pages whose English original the profile keeps, and for each the
    first ``--fixture-pages`` of those pages (by manual and file name) of at most ``--fixture-chars``
    characters; the union over the profiles, plus the English originals."""
    english = {p["key"]: p for p in pages if p["lang"] == "en"}
    chosen: dict[str, dict[str, dict]] = defaultdict(dict)
    for name in [n for n in ("published", "documentation", "fineweb") if n in PROFILES]:
        keep_en = {k: kept(p["text"], PROFILES[name], "en") for k, p in english.items()}
        pairs: dict[str, list[dict]] = defaultdict(list)
        for p in sorted(pages, key=lambda p: (p["lang"], p["key"])):
            if p["cls"] == "translated" and keep_en[p["key"]]:
                pairs[p["lang"]].append(p)
        for lang, v in pairs.items():
            if len(v) >= args.fixture_min_pairs:
                for p in [p for p in v if len(p["text"]) <= args.fixture_chars][: args.fixture_pages]:
                    chosen[lang][p["path"]] = p
    chosen = {lang: sorted(v.values(), key=lambda p: p["key"]) for lang, v in chosen.items()}
    keys = sorted({p["key"] for v in chosen.values() for p in v})
    doc = {
        "source": "Debian manuals (debian-reference, debian-faq, developers-reference, maint-guide) and GNOME user help "
        "(gnome-user-docs 43.0), extracted with assets.corpus.extract.extract_html; see README.md here",
        "english": {k: {"path": english[k]["path"], "text": english[k]["text"]} for k in keys},
        "translations": [
            {"lang": p["lang"], "key": p["key"], "path": p["path"], "detected": p["detected"], "text": p["text"]}
            for lang in sorted(chosen)
            for p in chosen[lang]
        ],
    }
    data = json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=0).encode()
    pathlib.Path(out).write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    print(
        f"fixture {out}: {len(doc['translations'])} translations in {len(chosen)} languages, {len(keys)} English "
        f"originals, {pathlib.Path(out).stat().st_size / 1024:.0f} KB"
    )


def speed(pages: list[dict]) -> None:
    """Documents/s of ``clean_document`` (published profile), best of 3 passes, per group of pages."""
    profile = PROFILES["published"]
    groups = {
        "English": [p for p in pages if p["lang"] == "en"],
        "Latin-script translations": [
            p for p in pages if p["lang"] in ("de", "fr", "es", "pt") and p["cls"] == "translated"
        ],
        "Chinese and Japanese": [p for p in pages if p["lang"] in ("zh", "zh-Hant", "ja") and p["cls"] == "translated"],
    }
    for name, group in groups.items():
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for p in group:
                kept(p["text"], profile, p["detected"])
            best = min(best, time.perf_counter() - t)
        chars = sum(len(p["text"]) for p in group)
        print(f"speed {name}: {len(group)} docs, {len(group) / best:,.0f} docs/s, {chars / best / 1e6:.2f} M chars/s")


def main() -> None:
    t0 = time.monotonic()
    pages = load_pages()
    if args.speed:
        speed(pages)
        return
    n_tr = sum(p["cls"] == "translated" for p in pages)
    print(
        f"code: {args.code} (clean_document takes a language: {TAKES_LANGUAGE}); {len(pages)} pages, "
        f"{sum(p['lang'] == 'en' for p in pages)} English, {n_tr} translated ({time.monotonic() - t0:.0f}s)"
    )
    results = {}
    for name in args.profiles.split(","):
        if name not in PROFILES:
            print(f"profile {name}: not in this checkout")
            continue
        t = time.monotonic()
        r = results[name] = measure(pages, name)
        e = r["english"]
        print(f"\n## {name}: English kept {e['kept']}/{e['pages']} = {e['rate']}% ({time.monotonic() - t:.0f}s)")
        print(f"{'lang':8} {'pairs':>5} {'kept':>5} {'rate%':>6} {'gap':>5}  {'all tr.':>7} {'rate%':>6}  top drops")
        for lang, v in r["languages"].items():
            print(
                f"{lang:8} {v['pairs']:5} {v['kept']:5} {v['rate']:6.1f} {v['gap']:5.1f}  {v['all_translated']:7} "
                f"{v['all_rate']:6.1f}  {v['top_drops']}"
            )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1, ensure_ascii=False))
    if args.write_fixture:
        write_fixture(pages, args.write_fixture)


if __name__ == "__main__":
    main()
