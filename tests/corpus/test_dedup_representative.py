"""The representative rule of duplicate clusters (assets/corpus/dedup.py), on a real translated site.

Fixture (``bench/bench_representative.py --fixtures tests/corpus/fixtures``): every language version
of two pages of the Debian Administrator's Handbook as the site serves them
(``https://debian-handbook.info/browse/<lang>/stable/<page>``, with their own canonical links):
``sect.dynamic-routing.html``, which no translation covers (26 English near-duplicates, 14 distinct
texts), and ``sect.why-gnu-linux.html`` (6 English copies, 20 translations).
"""

from __future__ import annotations

import gzip
import json
import pathlib
import random

import numpy as np
import polars as pl
import pytest

from crawl2serve.assets.corpus.cleaned import KEPT_SCHEMA
from crawl2serve.assets.corpus.dedup import MinHashLSH, near_duplicate_clusters
from crawl2serve.assets.corpus.deduplicated import DedupConfig, dedup_frame

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "dedup_handbook_cluster.json.gz"
ROWS = json.loads(gzip.decompress(FIXTURE.read_bytes()).decode("utf-8"))


def _docs(rows: list[dict]) -> pl.DataFrame:
    df = pl.DataFrame(rows)
    return df.with_columns([pl.lit(None, dtype=t).alias(k) for k, t in KEPT_SCHEMA.items() if k not in df.columns])


def _lang_dir(url: str) -> str:
    return url.split("/browse/")[1].split("/")[0]


def test_the_english_original_of_a_translated_site_is_kept_whatever_the_input_order():
    docs = _docs(ROWS)
    outcomes = []
    decided = []
    for seed in range(6):
        rows = list(ROWS)
        random.Random(seed).shuffle(rows)
        deduped, clusters, facts = dedup_frame(_docs(rows), DedupConfig())
        kept = {_lang_dir(u) + "/" + u.rsplit("/", 1)[1] for u in deduped["url"]}
        outcomes.append((kept, dict(zip(clusters["doc_id"], clusters["cluster_id"]))))
        decided.append(facts.get("representative_decided_by"))
    assert all(o == outcomes[0] for o in outcomes)  # the same documents kept, the same clusters
    kept = outcomes[0][0]
    assert "en-US/sect.dynamic-routing.html" in kept
    assert not {k for k in kept if k.endswith("sect.dynamic-routing.html")} - {"en-US/sect.dynamic-routing.html"}
    assert "en-US/sect.why-gnu-linux.html" in kept
    english_copies = docs.filter(pl.col("url").str.ends_with("sect.why-gnu-linux.html") & (pl.col("language") == "en"))
    assert english_copies.height == 6
    translated = docs.filter(pl.col("url").str.ends_with("sect.why-gnu-linux.html") & (pl.col("language") != "en"))
    assert {_lang_dir(u) + "/sect.why-gnu-linux.html" for u in translated["url"]} <= kept  # not duplicates
    assert all(d["language"] == 2 for d in decided)  # both English clusters were decided by the language rule


def test_quality_alone_would_keep_a_copy():
    """What the rule replaces: the highest-quality member (then the smallest id) of the 26 English
    versions is not the en-US original."""
    page = [r for r in ROWS if r["url"].endswith("sect.dynamic-routing.html")]
    best = sorted(page, key=lambda r: (-r["quality_score"], r["doc_id"]))[0]
    assert _lang_dir(best["url"]) != "en-US"


def _rank(rows, targets=("en",)):
    from crawl2serve.assets.corpus.dedup import representatives

    rep, decided = representatives(
        np.zeros(len(rows), dtype=int),
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [f"id{i}" for i in range(len(rows))],
        targets,
    )
    return int(rep[0]), {k: v for k, v in decided.items() if v}


