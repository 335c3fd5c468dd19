"""Extraction quality on real documentation sites: encodings, mojibake, navigation lines, content kept.

    .venv/bin/python bench/bench_extract_realdocs.py --root DIR --out new.jsonl            # one record per page
    .venv/bin/python bench/bench_extract_realdocs.py --root DIR --out old.jsonl --code OLD_CHECKOUT
    .venv/bin/python bench/bench_extract_realdocs.py --compare old.jsonl new.jsonl         # the tables
    .venv/bin/python bench/bench_extract_realdocs.py --root DIR --time-only                # throughput run
    .venv/bin/python bench/bench_extract_realdocs.py --root DIR --warc-read /tmp/docs.warc.gz   # reader speed

DIR holds unpacked Debian documentation packages (``apt-get download PKG && dpkg-deb -x PKG.deb DIR/PKG``):
DocBook (postgresql-doc-15, debian-reference-*, maint-guide*, debian-faq*), Sphinx (python3.11-doc,
sphinx-doc, developers-reference*), Javadoc (openjdk-17-doc). Pages are fed as a plain file server sends
them: ``Content-Type: text/html`` with no charset, so the page's own declaration (or a guess) decides.
``--code`` imports ``assets.corpus.extract`` from another checkout (e.g. ``git worktree add /tmp/old main``),
so before/after come from the same script and the same pages.

Navigation lines are found by text markers written independently of the extractor's selectors:
  words   a line made only of navigation words (Prev/Up/Next/Home, Sphinx's "index modules | next |",
          their translations), or a table row (tab-separated cells) with two cells that are Prev/Up/Next/Home,
          e.g. DocBook's ``Prev  Up  SQL Commands  Home  Next``;
  titles  a table row (a line with two or more tabs) with a cell equal to the title of the page's
          ``<link rel=prev|next|up title=...>`` — DocBook's footer ``Chapter 1. ...  Chapter 3. ...``;
  blank-row  a table row of three or more blank cells (navigation by image links: ``\xa0\t\t\xa0\t\t\xa0``);
  sphinx  sidebar and footer labels: Previous topic, Next topic, This Page, Quick search, Show Source,
          Created using Sphinx, and their translations;
  javadoc Skip navigation links, ``Summary:``/``Detail:`` rows, three or more consecutive top-bar
          labels (Overview, Module, Package, Class, Use, Tree, ...), "Report a bug or suggest an enhancement".
Content kept (--compare): the words of the OLD run's lines that no marker flags, as a multiset, and the share
of them that the NEW run's text still holds (1.0: the change removed navigation only). Also recorded: the
share of the words of the page's content element (DocBook: the body without navheader/navfooter; Sphinx:
``div.body``; Javadoc: ``main``, read with selectolax) that the text holds ("content_recall").
"""

from __future__ import annotations

import argparse
import codecs
import collections
import hashlib
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

_SPECIALS = (
    "\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201a"
    "\u201c-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122"
)  # bytes 0x80-0x9f in windows-1252
_CONT = "\u0080-\u00bf" + _SPECIALS  # a continuation byte as windows-1252 or latin-1 shows it
_CONT_NO_NBSP = "\u0080-\u009f\u00a1-\u00bf" + _SPECIALS
# UTF-8 read as windows-1252/latin-1: a 2-byte lead (Â Ã: Latin-1, Ð Ñ: Cyrillic) or a 3-byte lead (à-ï) and
# continuation bytes ("Ã©", "â€”", "Ð¿"). "é\xa0»" (French spacing) is not counted: no NBSP after a 3-byte lead.
MOJIBAKE = re.compile(f"[\u00c2\u00c3\u00d0\u00d1][{_CONT}]|[\u00e0-\u00ef][{_CONT_NO_NBSP}][{_CONT}]")
NAV_WORDS = {
    "Prev",
    "Previous",
    "Next",
    "Up",
    "Home",
    "index",
    "Index",
    "modules",
    "next",
    "previous",
    "Navigation",
    "weiter",
    "zurück",
    "suivant",
    "précédent",
    "siguiente",
    "anterior",
    "successivo",
    "precedente",
    "далее",
    "назад",
    "次へ",
    "前へ",
    "索引",
    "モジュール",
    "Индекс",
    "Índice",
    "Indice",
}
DOCBOOK_WORDS = {"Prev", "Next", "Up", "Home"}
SPHINX_LABELS = {
    "Previous topic",
    "Next topic",
    "This Page",
    "Quick search",
    "Show Source",
    "Report a Bug",
    "Vorheriges Thema",
    "Nächstes Thema",
    "Diese Seite",
    "Schnellsuche",
    "Quellcode anzeigen",
    "Sujet précédent",
    "Sujet suivant",
    "Cette page",
    "Recherche rapide",
    "Montrer le code source",
    "Argomento precedente",
    "Argomento successivo",
    "Questa pagina",
    "Ricerca veloce",
    "Mostra sorgente",
    "前のトピックへ",
    "次のトピックへ",
    "このページ",
    "クイック検索",
    "ソースコードを表示",
    "Предыдущий раздел",
    "Следующий раздел",
    "Эта страница",
    "Быстрый поиск",
    "Исходный текст",
}
SPHINX_FOOTER = re.compile(
    r"(?:^|\. )(?:Created using|Erstellt mit|Créé en utilisant|Creato con|Создано с помощью) "
    r"Sphinx \d|Sphinx \d[\d.]* (?:で|を使用)"
)
JAVADOC_BAR = {
    "Overview",
    "Module",
    "Package",
    "Class",
    "Use",
    "Tree",
    "Preview",
    "New",
    "Deprecated",
    "Index",
    "Help",
    "Search",
}
JAVADOC_LINE = re.compile(
    r"^(Skip navigation links|(Summary|Detail):( ?(\w+ \| )*\w+)?|SEARCH:?|"
    r"Report a bug or suggest an enhancement)$"
)
_SPLIT = re.compile(r"[\s|»«•·]+")
_WORD = re.compile(r"\w+")


