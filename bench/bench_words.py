"""ICU word segmentation (assets/corpus/words.py) against reference segmenters, on real text.

    python bench/bench_words.py --pages PAGES.json.gz [--thai-ftl DIR]

Needs, besides the project: ``jieba`` (Chinese), ``janome`` (Japanese) and ``pythainlp`` (Thai, its
``newmm`` dictionary segmenter), each dictionary-based with its dictionary in its wheel. They are
measurement references only, not project dependencies (together ~310 MB installed, against ICU's
~45 MB for all three scripts): install them in a scratch environment.

Text. Chinese and Japanese: the translated Debian manual pages (debian-reference, debian-faq,
developers-reference, maint-guide: zh-cn, zh-tw, ja) and GNOME help pages, from the pages file that
``bench/bench_multilingual.py --pages-cache`` writes. Thai: Debian ships no Thai manual; the Thai strings
of Firefox's Thai language pack (``firefox-esr-l10n-th``: the values of its ``.ftl`` files holding Thai
and at least 40 characters, no markup or placeables), under ``--thai-ftl``.

Measure. Only the inside of runs of the script's characters is compared (Han and kana for Japanese, Han
for Chinese, Thai for Thai), where spaces give no word boundary: a boundary is an offset strictly inside
such a run. Precision / recall / F1 of ICU's boundaries against the reference's, the ratio of words
(ICU / reference) inside the runs, and each segmenter's speed (characters of the whole texts per second,
one process, best of 3 passes).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import pathlib
import re
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from crawl2serve.assets.corpus.words import icu_boundaries

RUNS = {
    "zh": re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"),
    "ja": re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3005]+"),
    "th": re.compile(r"[\u0e00-\u0e7f]+"),
}


def offsets(text: str, pieces: list[str]) -> list[int]:
    """Boundary offsets of ``pieces`` laid over ``text`` (pieces may drop whitespace)."""
    out, at = [0], 0
    for p in pieces:
        if not p:
            continue
        j = text.find(p, at)
        if j < 0:
            continue
        if j != at:
            out.append(j)
        at = j + len(p)
        out.append(at)
    return out


def interior(text: str, bounds, runs: re.Pattern[str]) -> set[int]:
    spans = [(m.start(), m.end()) for m in runs.finditer(text)]
    inside = set()
    import bisect

    starts = [s for s, _ in spans]
    for b in {int(x) for x in bounds}:
        i = bisect.bisect_right(starts, b) - 1
        if i >= 0 and spans[i][0] < b < spans[i][1]:
            inside.add(b)
    return inside


def n_run_words(text: str, inside: set[int], runs: re.Pattern[str]) -> int:
    return sum(1 for _ in runs.finditer(text)) + len(inside)


def reference(lang: str):
    if lang == "zh":
        import jieba

        jieba.setLogLevel(60)
        jieba.initialize()
        return "jieba 0.42 (HMM off)", lambda t: list(jieba.cut(t, HMM=False))
    if lang == "ja":
        from janome.tokenizer import Tokenizer

        tok = Tokenizer()
        return "janome", lambda t: list(tok.tokenize(t, wakati=True))
    from pythainlp.tokenize import word_tokenize

    return "pythainlp newmm", lambda t: word_tokenize(t, engine="newmm", keep_whitespace=True)


def speed(fn, texts: list[str]) -> float:
    n = sum(map(len, texts))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for x in texts:
            fn(x)
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", required=True)
    ap.add_argument("--thai-ftl", default=None)
    args = ap.parse_args()
    pages = json.loads(gzip.decompress(pathlib.Path(args.pages).read_bytes()))
    sets = {
        "zh": [p["text"] for p in pages if p["lang"] in ("zh", "zh-Hant") and p.get("cls") == "translated"],
        "ja": [p["text"] for p in pages if p["lang"] == "ja" and p.get("cls") == "translated"],
    }
    if args.thai_ftl:
        vals = []
        for f in sorted(glob.glob(f"{args.thai_ftl}/**/*.ftl", recursive=True)):
            for line in pathlib.Path(f).read_text(encoding="utf-8").splitlines():
                m = re.match(r"\s*[\w.-]*\s*=\s*(.+)$", line)
                if (
                    m
                    and RUNS["th"].search(m.group(1))
                    and len(m.group(1).strip()) >= 40
                    and not re.search(r"[{<]", m.group(1))
                ):
                    vals.append(m.group(1).strip())
        sets["th"] = ["\n".join(vals[i : i + 20]) for i in range(0, len(vals), 20)]
    for lang, texts in sets.items():
        if not texts:
            continue
        name, ref = reference(lang)
        runs = RUNS[lang]
        tp = fp = fn = 0
        icu_words = ref_words = 0
        for t in texts:
            a = interior(t, icu_boundaries(t), runs)
            b = interior(t, offsets(t, ref(t)), runs)
            tp += len(a & b)
            fp += len(a - b)
            fn += len(b - a)
            icu_words += n_run_words(t, a, runs)
            ref_words += n_run_words(t, b, runs)
        p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        chars = sum(len(m.group()) for t in texts for m in runs.finditer(t))
        print(
            f"{lang}: {len(texts)} texts, {sum(map(len, texts))} chars ({chars} in runs); ICU vs {name}: "
            f"boundary precision {p:.3f} recall {r:.3f} F1 {2 * p * r / max(p + r, 1e-9):.3f}; words in runs "
            f"ICU {icu_words} / ref {ref_words} = {icu_words / max(ref_words, 1):.3f}; chars/run word ICU "
            f"{chars / max(icu_words, 1):.2f}, ref {chars / max(ref_words, 1):.2f}"
        )
        print(f"    speed (chars/s): ICU {speed(icu_boundaries, texts):,.0f}; {name} {speed(ref, texts):,.0f}")


if __name__ == "__main__":
    main()
