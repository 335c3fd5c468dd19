"""The drift verdict: PSI on known distributions, the exact categorical p-value, the minimum baseline and its
fallback, the first run's demo requests, shifted traffic flagged, and the HTML report. The observed case
through the asset is in ``test_drift_observed_case.py``."""

from __future__ import annotations

import math
import random

import numpy as np
import polars as pl
import pytest
from monitoring_traffic import FRENCH, english, log_frame, sentences
from scipy.stats import norm
from test_drift_observed_case import DEMO_PROMPTS

from crawl2serve.assets.monitoring.drift import (
    OUTPUT_COLUMNS,
    PROMPT_COLUMNS,
    SERVING_COLUMNS,
    DriftRule,
    build_current,
    build_reference,
    categorical_pvalue,
    corpus_snippets,
    drift_verdict,
    ks_pvalue,
    psi,
    psi_edges,
)

SHAPE = ("prompt_chars", "prompt_words", "prompt_quality")
BASELINE_ONLY = OUTPUT_COLUMNS + SERVING_COLUMNS


# ----- PSI ---------------------------------------------------------------------------------------
def test_psi_is_zero_for_identical_shares_and_small_under_no_drift():
    rng = np.random.default_rng(0)
    x = rng.lognormal(6, 0.6, 5000)
    assert psi(x, x) == 0.0
    assert psi(["a", "b", "b"], ["b", "a", "b"], categorical=True) == 0.0
    # two large samples of one distribution: about (bins - 1) * (1/n_ref + 1/n_cur) = 9 * 2/20000
    assert psi(rng.normal(size=20000), rng.normal(size=20000)) < 0.003


