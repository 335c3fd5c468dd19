"""Writes ``assets/corpus/language_table.py`` from FineWeb-2's published per-language filter settings.

    python bench/fineweb2_languages.py --git-dir PATH/TO/fineweb-2/.git [--commit SHA] [--top 59]

FineWeb-2 (github.com/huggingface/fineweb-2, Apache-2.0) publishes one YAML file per language subset,
``configs/{iso639-3}_{script}.yml``, holding the stop words and the Gopher / FineWeb thresholds its
pipeline used for that language, and ``fineweb2-language-distribution.csv`` (documents per subset).
This script reads both from a git checkout (``git show COMMIT:path``; nothing is copied but the values),
takes the ``--top`` largest subsets by documents in the ``train`` split (``*_removed`` and ``und_*``
rows aside; ``NO_CLD2_LANGUAGE`` skipped), maps each to the language codes CLD2 reports (``CLD2_CODES`` below: a subset without a
mapping stops the script) and writes the values as a Python literal, so the table needs no YAML parser
and no data file at run time. Re-run it to refresh the table from a newer commit.
"""

from __future__ import annotations

import argparse
import csv
import io
import pathlib
import subprocess
import textwrap

import yaml

# FineWeb-2 subset -> the CLD2 codes (assets/corpus/language.py reports CLD2's codes) that select it.
# cmn_Hani holds Chinese in both scripts (its stop words mix 为/為, 后/後), so zh-Hant maps to it too;
# CLD2 writes Norwegian Bokmål as "no" (nb is the current ISO 639-1 code).
CLD2_CODES: dict[str, tuple[str, ...]] = {
    "rus_Cyrl": ("ru",),
    "cmn_Hani": ("zh", "zh-Hant"),
    "deu_Latn": ("de",),
    "spa_Latn": ("es",),
    "jpn_Jpan": ("ja",),
    "fra_Latn": ("fr",),
    "ita_Latn": ("it",),
    "por_Latn": ("pt",),
    "pol_Latn": ("pl",),
    "nld_Latn": ("nl",),
    "ind_Latn": ("id",),
    "tur_Latn": ("tr",),
    "ces_Latn": ("cs",),
    "arb_Arab": ("ar",),
    "vie_Latn": ("vi",),
    "kor_Hang": ("ko",),
    "swe_Latn": ("sv",),
    "fas_Arab": ("fa",),
    "ron_Latn": ("ro",),
    "ukr_Cyrl": ("uk",),
    "hun_Latn": ("hu",),
    "ell_Grek": ("el",),
    "dan_Latn": ("da",),
    "nob_Latn": ("no", "nb"),
    "fin_Latn": ("fi",),
    "tha_Thai": ("th",),
    "slk_Latn": ("sk",),
    "bul_Cyrl": ("bg",),
    "hin_Deva": ("hi",),
    "bos_Latn": ("bs",),
    "cat_Latn": ("ca",),
    "ben_Beng": ("bn",),
    "heb_Hebr": ("iw", "he"),
    "lit_Latn": ("lt",),
    "slv_Latn": ("sl",),
    "ekk_Latn": ("et",),
    "zsm_Latn": ("ms",),
    "als_Latn": ("sq",),
    "lvs_Latn": ("lv",),
    "azj_Latn": ("az",),
    "hrv_Latn": ("hr",),
    "tam_Taml": ("ta",),
    "urd_Arab": ("ur",),
    "npi_Deva": ("ne",),
    "mkd_Cyrl": ("mk",),
    "srp_Cyrl": ("sr",),
    "mar_Deva": ("mr",),
    "kat_Geor": ("ka",),
    "kaz_Cyrl": ("kk",),
    "mal_Mlym": ("ml",),
    "isl_Latn": ("is",),
    "glg_Latn": ("gl",),
    "kan_Knda": ("kn",),
    "fil_Latn": ("tl",),
    "guj_Gujr": ("gu",),
    "bel_Cyrl": ("be",),
    "afr_Latn": ("af",),
    "tel_Telu": ("te",),
}
# Subsets among the largest that CLD2 cannot tell from a larger one: CLD2 reports Moroccan Arabic as
# "ar", which takes Standard Arabic (arb_Arab).
NO_CLD2_LANGUAGE = frozenset({"ary_Arab"})
KEYS = (
    "stopwords",
    "min_avg_word_length",
    "max_avg_word_length",
    "max_non_alpha_words_ratio",
    "dup_line_frac",
    "top_n_grams",
    "dup_n_grams",
    "line_punct_thr",
    "new_line_ratio",
    "language_score",
)


def git_show(git_dir: str, commit: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--git-dir", required=True)
    ap.add_argument("--commit", default="HEAD")
    ap.add_argument("--top", type=int, default=59)
    ap.add_argument(
        "--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "assets/corpus/language_table.py")
    )
    args = ap.parse_args()
    commit = subprocess.run(
        ["git", "--git-dir", args.git_dir, "rev-parse", args.commit], check=True, capture_output=True, text=True
    ).stdout.strip()
    rows = [
        r
        for r in csv.DictReader(io.StringIO(git_show(args.git_dir, commit, "fineweb2-language-distribution.csv")))
        if r["split"] == "train" and not r["subset"].endswith("_removed") and not r["subset"].startswith("und_")
    ]
    rows.sort(key=lambda r: -int(r["documents"]))
    table: dict[str, dict] = {}
    for rank, r in enumerate(rows[: args.top], 1):
        subset = r["subset"]
        if subset in NO_CLD2_LANGUAGE:
            continue
        if subset not in CLD2_CODES:
            raise SystemExit(f"{subset} (rank {rank}) has no CLD2 code mapping: add it to CLD2_CODES")
        cfg = yaml.safe_load(git_show(args.git_dir, commit, f"configs/{subset}.yml"))
        entry = {
            "subset": subset,
            "name": r["name"],
            "rank": rank,
            "documents": int(r["documents"]),
            "cld2": CLD2_CODES[subset],
        }
        for k in KEYS:
            v = cfg[k]
            if k in ("top_n_grams", "dup_n_grams"):
                v = tuple((int(n), float(s)) for n, s in v)
            elif k == "stopwords":
                v = tuple(v)
            else:
                v = float(v)
            entry[k] = v
        table[subset] = entry
    header = (
        '"""FineWeb-2\'s published per-language filter settings (data only; generated, do not edit).\n\n'
        "Source: github.com/huggingface/fineweb-2 (Apache-2.0), ``configs/{subset}.yml`` and\n"
        f"``fineweb2-language-distribution.csv`` at commit {commit}: the {len(table)} of the {args.top}\n"
        "largest subsets by documents that CLD2 identifies. Written by ``bench/fineweb2_languages.py``; read through\n"
        "``assets/corpus/languages.py``. Keys are FineWeb-2's; ``cld2``: the codes CLD2 reports for the language.\n"
        '"""\n\n'
        f'FINEWEB2_COMMIT = "{commit}"\n\n'
    )
    lines = ["FINEWEB2_CONFIGS: dict[str, dict] = {"]
    for subset, entry in table.items():
        lines.append(f"    {subset!r}: {{")
        for k, v in entry.items():
            lines.extend(
                textwrap.wrap(
                    f"{k!r}: {v!r},",
                    width=110,
                    initial_indent=" " * 8,
                    subsequent_indent=" " * 12,
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
        lines.append("    },")
    body = "\n".join(lines) + "\n}\n"
    pathlib.Path(args.out).write_text(header + body, encoding="utf-8")
    print(f"wrote {args.out}: {len(table)} languages from {commit}")


if __name__ == "__main__":
    main()