@pytest.mark.parametrize(
    ("rows", "kept", "rule"),
    [
        # canonical: a page that another member names canonical beats a better, shorter one
        (
            [
                ("https://a.org/x/long/page", None, "en", 0.5),
                ("https://a.org/p", "https://a.org/x/long/page", "en", 0.9),
            ],
            0,
            "canonical",
        ),
        # language: an English page under a French URL loses to the English page, whatever its quality
        ([("https://a.org/fr/p", None, "en", 0.9), ("https://a.org/en/p", None, "en", 0.5)], 1, "language"),
        ([("https://a.org/p.fr.html", None, "en", 0.9), ("https://a.org/p.html", None, "en", 0.5)], 1, "language"),
        # ... and the canonical URL's language counts before the URL's own
        (
            [
                ("https://a.org/hr-HR/p", "https://a.org/hr-HR/p", "en", 0.9),
                ("https://a.org/en-US/p", "https://a.org/p", "en", 0.1),
            ],
            1,
            "language",
        ),
        # ... a page in a target language beats one in another language
        ([("https://a.org/p", None, "de", 0.9), ("https://a.org/q", None, "en", 0.1)], 1, "language"),
        ([("https://a.org/p", None, "mixed", 0.9), ("https://a.org/q", None, "en", 0.1)], 1, "language"),
        # quality, then the shorter path, then the smaller URL
        ([("https://a.org/p", None, "en", 0.4), ("https://a.org/q", None, "en", 0.6)], 1, "quality"),
        ([("https://a.org/docs/p", None, "en", 0.5), ("https://a.org/p", None, "en", 0.5)], 1, "path"),
        ([("https://b.org/p", None, "en", 0.5), ("https://a.org/p", None, "en", 0.5)], 1, "url"),
    ],
)
def test_rule_order(rows, kept, rule):
    from crawl2serve.assets.corpus.dedup import REPRESENTATIVE_RULES

    assert REPRESENTATIVE_RULES == ("canonical", "language", "quality", "path", "url")
    assert _rank(rows) == (kept, {rule: 1})
    assert _rank(rows[::-1]) == (len(rows) - 1 - kept, {rule: 1})  # the input order does not matter


def test_target_languages_follow_the_run():
    rows = [("https://a.org/p", None, "en", 0.9), ("https://a.org/q", None, "de", 0.1)]
    assert _rank(rows, ("de",)) == (1, {"language": 1})
    assert _rank(rows, ()) == (0, {"quality": 1})  # no target: every language counts alike


@pytest.mark.parametrize(
    ("url", "lang"),
    [
        ("https://debian-handbook.info/browse/en-US/stable/apt.html", "en"),
        ("https://debian-handbook.info/browse/nb-NO/stable/apt.html", "no"),  # CLD2 writes Norwegian "no"
        ("https://debian-handbook.info/browse/stable/apt.html", None),
        ("https://www.debian.org/doc/manuals/debian-reference/ch07.fr.html", "fr"),
        ("https://www.debian.org/index.html.de", "de"),
        ("https://fr.wikipedia.org/wiki/Debian", "fr"),
        ("https://example.org/fr/page", "fr"),
        ("https://example.org/page?hl=pt-BR", "pt"),
        ("https://docs.python.org/3/library/re.html", None),
        ("https://example.org/docs/api/fr/page", None),  # a bare code deeper than two segments
        ("https://example.org/archive.tar.gz", None),
        (None, None),
    ],
)
def test_url_language(url, lang):
    from crawl2serve.assets.corpus.language import url_language

    assert url_language(url) == lang


def test_near_duplicate_clusters_do_not_depend_on_input_order():
    """A bucket larger than full_pairs_max_bucket is joined by a star and a chain from its first
    member; documents are taken in id order, so any input order gives the same clusters."""
    base = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma " * 8
    texts = [base + f" tail{i % 3}" for i in range(24)] + ["completely different words here " * 20]
    ids = [f"d{i:02d}" for i in range(len(texts))]
    quality = [0.5] * len(texts)
    ref = near_duplicate_clusters(texts, ids, quality, MinHashLSH())
    ref_map = dict(zip(ids, ref.cluster_id))
    for seed in range(4):
        perm = list(range(len(texts)))
        random.Random(seed).shuffle(perm)
        res = near_duplicate_clusters([texts[i] for i in perm], [ids[i] for i in perm], quality, MinHashLSH())
        assert dict(zip([ids[i] for i in perm], res.cluster_id)) == ref_map
        assert res.candidate_pairs == ref.candidate_pairs