def test_psi_categorical_by_hand():
    ref = ["en"] * 50 + ["fr"] * 50
    cur = ["en"] * 90 + ["fr"] * 10
    expected = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)  # 0.8789
    assert psi(ref, cur, categorical=True) == pytest.approx(expected, abs=1e-12)
    # a category the reference lacks gets epsilon there, so PSI stays finite
    expected_new = (0.9 - 1.0) * math.log(0.9) + (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    assert psi(["en"] * 100, ["en"] * 90 + ["de"] * 10, categorical=True) == pytest.approx(expected_new, abs=1e-12)


def test_psi_bins_are_reference_deciles():
    ref = (np.arange(1000) + 0.5) / 1000  # uniform on (0, 1), exactly 100 values per decile
    np.testing.assert_allclose(psi_edges(ref), np.arange(1, 10) / 10, atol=1e-3)  # linear interpolation
    cur = (np.arange(500) + 0.5) / 1000  # uniform on (0, 0.5): 20% in each of the 5 lower bins, 0 above
    expected = 5 * (0.2 - 0.1) * math.log(0.2 / 0.1) + 5 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert psi(ref, cur) == pytest.approx(expected, abs=1e-12)
    assert len(psi_edges([3, 3, 3, 3, 7])) < 9  # few distinct values: duplicate edges merged


def test_psi_of_a_normal_mean_shift_matches_the_binned_theory():
    n = 200_000
    ref = norm.ppf((np.arange(n) + 0.5) / n)  # a "perfect" N(0, 1) sample
    edges = np.concatenate([[-np.inf], norm.ppf(np.arange(1, 10) / 10), [np.inf]])
    for mu in (0.1, 0.5, 1.0):
        q = np.diff(norm.cdf(edges - mu))
        expected = float(np.sum((q - 0.1) * np.log(q / 0.1)))
        assert psi(ref, ref + mu) == pytest.approx(expected, rel=2e-3)
    assert 0.2 < psi(ref, ref + 0.5) < 0.25  # below the unbinned symmetric KL divergence, mu^2 = 0.25


def test_psi_is_unchanged_by_an_increasing_transformation():
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(size=3000), rng.normal(0.3, 1.2, size=800)
    assert psi(np.exp(ref), np.exp(cur)) == pytest.approx(psi(ref, cur), abs=1e-12)


# ----- p-values ----------------------------------------------------------------------------------
def test_categorical_pvalue_is_valid_with_tiny_expected_counts():
    """0.5% errors, 30-request hours: the chi-square approximation would reject far too often; this may not."""
    rng = np.random.default_rng(2)
    ref = np.r_[np.ones(10), np.zeros(1990)]
    rejections = sum(
        categorical_pvalue(ref, (rng.random(30) < 0.005).astype(int), draws=999, seed=i) <= 0.05 for i in range(200)
    )
    assert rejections / 200 <= 0.05 + 0.03
    # a clear shift reaches the smallest p-value there is
    assert categorical_pvalue(ref, np.r_[np.ones(10), np.zeros(20)], draws=999) == pytest.approx(1 / 1000)
    assert categorical_pvalue(["en"] * 5, ["en"] * 3) == 1.0  # one category: nothing to test


def test_ks_pvalue_small_for_a_shift_and_not_for_the_same_distribution():
    rng = np.random.default_rng(3)
    ref = rng.lognormal(6.5, 0.6, 3000)
    assert ks_pvalue(ref, rng.lognormal(6.5, 0.6, 60)) > 0.01
    assert ks_pvalue(ref, 3 * rng.lognormal(6.5, 0.6, 60)) < 1e-10


# ----- the verdict -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_texts():
    rng = random.Random(11)
    return pl.DataFrame({"text": [english(rng) for _ in range(400)]})


@pytest.fixture(scope="module")
def corpus_reference(tokenizer, corpus_texts):
    return build_reference(corpus_snippets(corpus_texts, 1000, seed=0), tokenizer, sample=None)


def _snippet_log(corpus_texts, n, seed, **kw):
    return log_frame(corpus_snippets(corpus_texts, n, seed=seed)["text"].to_list(), seed=seed, **kw)


def test_minimum_baseline_falls_back_to_the_corpus_or_gives_no_verdict(tokenizer, corpus_texts, corpus_reference):
    current = build_current(_snippet_log(corpus_texts, 80, seed=1), tokenizer)
    tiny = build_current(_snippet_log(corpus_texts, 6, seed=2), tokenizer)
    v = drift_verdict(current, corpus_reference, tiny)
    for c in SHAPE:  # prompt shape: the corpus snippets stand in for a baseline too small to be one
        col = v.columns[c]
        assert (col.reference, col.note, col.n_reference) == ("corpus", "baseline n=6 < 200", 1000)
        assert col.reference_label == "corpus (baseline n=6 < 200)" and col.p_value is not None
    for c in BASELINE_ONLY:  # no corpus counterpart: no verdict, saying why
        assert v.columns[c].verdict == "no verdict (baseline n=6 < 200)" and v.columns[c].p_value is None
    assert v.tested_columns == list(PROMPT_COLUMNS) and v.verdict == "no drift"
    assert v.p_threshold == pytest.approx(0.05 / 5)

    big = build_current(_snippet_log(corpus_texts, 250, seed=3), tokenizer)
    v = drift_verdict(current, corpus_reference, big)
    assert all(
        v.columns[c].reference == "baseline" and v.columns[c].note == ""
        for c in SHAPE + BASELINE_ONLY
        if c != "ttft_ms" and c not in ("output_chars", "output_words", "output_empty")
    )
    assert v.columns["latency_ms"].n_reference == 250 and v.columns["prompt_language"].reference == "corpus"

    none = drift_verdict(current, corpus_reference, None)
    assert none.columns["latency_ms"].verdict == "no verdict (no baseline)"
    assert none.columns["prompt_words"].reference_label == "corpus (no baseline)"

    few = drift_verdict(build_current(_snippet_log(corpus_texts, 3, seed=4), tokenizer), corpus_reference, big)
    assert few.verdict == "no verdict" and few.tested_columns == []
    assert few.columns["prompt_words"].verdict == "no verdict (n_cur=3 < 5)"
    assert drift_verdict(current, None, None).verdict == "no verdict"


def test_first_run_demo_requests_get_a_verdict_on_the_prompt_columns(tokenizer, corpus_reference):
    demo = build_current(log_frame(DEMO_PROMPTS), tokenizer)
    v = drift_verdict(demo, corpus_reference, None)
    assert v.verdict in ("drift", "no drift") and v.tested_columns == list(PROMPT_COLUMNS)
    assert all(v.columns[c].verdict.startswith("no verdict (no baseline") for c in BASELINE_ONLY)


def test_clearly_shifted_traffic_is_flagged(tokenizer, corpus_texts, corpus_reference):
    baseline = build_current(_snippet_log(corpus_texts, 400, seed=5), tokenizer)
    rng = random.Random(6)
    french = build_current(log_frame([sentences(rng, FRENCH, (1, 3), (6, 18)) for _ in range(40)]), tokenizer)
    v = drift_verdict(french, corpus_reference, baseline)
    assert v.dataset_drift and {"prompt_language", "prompt_unk_share"} <= set(v.drifted_columns)

    slow = build_current(_snippet_log(corpus_texts, 40, seed=7, latency_scale=3.0), tokenizer)
    v = drift_verdict(slow, corpus_reference, baseline)
    assert v.dataset_drift and set(v.drifted_columns) == {"latency_ms", "ttft_ms"}
    assert v.columns["latency_ms"].psi > 1 and v.columns["latency_ms"].p_value < 1e-10

    errors = _snippet_log(corpus_texts, 40, seed=8).with_columns(
        status=pl.Series([503 if i % 5 == 0 else 200 for i in range(40)], dtype=pl.Int64)
    )
    v = drift_verdict(build_current(errors, tokenizer), corpus_reference, baseline)
    assert v.dataset_drift and v.drifted_columns == ["is_error"]

    calm = build_current(_snippet_log(corpus_texts, 150, seed=9), tokenizer)
    v = drift_verdict(calm, corpus_reference, baseline)
    assert v.verdict == "no drift" and len(v.tested_columns) >= 13


def test_html_report_shows_the_verdicts_and_evidently_computes_the_same_numbers(
    tokenizer, corpus_texts, corpus_reference, tmp_path
):
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    from crawl2serve.assets.monitoring.drift import _register_stattests

    current = build_current(_snippet_log(corpus_texts, 60, seed=10, latency_scale=3.0), tokenizer)
    baseline = build_current(_snippet_log(corpus_texts, 300, seed=11), tokenizer)
    v = drift_verdict(current, corpus_reference, baseline, html_path=tmp_path / "r" / "report.html")
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Drift verdict: drift" in page and "PSI (10 reference-quantile bins)" in page
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["report.html"]
    names = _register_stattests(DriftRule())
    latency = v.columns["latency_ms"]
    ref, cur = baseline["latency_ms"].dropna(), current["latency_ms"].dropna()
    got = get_registered_stattest(names["psi"], ColumnType.Numerical)(ref, cur, ColumnType.Numerical, 0.2)
    assert got.drift_score == latency.psi and got.drifted
    got = get_registered_stattest(names["ks"], ColumnType.Numerical)(
        ref, cur, ColumnType.Numerical, latency.p_threshold
    )
    assert got.drift_score == latency.p_value