def site_of(top: str) -> tuple[str, str]:
    """(site, generator) of an unpacked package directory name."""
    name = top.split("_")[0]
    for prefix, gen in (
        ("postgresql-doc", "docbook"),
        ("debian-reference", "docbook"),
        ("maint-guide", "docbook"),
        ("debian-faq", "docbook"),
        ("python3", "sphinx"),
        ("sphinx-doc", "sphinx"),
        ("developers-reference", "sphinx"),
        ("openjdk", "javadoc"),
    ):
        if name.startswith(prefix):
            return prefix, gen
    return name, ""


def load_pages(root: str, javadoc_every: int) -> list[tuple[str, str, str, bytes]]:
    pages = []
    for top in sorted(os.listdir(root)):
        site, gen = site_of(top)
        if not gen:
            continue
        files = sorted(str(p) for p in Path(root, top).rglob("*.html") if p.is_file())
        if gen == "javadoc":
            files = files[::javadoc_every]
        pages += [(site, gen, f, Path(f).read_bytes()) for f in files]
    return pages


def link_titles(tree) -> set[str]:
    out = set()
    for node in tree.css('link[rel="prev"][title], link[rel="next"][title], link[rel="up"][title]'):
        t = " ".join((node.attributes.get("title") or "").split())
        if t:
            out.add(t)
    return out


def content_words(tree, gen: str) -> list[str]:
    if gen == "docbook":
        for n in tree.css("div.navheader, div.navfooter"):
            n.decompose()
        node = tree.body
    elif gen == "sphinx":
        node = tree.css_first("div.body") or tree.css_first('[role="main"]')
    else:
        node = tree.css_first("main")
    if node is None:
        return []
    return _WORD.findall(node.text(separator=" ").lower())


def nav_lines(text: str, titles: set[str]) -> collections.Counter:
    found = collections.Counter()
    bar_run = 0
    for raw in text.split("\n"):
        line = " ".join(raw.split()).strip("• ")
        tokens = [t for t in _SPLIT.split(raw) if t]
        cells = [" ".join(c.split()) for c in raw.split("\t") if c.strip()]
        if line in JAVADOC_BAR:
            bar_run += 1
            if bar_run == 3:
                found["javadoc"] += 1
        else:
            bar_run = 0
        if not line:
            if raw.count("\t") >= 4:  # a navigation table row of image links: "\xa0\t\t\xa0\t\t\xa0"
                found["blank-row"] += 1
            continue
        rest = [c for c in cells if c not in titles]
        rest_tokens = [t for c in rest for t in _SPLIT.split(c) if t]
        if (
            tokens
            and rest_tokens
            and all(t in NAV_WORDS for t in rest_tokens)
            and (len(rest_tokens) >= 2 or (rest_tokens[0] in DOCBOOK_WORDS and "\t" in raw))
        ) or sum(c in DOCBOOK_WORDS for c in cells) >= 2:
            found["words"] += 1
        elif raw.count("\t") >= 2 and any(c in titles for c in cells):
            found["titles"] += 1
        elif line in SPHINX_LABELS or SPHINX_FOOTER.search(line):
            found["sphinx"] += 1
        elif JAVADOC_LINE.match(line):
            found["javadoc"] += 1
    return found


