"""Which member of a duplicate cluster is kept, on a real translated site: the Debian Administrator's Handbook.

    python bench/bench_representative.py [--root /work/realdocs/x] [--fixtures tests/corpus/fixtures]

The handbook ships in 26 languages (``html/<lang>/<page>.html``); pages a translation has not
covered hold the English text, so each such page forms a cluster of English near-duplicates. Pages
get the URLs the site serves them under, ``https://debian-handbook.info/browse/<lang>/stable/<page>``,
and their own ``<link rel="canonical">``; text through ``extract_html`` and ``normalize_text``,
quality from ``quality_score``, then ``dedup_frame`` with the default settings (target language
``en``). For every cluster of English pages that holds the ``en-US`` page, the bench reports whether
the kept member is the ``en-US`` original, under the representative rule and under main's rule
(highest quality, then smallest id), and checks that three shuffles of the input keep the same
documents. ``--fixtures`` writes ``dedup_handbook_cluster.json.gz``: every language version of two
pages, one that no translation covers (26 English near-duplicates, 14 distinct texts) and one that
most do (an English cluster of 6, and 20 translated pages).
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import random
import sys

import polars as pl

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from crawl2serve.assets.corpus.cleaned import KEPT_SCHEMA
from crawl2serve.assets.corpus.deduplicated import DedupConfig, dedup_frame
from crawl2serve.assets.corpus.extract import content_hash, doc_id, extract_html
from crawl2serve.assets.corpus.filters import normalize_text, quality_score
from crawl2serve.assets.corpus.text_stats import TextStats

HANDBOOK = "debian-handbook_11.20220922_all/usr/share/doc/debian-handbook/html"
FIXTURE_PAGES = ("sect.dynamic-routing.html", "sect.why-gnu-linux.html")
COLUMNS = ("doc_id", "url", "canonical_url", "language", "language_score", "quality_score", "content_hash", "text")


def handbook_pages(root: pathlib.Path) -> pl.DataFrame:
    rows = []
    for f in sorted((root / HANDBOOK).glob("*/*.html")):
        url = f"https://debian-handbook.info/browse/{f.parent.name}/stable/{f.name}"
        ex = extract_html(url, f.read_bytes(), "text/html")
        text = normalize_text(ex.text)
        rows.append(
            {
                "doc_id": doc_id(url),
                "url": url,
                "canonical_url": ex.canonical_url,
                "language": ex.language,
                "language_score": ex.language_score,
                "quality_score": quality_score(TextStats(text)),
                "content_hash": content_hash(text),
                "text": text,
            }
        )
    return as_clean_documents(pl.DataFrame(rows))


def as_clean_documents(df: pl.DataFrame) -> pl.DataFrame:
    """The columns dedup_frame reads, the other clean_documents columns null."""
    return df.with_columns([pl.lit(None, dtype=t).alias(k) for k, t in KEPT_SCHEMA.items() if k not in df.columns])


def lang_dir(url: str) -> str:
    return url.split("/browse/")[1].split("/")[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/work/realdocs/x", type=pathlib.Path)
    ap.add_argument("--fixtures", type=pathlib.Path)
    a = ap.parse_args()
    docs = handbook_pages(a.root)
    deduped, clusters, facts = dedup_frame(docs, DedupConfig())
    c = clusters.join(docs.select("doc_id", "language", "quality_score"), on="doc_id").with_columns(
        dir=pl.col("url").map_elements(lang_dir, return_dtype=pl.String)
    )
    multi = c.filter(pl.col("cluster_size") > 1)
    english = (
        multi.group_by("cluster_id")
        .agg((pl.col("dir") == "en-US").any().alias("has_en"), (pl.col("language") == "en").all().alias("all_en"))
        .filter(pl.col("has_en") & pl.col("all_en"))["cluster_id"]
    )
    members = multi.filter(pl.col("cluster_id").is_in(english.implode()))
    new_kept = members.filter(pl.col("kept"))
    old_kept = (
        members.sort(["cluster_id", "quality_score", "doc_id"], descending=[False, True, False])
        .group_by("cluster_id", maintain_order=True)
        .first()
    )
    print(
        f"{docs.height} pages; {facts['exact_removed']} exact and {facts['near_removed']} near duplicates removed; "
        f"decided by {facts['representative_decided_by']}"
    )
    print(f"English clusters holding the en-US page: {english.len()}")
    print(f"  representative rule keeps en-US in {(new_kept['dir'] == 'en-US').sum()}")
    print(f"  main's rule (quality, then id) keeps en-US in {(old_kept['dir'] == 'en-US').sum()}")
    for seed in range(3):
        perm = list(range(docs.height))
        random.Random(seed).shuffle(perm)
        d2, c2, _ = dedup_frame(docs[perm], DedupConfig())
        assert set(d2["doc_id"]) == set(deduped["doc_id"])
        same = clusters.join(c2.select("doc_id", pl.col("cluster_id").alias("c2")), on="doc_id")
        assert (same["cluster_id"] == same["c2"]).all()
    print("3 shuffles: the same documents kept, the same clusters")
    if a.fixtures:
        page = (
            docs.filter(pl.col("url").str.split("/").list.last().is_in(list(FIXTURE_PAGES))).select(COLUMNS).sort("url")
        )
        text = json.dumps(page.to_dicts(), ensure_ascii=False, indent=0)
        (a.fixtures / "dedup_handbook_cluster.json.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
        print(f"fixture: {page.height} language versions of {', '.join(FIXTURE_PAGES)}")


if __name__ == "__main__":
    main()
