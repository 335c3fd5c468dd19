"""Traffic descriptors and drift: exact descriptor values on known texts, drift on shifted traffic."""

from __future__ import annotations

import math
import random

import polars as pl
import pytest
from monitoring_traffic import FRENCH, english, log_frame, sentences
from transformers import PreTrainedTokenizerFast

from crawl2serve.assets.corpus.cleaning import clean_document
from crawl2serve.assets.corpus.filters import normalize_text, quality_score
from crawl2serve.assets.corpus.text_stats import TextStats
from crawl2serve.assets.corpus.thresholds import DOCUMENTATION, PUBLISHED
from crawl2serve.assets.monitoring.drift import (
    ALL_COLUMNS,
    OUTPUT_COLUMNS,
    PROMPT_COLUMNS,
    SERVING_COLUMNS,
    build_current,
    build_reference,
    drift_report,
    output_descriptors,
    prompt_descriptors,
    rates,
    unknown_token_share,
)


# ----- descriptors -------------------------------------------------------------------------------
def test_lengths_and_word_counts_exact(tokenizer):
    texts = ["Hello world", "  two\tspaced\n\nlines  ", "", "a\u00a0b\u2003c\x1cd e", "日本語 テキスト", "x"]
    d = prompt_descriptors(texts, tokenizer)
    assert d.columns == list(PROMPT_COLUMNS)
    assert d["prompt_chars"].to_list() == [len(t) for t in texts]
    assert d["prompt_words"].to_list() == [len(t.split()) for t in texts] == [2, 3, 0, 5, 2, 1]


def test_quality_is_the_corpus_score(tokenizer):
    texts = [
        "How do I sort a list of dictionaries by a key in Python?",
        "The river begins high in the mountains.\r\nThose  streams join together!\n\n\n\nFarmers rely on it.",
        "def f(x):\n    return x * 2  # double",
        "",
        "!!! ??? ...",
    ]
    got = prompt_descriptors(texts, tokenizer)["prompt_quality"].to_list()
    assert got == [quality_score(TextStats(normalize_text(t))) for t in texts]  # exactly, not approximately
    # ... and exactly what the corpus stage records for the same text (these short texts are dropped by
    # its length bound, where it scores the normalized text).
    for profile in (PUBLISHED, DOCUMENTATION):
        assert got == [clean_document(t, profile).quality for t in texts]


def test_language(tokenizer):
    texts = [
        "The people who live in the town work on the farms and in the shops near the river.",
        "Les habitants de la ville travaillent dans les champs et dans les boutiques près de la rivière.",
        "",
    ]
    assert prompt_descriptors(texts, tokenizer)["prompt_language"].to_list() == ["en", "fr", "unknown"]


def test_unknown_token_share_exact(tokenizer, tmp_path):
    vocab = tokenizer.get_vocab()
    assert "Ġthe" in vocab and "the" not in vocab  # known only behind the byte-level space
    assert "Ġriver" in vocab and "river" not in vocab
    assert not {"zebra", "Ġzebra", "xylophone", "Ġxylophone", "river.", "Ġriver."} & set(vocab)
    assert "ĠcafÃ©" in vocab  # "café" as byte-level symbols (UTF-8 bytes C3 A9)
    texts = ["the river", "zebra river", "the zebra zebra xylophone", "café", "river.", "", " \n "]
    expected = [0.0, 0.5, 0.75, 0.0, 1.0, None, None]  # "river." is not one token: punctuation counts
    assert unknown_token_share(texts, tokenizer) == expected
    d = prompt_descriptors(texts, tokenizer)
    assert d["prompt_unk_share"].to_list() == expected

    # The same through transformers, and from a save_pretrained directory.
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>")
    fast.save_pretrained(tmp_path / "tok")
    assert unknown_token_share(texts, fast) == expected
    assert unknown_token_share(texts, tmp_path / "tok") == expected


def test_repeated_texts_described_once_each_in_order(tokenizer):
    texts = ["the river", "zebra", "the river", None]
    d = prompt_descriptors(texts, tokenizer)
    assert d.height == 4 and d.row(0) == d.row(2)
    assert d.row(3) == prompt_descriptors([""], tokenizer).row(0)


def test_worker_pool_gives_the_same_descriptors(tokenizer, monkeypatch):
    import crawl2serve.assets.monitoring.drift as drift

    rng = random.Random(9)
    texts = [english(rng) for _ in range(60)] + ["Les habitants de la ville travaillent dans les champs.", ""]
    serial = prompt_descriptors(texts, tokenizer)
    monkeypatch.setattr(drift, "_PARALLEL_MIN_TEXTS", 0)
    assert prompt_descriptors(texts, tokenizer, workers=2).equals(serial)


def test_output_descriptors():
    d = output_descriptors(["Hello world.", "", "  \n\t", None, "one"])
    assert d.columns == list(OUTPUT_COLUMNS)
    assert d["output_chars"].to_list() == [12, 0, 4, 0, 3]
    assert d["output_words"].to_list() == [2, 0, 0, 0, 1]
    assert d["output_empty"].to_list() == [0, 1, 1, 1, 0]