def garbled_lines(text: str, encoding: str) -> int:
    """Lines that are UTF-8 read as ``encoding``: non-ASCII, and their bytes in that encoding are valid UTF-8."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        return 0
    if codec in ("utf-8", "utf-16-le", "utf-16-be"):
        return 0
    n = 0
    for line in text.split("\n"):
        if not line.isascii():
            try:
                line.encode(codec).decode("utf-8")
                n += 1
            except UnicodeError:
                pass
    return n


def measure(pages, extract_html) -> list[dict]:
    from selectolax.lexbor import LexborHTMLParser as HTMLParser

    out = []
    for site, gen, path, body in pages:
        t0 = time.perf_counter()
        ex = extract_html("http://127.0.0.1:8000/" + path, body, "text/html")
        seconds = time.perf_counter() - t0
        tree = HTMLParser(body)
        region = content_words(HTMLParser(body), gen)
        kept = collections.Counter(_WORD.findall(ex.text.lower()))
        want = collections.Counter(region)
        recall = sum(min(c, kept[w]) for w, c in want.items()) / max(len(region), 1)
        nav = nav_lines(ex.text, link_titles(tree))
        out.append(
            {
                "site": site,
                "gen": gen,
                "path": path,
                "bytes": len(body),
                "encoding": ex.encoding,
                "text_hash": hashlib.blake2b(ex.text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest(),
                "words": len(_WORD.findall(ex.text)),
                "mojibake": len(MOJIBAKE.findall(ex.text)),
                "replacement": ex.text.count("\ufffd"),
                "garbled_lines": garbled_lines(ex.text, ex.encoding),
                "nav": dict(nav),
                "content_words": len(region),
                "content_recall": round(recall, 4),
                "seconds": seconds,
                "text": ex.text,
                "titles": sorted(link_titles(tree)),
            }
        )
    return out


def _no_nav(rec: dict) -> list[str]:
    """The record's lines that no navigation marker flags."""
    titles = set(rec.get("titles", ()))
    return [line for line in rec["text"].split("\n") if not nav_lines(line, titles)]


NAV_ELEMENTS = (
    "div.navheader, div.navfooter, div.related, div.sphinxsidebar, div.footer, header, nav, footer, "
    "div.topNav, div.subNav, div.bottomNav"
)


def content_kept(old: dict, new: dict) -> float:
    """Share of the words of old's non-navigation lines (a multiset) that new's text holds; a word that new
    lacks but the page's navigation elements hold (e.g. DocBook's header row repeating the page title) is
    counted as navigation, not as lost content."""
    want = collections.Counter(w for line in _no_nav(old) for w in _WORD.findall(line.lower()))
    have = collections.Counter(_WORD.findall(new["text"].lower()))
    total = sum(want.values())
    if not total:
        return 1.0
    lost = want - have
    if lost:
        from selectolax.lexbor import LexborHTMLParser

        tree = LexborHTMLParser(Path(old["path"]).read_bytes())
        nav = collections.Counter(
            w for node in tree.css(NAV_ELEMENTS) for w in _WORD.findall(node.text(separator=" ").lower())
        )
        lost -= nav
    return 1 - sum(lost.values()) / total


def compare(old_path: str, new_path: str) -> None:
    def load(p):
        return {r["path"]: r for r in map(json.loads, open(p, encoding="utf-8"))}

    old, new = load(old_path), load(new_path)
    paths = [p for p in old if p in new]
    print(f"{len(paths)} pages in both runs\n")
    print(
        "| site | pages | encoding differs (text differs) | mojibake pages before → after | U+FFFD pages before → after "
        "| pages keeping navigation before → after | garbled pages before → after "
        "| old content words kept, median (min) | pages keeping < 99% |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    by_site = collections.defaultdict(list)
    for p in paths:
        by_site[old[p]["site"]].append(p)
    totals = collections.Counter()
    recall = {}
    for site, ps in sorted(by_site.items(), key=lambda kv: -len(kv[1])):
        o = [old[p] for p in ps]
        n = [new[p] for p in ps]
        diff = sum(a["encoding"] != b["encoding"] for a, b in zip(o, n))
        tdiff = sum(a["encoding"] != b["encoding"] and _no_nav(a) != _no_nav(b) for a, b in zip(o, n))
        kept = [content_kept(a, b) for a, b in zip(o, n)]
        row = {
            "pages": len(ps),
            "diff": diff,
            "tdiff": tdiff,
            "moj_o": sum(r["mojibake"] > 0 for r in o),
            "moj_n": sum(r["mojibake"] > 0 for r in n),
            "rep_o": sum(r["replacement"] > 0 for r in o),
            "rep_n": sum(r["replacement"] > 0 for r in n),
            "nav_o": sum(bool(r["nav"]) for r in o),
            "nav_n": sum(bool(r["nav"]) for r in n),
            "garb_o": sum(r["garbled_lines"] > 0 for r in o),
            "garb_n": sum(r["garbled_lines"] > 0 for r in n),
            "lost": sum(k < 0.99 for k in kept),
        }
        totals.update(row)
        recall[site] = (
            statistics.median(r["content_recall"] for r in o),
            statistics.median(r["content_recall"] for r in n),
        )
        print(
            f"| {site} | {row['pages']} | {diff} ({tdiff}) | {row['moj_o']} → {row['moj_n']} | {row['rep_o']} → "
            f"{row['rep_n']} | {row['nav_o']} ({100 * row['nav_o'] / len(ps):.1f}%) → {row['nav_n']} "
            f"({100 * row['nav_n'] / len(ps):.1f}%) | {row['garb_o']} → {row['garb_n']} "
            f"| {statistics.median(kept):.4f} ({min(kept):.3f}) "
            f"| {row['lost']} |"
        )
    print(
        f"| **all** | {totals['pages']} | {totals['diff']} ({totals['tdiff']}) | {totals['moj_o']} → "
        f"{totals['moj_n']} | {totals['rep_o']} → {totals['rep_n']} | {totals['nav_o']} → {totals['nav_n']} | "
        f"{totals['garb_o']} → {totals['garb_n']} | | {totals['lost']} |"
    )
    print(
        "\ncontent_recall median before → after:", ", ".join(f"{s} {a:.3f} → {b:.3f}" for s, (a, b) in recall.items())
    )
    enc = collections.Counter(
        (old[p]["encoding"], new[p]["encoding"]) for p in paths if old[p]["encoding"] != new[p]["encoding"]
    )
    print(
        "\nencoding changes (before → after: pages):", ", ".join(f"{a} → {b}: {c}" for (a, b), c in enc.most_common())
    )
    markers = collections.Counter()
    for p in paths:
        markers.update({f"{k} (after)": 1 for k in new[p]["nav"]})
        markers.update({f"{k} (before)": 1 for k in old[p]["nav"]})
    print("pages per navigation marker:", dict(sorted(markers.items())))
    for label, runs in (("before", old), ("after", new)):
        secs = sum(runs[p]["seconds"] for p in paths)
        print(f"extract_html {label}: {len(paths) / secs:.0f} pages/s (sum of per-page times, {secs:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="/work/realdocs/x")
    ap.add_argument("--out")
    ap.add_argument(
        "--code",
        default=str(Path(__file__).resolve().parents[1]),
        help="checkout whose assets.corpus.extract is measured",
    )
    ap.add_argument("--javadoc-every", type=int, default=5, help="take every n-th Javadoc page")
    ap.add_argument("--time-only", action="store_true", help="only extract every page once (for timing)")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
    ap.add_argument(
        "--warc-read",
        metavar="WARC",
        help="time iter_records over WARC (written from the pages first if it does not exist)",
    )
    args = ap.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    sys.path.insert(0, args.code)
    from crawl2serve.assets.corpus.extract import extract_html

    if args.warc_read:
        from crawl2serve.assets.crawl.warc import iter_records

        if not os.path.exists(args.warc_read):
            from tests.support import warc_bytes

            Path(args.warc_read).write_bytes(
                warc_bytes(
                    [
                        ("http://127.0.0.1:8000/" + p, "response", b)
                        for _, _, p, b in load_pages(args.root, args.javadoc_every)
                    ]
                )
            )
        t0 = time.perf_counter()
        with open(args.warc_read, "rb") as f:
            n = sum(1 for _ in iter_records(f))
        print(f"{n} records read in {time.perf_counter() - t0:.3f} s")
        return
    pages = load_pages(args.root, args.javadoc_every)
    if args.time_only:
        t0 = time.perf_counter()
        for _, _, path, body in pages:
            extract_html("http://127.0.0.1:8000/" + path, body, "text/html")
        print(f"{len(pages)} pages in {time.perf_counter() - t0:.2f} s")
        return
    records = measure(pages, extract_html)
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    print(f"{len(records)} pages → {args.out}")


if __name__ == "__main__":
    main()