def test_build_current_columns_flags_and_errors(tokenizer):
    log = log_frame(
        ["the people", "zebra", "hi", "ok"],
        status=[200, 503, 200, 200],
        error=[None, "timeout", None, None],
        output=["a b", "", "", "c"],
        ttft_ms=[10.0, None, 12.0, 11.0],
        input_verdict=["allow", "flag", "block", "allow"],
        output_verdict=["flag", "allow", "allow", "block"],
    )
    cur = build_current(log, tokenizer)
    assert list(cur.columns) == list(ALL_COLUMNS) and len(cur) == 4
    assert cur["is_error"].tolist() == [0, 1, 0, 0]
    assert cur["input_flagged"].tolist() == [0, 1, 0, 0] and cur["input_blocked"].tolist() == [0, 0, 1, 0]
    assert cur["output_flagged"].tolist() == [1, 0, 0, 0] and cur["output_blocked"].tolist() == [0, 0, 0, 1]
    assert math.isnan(cur["output_chars"][1]) and math.isnan(cur["ttft_ms"][1])  # no output on errors
    assert cur["output_empty"].tolist()[2:] == [1, 0] and cur["output_words"][0] == 2


def test_rates():
    log = log_frame(
        ["p"] * 4,
        status=[200, 503, 200, 400],
        error=[None, None, None, "bad request"],
        latency_ms=[100.0, 200.0, 300.0, 400.0],
        input_verdict=["allow", "flag", "block", "allow"],
        output_verdict=["flag", "allow", "allow", "block"],
    )
    r = rates(log)
    assert r["requests"] == 4
    assert r["error_rate"] == 0.25  # only the 503: a 400 is the client's error, not the engine's
    assert r["unsafe_rate"] == 0.5 and r["flag_rate"] == 0.5
    assert r["latency_p50_ms"] == 250.0 and r["latency_p99_ms"] == pytest.approx(397.0)
    assert rates(log.head(0))["latency_p50_ms"] is None


# ----- drift -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tokenizer):
    rng = random.Random(1)
    corpus = pl.DataFrame({"text": [english(rng) for _ in range(600)]})
    return build_reference(corpus, tokenizer, sample=300, seed=0)


def test_reference_sampling_and_sources(tokenizer, reference):
    assert len(reference) == 300 and set(reference["source"]) == {"corpus"}
    assert reference[list(PROMPT_COLUMNS)].notna().all().all()
    assert reference[list(OUTPUT_COLUMNS + SERVING_COLUMNS)].isna().all().all()
    rng = random.Random(1)
    corpus = pl.DataFrame({"text": [english(rng) for _ in range(600)]})
    assert build_reference(corpus, tokenizer, sample=300, seed=0).equals(reference)  # seeded


def test_no_drift_for_traffic_from_the_reference_distribution(tokenizer, reference, tmp_path):
    rng = random.Random(2)
    current = build_current(log_frame([english(rng) for _ in range(300)]), tokenizer)
    html = tmp_path / "reports" / "drift.html"
    result = drift_report(current, reference, None, html_path=html)

    assert list(result.per_column) == list(PROMPT_COLUMNS)  # only they have a reference
    assert set(result.skipped_columns) == set(OUTPUT_COLUMNS + SERVING_COLUMNS)
    assert result.drift_share < 0.5 and len(result.drifted_columns) <= 1 and not result.dataset_drift
    assert (result.n_current, result.n_reference) == (300, 300)
    for col in result.per_column.values():
        assert set(col) == {"stattest", "score", "threshold", "drifted", "n_current", "n_reference"}
        assert col["n_current"] == 300 and col["n_reference"] == 300
    assert result.per_column["prompt_chars"]["stattest"] == "K-S p_value"  # 300 reference values
    assert result.per_column["prompt_language"]["stattest"] == "Jensen-Shannon distance"

    assert result.html_path == str(html) and html.stat().st_size > 10_000
    assert [p.name for p in html.parent.iterdir()] == ["drift.html"]  # no temporary file left


@pytest.mark.parametrize("shift", ["long_french", "random_characters"])
def test_shifted_traffic_drifts_and_names_the_columns(tokenizer, reference, shift):
    rng = random.Random(3)
    if shift == "long_french":
        prompts = [sentences(rng, FRENCH, (4, 8), (12, 25)) for _ in range(300)]
    else:
        alphabet = "abcdefghijklmnopqrstuvwxyzQXZ0123456789#$%&*+/<=>@^~"
        prompts = [
            " ".join(
                "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 12))) for _ in range(rng.randint(30, 80))
            )
            for _ in range(300)
        ]
    current = build_current(log_frame(prompts), tokenizer)
    result = drift_report(current, reference, list(PROMPT_COLUMNS))

    assert result.drift_share >= 0.8 and result.dataset_drift
    assert {"prompt_chars", "prompt_words", "prompt_language", "prompt_unk_share"} <= set(result.drifted_columns)


def test_serving_columns_drift_against_a_baseline_window(tokenizer):
    rng = random.Random(4)
    corpus = pl.DataFrame({"text": [english(rng) for _ in range(200)]})
    baseline = log_frame([english(rng) for _ in range(250)], seed=5)
    reference = build_reference(corpus, tokenizer, sample=None, baseline_log_df=baseline)
    assert len(reference) == 450 and reference["source"].tolist() == ["corpus"] * 200 + ["baseline"] * 250

    slow = log_frame([english(rng) for _ in range(300)], seed=6, latency_scale=3.0)
    result = drift_report(build_current(slow, tokenizer), reference)
    assert result.skipped_columns == {}
    assert result.per_column["prompt_chars"]["n_reference"] == 200  # against the corpus
    assert result.per_column["latency_ms"]["n_reference"] == 250  # against the baseline window
    assert {"latency_ms", "ttft_ms"} <= set(result.drifted_columns)
    assert not {"prompt_language", "output_words", "is_error"} & set(result.drifted_columns)
    assert result.drift_share < 0.5


def test_drift_report_rejects_unknown_columns(reference):
    with pytest.raises(KeyError):
        drift_report(reference, reference, ["no_such_column"])
