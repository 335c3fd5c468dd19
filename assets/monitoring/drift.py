"""Descriptors of inference traffic and their drift against the training reference (framework-free).

Every request becomes one row of numbers and labels (:func:`build_current`); the same descriptors of
the training corpus, and optionally of an earlier window of traffic, form the reference
(:func:`build_reference`); :func:`drift_verdict` judges each column against its reference (p-value and
PSI, "The verdict" below) and writes an Evidently HTML report of both tests;
:func:`drift_report` is Evidently's own :class:`~evidently.presets.DataDriftPreset` verdict.
:func:`rates` gives the absolute rates (errors, unsafe, latency percentiles) that alerting should read
directly: a drift test says "different", not "bad".

Descriptors
-----------
Prompt descriptors (:func:`prompt_descriptors`; the corpus documents are described by the very same
code, as if each document were a prompt):

- ``prompt_chars``: ``len(text)`` (Unicode code points), as the corpus ``char_count``.
- ``prompt_words``: whitespace-separated words, ``len(text.split())``, as the corpus ``word_count``.
- ``prompt_language``: the CLD2 language code of the raw text by
  :func:`assets.corpus.extract.detect_language` (the extraction stage's detector: samples across
  the whole text, ``"mixed"`` when a second language holds a large share, ``"unknown"`` when CLD2
  cannot tell; see :mod:`assets.corpus.language`).
- ``prompt_quality``: the corpus quality score, exactly as the corpus stage computes it:
  ``quality_score(TextStats(normalize_text(text)))`` (:mod:`assets.corpus.filters`,
  :mod:`assets.corpus.text_stats`). Corpus texts are already normalized, so a corpus document's
  value equals its stored ``quality_score``.
- ``prompt_unk_share``: the unknown-token share, defined in :func:`unknown_token_share`: the share of
  the whitespace-separated words that the tokenizer's vocabulary does not hold as one token (with or
  without the byte-level space marker ``Ġ``); null for a text without words.

Output descriptors (:func:`output_descriptors`): ``output_chars``, ``output_words`` (as above) and
``output_empty`` (1 when the output has no word: empty or whitespace only, else 0).

Serving columns (:func:`build_current`, from the log row): ``latency_ms``, ``ttft_ms`` (null when the
request was not streamed), ``completion_tokens``, ``is_error`` (1 when ``status >= 500``: the engine failed; a 4xx
is the client's), ``input_flagged`` / ``input_blocked`` / ``output_flagged`` /
``output_blocked`` (1 when that verdict is exactly ``"flag"`` / ``"block"``). A failed request has
no output to describe: its output descriptors are null.

Two references, one frame
-------------------------
The corpus says what the model was trained on, so it is the reference for the *prompt* descriptors:
do users write in the language, vocabulary and register the model learned? It has nothing to say
about latency, errors, verdicts or outputs; those are compared with a *baseline window of earlier
inference logs* (last week's traffic, the previous release's), when one is given. So
:func:`build_reference` returns one frame whose rows come from two sources (column ``source``):

- ``"corpus"`` rows (a seeded sample of documents) carry the prompt descriptors, nulls elsewhere;
- ``"baseline"`` rows (every request of the baseline window) carry the output descriptors and the
  serving columns, nulls in the prompt descriptors.

Evidently drops the nulls of each column before testing it, so each column is tested against its own
source and its own row count (reported per column). Without a baseline only the prompt descriptors
have a reference, and :func:`drift_report` tests only them by default. To compare *everything* with
an earlier window instead, pass ``build_current(baseline_log_df, tokenizer)`` as the reference.

Corpus documents are web pages, prompts are questions: length descriptors (``prompt_chars``,
``prompt_words``, and through its unique-word ratio ``prompt_quality``) differ between the two by
construction. When traffic is not meant to look like documents, pass ``columns=CORPUS_CONTENT_COLUMNS``
(language and unknown-token share) for the corpus comparison.

The verdict (:func:`drift_verdict`, what the ``drift_report`` asset and the drift sensor use)
-----------------------------------------------------------------------------------------
Per column:

1. Reference: the first source in :data:`REFERENCE_SOURCES` holding at least ``min_reference`` (200)
   values of the column: language and unknown-token share against the corpus snippets; prompt shape
   (chars, words, quality) against the baseline window, else the corpus snippets; outputs, latency,
   TTFT, tokens, errors and guardrail flags against the baseline window, else *no verdict*. A few
   requests are one client's session, not "the traffic": a 6-request window once made 6 of 15 columns
   "drift" at p ~ 0 against 120 requests of the training distribution. 200 is also 20 reference values
   per PSI bin.
2. This hour needs ``min_current`` (5) values of the column, else *no verdict*. The p-values below are
   valid at any size, so a first run with a handful of demo requests still gets a verdict on the prompt
   columns; what a few values cannot give is power (a small drift goes unnoticed).
3. p-value: numerical columns, the two-sample K-S test (:func:`ks_pvalue`); categorical ones, an exact
   conditional chi-square test (:func:`categorical_pvalue`, Monte Carlo), valid with tiny expected counts
   (a 0.5% error rate in a 30-request hour), which Evidently's chi-square is not. Languages under 5% of
   the reference are pooled as ``"other"``.
4. PSI (:func:`psi`): deciles of the reference as bin edges (categories as bins), ``epsilon = 1e-4`` for
   an empty bin.
5. The column drifts when ``p < alpha / m`` (``alpha = 0.05``, ``m`` the columns tested in this report:
   Bonferroni, so the chance that *any* column of an in-distribution hour is flagged stays under 5%)
   **and** ``PSI > 0.2`` (the usual "significant shift"; at large sizes a p-value flags differences too
   small to matter, and at small sizes PSI is large by chance alone, about ``(bins-1)(1/n_ref + 1/n_cur)``).

The hour drifts when at least ``min_drifted_columns`` (1) columns drift; with no column tested its verdict
is ``"no verdict"``. One column is enough because the shifts that matter often touch one or two of the ~15
columns (latency x3: ``latency_ms`` and ``ttft_ms``; an error burst: ``is_error``); a share-of-columns rule
(Evidently's, 50%) never sees them, and the family-wise bound keeps false alarms rare instead.
``bench/bench_drift.py rates`` measures both rates on simulated hours (README, Monitoring).

Evidently's presets (:func:`drift_report`)
-----------------------------------------
:func:`drift_report` runs Evidently's ``DataDriftPreset`` as it comes (the rule before the verdict above;
the bench's "old rule"). Numerical columns use Evidently's defaults, which depend on the number of reference values: up to
1,000, the two-sample Kolmogorov-Smirnov p-value (drift when ``p <= 0.05``), above 1,000 the
Wasserstein distance normed by the reference's standard deviation (drift when ``>= 0.1``); a
numerical column with at most 5 distinct values gets chi-square / Z-test (small reference) or
Jensen-Shannon (large reference) instead. Categorical columns (the language and the 0/1 flags) use
the Jensen-Shannon distance of the category frequencies (drift when ``>= 0.1``) at every size: the
default chi-square test sees an expected count of zero for any category the reference lacks, so a
single prompt in a new language would make its p-value 0.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from crawl2serve.assets.corpus.extract import detect_language
from crawl2serve.assets.corpus.filters import normalize_text, quality_score
from crawl2serve.assets.corpus.text_stats import TextStats

__all__ = [
    "ALL_COLUMNS",
    "CATEGORICAL_COLUMNS",
    "CORPUS_CONTENT_COLUMNS",
    "OUTPUT_COLUMNS",
    "POOLED_COLUMNS",
    "PROMPT_COLUMNS",
    "PROMPT_SHAPE_COLUMNS",
    "REFERENCE_SOURCES",
    "SERVING_COLUMNS",
    "WORD_PATTERN",
    "ColumnVerdict",
    "DriftResult",
    "DriftRule",
    "DriftVerdict",
    "build_current",
    "build_reference",
    "categorical_pvalue",
    "drift_report",
    "drift_verdict",
    "ks_pvalue",
    "output_descriptors",
    "prompt_descriptors",
    "psi",
    "psi_edges",
    "rates",
    "unknown_token_share",
]

PROMPT_COLUMNS = ("prompt_chars", "prompt_words", "prompt_language", "prompt_quality", "prompt_unk_share")
OUTPUT_COLUMNS = ("output_chars", "output_words", "output_empty")
SERVING_COLUMNS = (
    "latency_ms",
    "ttft_ms",
    "completion_tokens",
    "is_error",
    "input_flagged",
    "input_blocked",
    "output_flagged",
    "output_blocked",
)
ALL_COLUMNS = PROMPT_COLUMNS + OUTPUT_COLUMNS + SERVING_COLUMNS
CATEGORICAL_COLUMNS = frozenset(
    {
        "prompt_language",
        "output_empty",
        "is_error",
        "input_flagged",
        "input_blocked",
        "output_flagged",
        "output_blocked",
    }
)
CORPUS_CONTENT_COLUMNS = ("prompt_language", "prompt_unk_share")  # length-free: fair against documents
PROMPT_SHAPE_COLUMNS = ("prompt_chars", "prompt_words", "prompt_quality")

# Exactly Python's str.split() separators: the regex \s is Unicode White_Space, and str.isspace()
# adds U+001C..U+001F (checked over every code point).
WORD_PATTERN = r"[^\s\x1c-\x1f]+"
_SPACE_MARK = "\u0120"  # "Ġ": the byte-level symbol of the space byte 0x20
_PARALLEL_MIN_TEXTS = 4000  # below this a process pool costs more than it saves


# ----- tokenizer vocabulary ----------------------------------------------------------------------
def _byte_level_table() -> dict[int, str]:
    """str.translate table from a byte (as the Latin-1 character of that value) to its byte-level symbol.

    GPT-2's ``bytes_to_unicode``, which ``tokenizers``' ByteLevel pre-tokenizer uses: printable
    Latin-1 bytes stand for themselves, the other 68 bytes map to U+0100 onwards (space -> ``Ġ``).
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


_BYTE_LEVEL = str.maketrans(_byte_level_table())


def _byte_level(word: str) -> str:
    """``word`` as byte-level BPE symbols: its UTF-8 bytes, each mapped by :func:`_byte_level_table`."""
    return word.encode("utf-8", "surrogatepass").decode("latin-1").translate(_BYTE_LEVEL)


def _vocab(tokenizer: Any) -> frozenset[str]:
    """The token strings of ``tokenizer``: a ``transformers`` tokenizer, a ``tokenizers.Tokenizer``,
    a ``save_pretrained`` directory or a ``tokenizer.json`` path."""
    if isinstance(tokenizer, (str, os.PathLike)):
        from tokenizers import Tokenizer

        path = Path(tokenizer)
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))
    return frozenset(tokenizer.get_vocab())


def _known_words(words: pl.Series, vocab: frozenset[str]) -> pl.Series:
    """The distinct words of ``words`` that are one token (see :func:`unknown_token_share`)."""
    distinct = words.unique().to_list()
    known = []
    for w in distinct:
        b = _byte_level(w)
        if b in vocab or _SPACE_MARK + b in vocab:
            known.append(w)
    return pl.Series("w", known, dtype=pl.String)


def _split_words(texts: pl.Series) -> pl.Series:
    return texts.str.extract_all(WORD_PATTERN)


def _unknown_share(words: pl.Series, vocab: frozenset[str]) -> np.ndarray:
    """Per row of ``words`` (lists of words): the unknown share, NaN for rows without words."""
    n = len(words)
    counts = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = words.explode(empty_as_null=False, keep_nulls=False) if n else pl.Series("w", [], dtype=pl.String)
    rows = np.repeat(np.arange(n), counts)
    unknown = (~flat.is_in(_known_words(flat, vocab))).to_numpy()
    n_unknown = np.bincount(rows, weights=unknown, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, n_unknown / np.maximum(counts, 1), np.nan)


def unknown_token_share(texts: Sequence[str | None], tokenizer: Any) -> list[float | None]:
    """The unknown-token share of each text: ``unknown words / words``, None for a text without words.

    Words are the whitespace-separated words, exactly ``text.split()``. A word is *known* when the
    tokenizer's vocabulary (``get_vocab()``, added tokens included) holds, as one token, the word's
    byte-level form (its UTF-8 bytes mapped to byte-level BPE symbols) or that form behind the
    byte-level space ``Ġ`` (the word as it is tokenized after a space). Every other word is unknown:
    the tokenizer must split it into two or more pieces. No punctuation is stripped: ``"model,"`` is
    known only if ``"model,"`` itself is a token, so prose with attached punctuation has a floor
    above 0; compare shares computed the same way, never with a fixed target. Meant for byte-level
    BPE tokenizers (GPT-2 style, as :func:`assets.training.base_model.train_bpe_tokenizer` trains);
    with another kind the share is that of words whose byte-level form happens to be a token.

    Cost: one regex split of all texts (polars, native) and one vocabulary look-up per distinct word.
    """
    s = pl.Series("text", list(texts), dtype=pl.String).fill_null("")
    share = _unknown_share(_split_words(s), _vocab(tokenizer))
    return [None if np.isnan(x) else float(x) for x in share]


# ----- per-text scoring (quality, language) ------------------------------------------------------
def _score_texts(texts: list[str]) -> list[tuple[float, str]]:
    """(corpus quality score, CLD2 language) of each text: the corpus stage's own functions."""
    return [(quality_score(TextStats(normalize_text(t))), detect_language(t)[0]) for t in texts]


_POOLS: dict[int, Any] = {}


def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.terminate()
    _POOLS.clear()


atexit.register(_close_pools)


def _pool(workers: int):
    """A process pool of ``workers`` kept for the life of the process (forkserver: the server is a clean
    process that preloads this module, so no thread state of polars or a caller is ever forked)."""
    pool = _POOLS.get(workers)
    if pool is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        pool = _POOLS[workers] = ctx.Pool(workers)
    return pool


def _start_scores(distinct: list[str], workers: int) -> Callable[[], list[tuple[float, str]]]:
    """Start scoring ``distinct``; the returned function waits for the scores (in order).

    On a pool the work starts at once, so the caller's vectorized work overlaps it; serially it runs
    when the function is called.
    """
    if workers <= 1 or len(distinct) < _PARALLEL_MIN_TEXTS:
        return lambda: _score_texts(distinct)
    size = -(-len(distinct) // (workers * 4))
    chunks = [distinct[i : i + size] for i in range(0, len(distinct), size)]
    pending = _pool(workers).map_async(_score_texts, chunks)
    return lambda: [r for part in pending.get() for r in part]


# ----- descriptors -------------------------------------------------------------------------------
def prompt_descriptors(texts: Sequence[str | None], tokenizer: Any, *, workers: int = 1) -> pl.DataFrame:
    """The prompt descriptors of each text (module docstring), one row per text, in order.

    Columns: ``prompt_chars`` (Int64), ``prompt_words`` (Int64), ``prompt_language`` (String),
    ``prompt_quality`` (Float64), ``prompt_unk_share`` (Float64, null without words). A null text
    is described as ``""``.

    Speed: lengths, words and the unknown-token share are vectorized (polars regex split, one
    vocabulary look-up per distinct word); the quality score and the language run once per
    *distinct* text (repeated prompts cost nothing), on ``workers`` processes when ``workers > 1``
    and there are at least 4,000 distinct texts. ``tokenizer``: see :func:`unknown_token_share`.

    The pool (first use: about half a second) is a ``forkserver`` pool kept until the process exits:
    its workers start from a clean server process, never from a fork of this one (polars' threads),
    and, as with ``spawn``, they import the caller's ``__main__`` module, so a script that uses
    ``workers > 1`` must guard its entry point with ``if __name__ == "__main__":``.
    """
    s = pl.Series("text", list(texts), dtype=pl.String).fill_null("")
    distinct = s.unique(maintain_order=True).to_list()
    scores = _start_scores(distinct, workers)
    words = _split_words(s)
    vectorized = {
        "prompt_chars": s.str.len_chars().cast(pl.Int64),
        "prompt_words": words.list.len().cast(pl.Int64),
        "prompt_unk_share": pl.Series(_unknown_share(words, _vocab(tokenizer)), dtype=pl.Float64, nan_to_null=True),
    }
    by_text = dict(zip(distinct, scores()))
    scored = [by_text[t] for t in s.to_list()]
    return pl.DataFrame(
        {
            "prompt_chars": vectorized["prompt_chars"],
            "prompt_words": vectorized["prompt_words"],
            "prompt_language": pl.Series([lang for _, lang in scored], dtype=pl.String),
            "prompt_quality": pl.Series([q for q, _ in scored], dtype=pl.Float64),
            "prompt_unk_share": vectorized["prompt_unk_share"],
        }
    )


def output_descriptors(texts: Sequence[str | None]) -> pl.DataFrame:
    """``output_chars`` (code points), ``output_words`` (``len(text.split())``) and ``output_empty``
    (Int8: 1 when the output has no word, else 0) of each text; a null text is described as ``""``."""
    s = pl.Series("text", list(texts), dtype=pl.String).fill_null("")
    n_words = s.str.count_matches(WORD_PATTERN).cast(pl.Int64)
    return pl.DataFrame(
        {
            "output_chars": s.str.len_chars().cast(pl.Int64),
            "output_words": n_words,
            "output_empty": (n_words == 0).cast(pl.Int8),
        }
    )


def _as_polars(df: pl.DataFrame | pd.DataFrame) -> pl.DataFrame:
    return df if isinstance(df, pl.DataFrame) else pl.from_pandas(df)


def _serving_frame(log_df: pl.DataFrame) -> pl.DataFrame:
    """Output descriptors and serving columns of every log row (output descriptors null on errors)."""
    is_error = (pl.col("status") >= 500).fill_null(False)
    serving = log_df.select(
        pl.col("latency_ms").cast(pl.Float64),
        pl.col("ttft_ms").cast(pl.Float64),
        pl.col("completion_tokens").cast(pl.Int64),
        is_error.cast(pl.Int8).alias("is_error"),
        *[
            (pl.col(f"{side}_verdict") == v).fill_null(False).cast(pl.Int8).alias(f"{side}_{name}")
            for side in ("input", "output")
            for v, name in (("flag", "flagged"), ("block", "blocked"))
        ],
    )
    outputs = output_descriptors(log_df["output"].to_list())
    failed = serving["is_error"] == 1
    outputs = outputs.with_columns(pl.when(failed).then(None).otherwise(pl.col(c)).alias(c) for c in OUTPUT_COLUMNS)
    return pl.concat([outputs, serving], how="horizontal").select(*OUTPUT_COLUMNS, *SERVING_COLUMNS)


def build_current(log_df: pl.DataFrame | pd.DataFrame, tokenizer: Any, *, workers: int = 1) -> pd.DataFrame:
    """Every descriptor of every request of ``log_df`` (rows of :data:`assets.monitoring.logs.LOG_SCHEMA`).

    Columns: :data:`ALL_COLUMNS`, one row per request in ``log_df``'s order. Integer columns that can
    be null (output descriptors, ``completion_tokens``) come out as float64 with NaN; flags are int8;
    ``prompt_language`` is an object column.
    """
    log_df = _as_polars(log_df)
    prompts = prompt_descriptors(log_df["prompt"].to_list(), tokenizer, workers=workers)
    return pl.concat([prompts, _serving_frame(log_df)], how="horizontal").to_pandas()


def build_reference(
    corpus_df: pl.DataFrame | pd.DataFrame,
    tokenizer: Any,
    sample: int | None = 5000,
    *,
    seed: int = 0,
    baseline_log_df: pl.DataFrame | pd.DataFrame | None = None,
    text_column: str = "text",
    workers: int = 1,
) -> pd.DataFrame:
    """The reference: corpus rows for the prompt descriptors, baseline rows for the rest (module docstring).

    Args:
        corpus_df: corpus documents (the pipeline's Parquet) with a ``text_column``.
        tokenizer: the training tokenizer (see :func:`unknown_token_share`).
        sample: documents drawn uniformly without replacement (seeded); None or more than there are:
            every document.
        seed: the sampling seed (the same corpus and seed give the same reference).
        baseline_log_df: an earlier window of inference logs, the reference of the output
            descriptors and the serving columns; None: those columns have no reference (all null).
        text_column: the corpus column holding the document text.
        workers: processes for the per-document quality score and language.

    Returns:
        :data:`ALL_COLUMNS` plus ``source`` (``"corpus"`` or ``"baseline"``): corpus rows first, with
        nulls outside :data:`PROMPT_COLUMNS`; then baseline rows, with nulls in :data:`PROMPT_COLUMNS`.
    """
    corpus = _as_polars(corpus_df)
    if sample is not None and sample < corpus.height:
        corpus = corpus.sample(n=sample, seed=seed)
    prompts = prompt_descriptors(corpus[text_column].to_list(), tokenizer, workers=workers)
    parts = [prompts.with_columns(pl.lit("corpus").alias("source"))]
    if baseline_log_df is not None:
        serving = _serving_frame(_as_polars(baseline_log_df))
        parts.append(serving.with_columns(pl.lit("baseline").alias("source")))
    frame = pl.concat(parts, how="diagonal_relaxed")
    missing = [pl.lit(None, dtype=pl.Float64).alias(c) for c in ALL_COLUMNS if c not in frame.columns]
    return frame.with_columns(missing).select(*ALL_COLUMNS, "source").to_pandas()


def corpus_snippets(
    corpus_df: pl.DataFrame | pd.DataFrame,
    n: int,
    *,
    min_words: int = 4,
    max_words: int = 64,
    seed: int = 0,
    text_column: str = "text",
) -> pl.DataFrame:
    """``n`` prompt-sized pieces of the corpus: a random run of ``min_words``..``max_words`` consecutive words
    from a random document each (seeded). Prompts are short; whole documents are not what traffic from the
    training distribution looks like, so the prompt reference is built from these."""
    import random

    rng = random.Random(seed)
    docs = [t.split() for t in _as_polars(corpus_df)[text_column].to_list() if t and t.split()]
    if not docs:
        raise ValueError(f"corpus_snippets: no text in column {text_column!r}")
    out = []
    for _ in range(n):
        words = docs[rng.randrange(len(docs))]
        size = min(len(words), rng.randint(min_words, max_words))
        start = rng.randrange(len(words) - size + 1)
        out.append(" ".join(words[start : start + size]))
    return pl.DataFrame({text_column: out})


def coarsen_languages(
    current: pd.DataFrame, reference: pd.DataFrame, min_share: float = 0.05, column: str = "prompt_language"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Languages under ``min_share`` of the reference become ``"other"`` on both sides. Short texts get many
    rare (often spurious) language labels; a categorical test over dozens of sparse categories flags noise,
    while a shift to a language the corpus lacks still shows as a larger ``"other"`` share."""
    ref_lang = reference[column].dropna()
    shares = ref_lang.value_counts(normalize=True)
    keep = set(shares[shares >= min_share].index)

    def coarse(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        mask = df[column].notna() & ~df[column].isin(keep)
        df.loc[mask, column] = "other"
        return df

    return coarse(current), coarse(reference)


# ----- drift -------------------------------------------------------------------------------------
@dataclass
class DriftResult:
    """What :func:`drift_report` found.

    Attributes:
        drift_share: drifted columns / tested columns (0.0 when none were tested).
        drifted_columns: the tested columns whose test reported drift, in test order.
        per_column: column -> ``{"stattest", "score", "threshold", "drifted", "n_current",
            "n_reference"}``: Evidently's test name (e.g. ``"K-S p_value"``), its value (a p-value or
            a distance, see ``stattest``), the threshold, the verdict, and the non-null values
            compared on each side.
        n_current: rows of the current frame.
        n_reference: rows of the reference frame (each column's own count is in ``per_column``).
        html_path: where the Evidently HTML report was written, or None.
        dataset_drift: ``drift_share >= drift_share_threshold`` (Evidently's dataset-drift rule).
        skipped_columns: columns not tested -> why (no values on one side).
    """

    drift_share: float
    drifted_columns: list[str]
    per_column: dict[str, dict[str, Any]]
    n_current: int
    n_reference: int
    html_path: str | None = None
    dataset_drift: bool = False
    skipped_columns: dict[str, str] = field(default_factory=dict)


def _as_pandas(df: pl.DataFrame | pd.DataFrame) -> pd.DataFrame:
    return df.to_pandas() if isinstance(df, pl.DataFrame) else df


def _column_kind(name: str, current: pd.Series, reference: pd.Series) -> str:
    numeric = pd.api.types.is_numeric_dtype(current) and pd.api.types.is_numeric_dtype(reference)
    if name in CATEGORICAL_COLUMNS or not numeric or pd.api.types.is_bool_dtype(current):
        return "categorical"
    return "numerical"


def _stattest_display_name(method: str | None, kind: str) -> str | None:
    """Evidently's display name of a stat test (``"jensenshannon"`` -> ``"Jensen-Shannon distance"``).

    A ValueDrift metric reports the display name when Evidently chose the test and the name it was
    given when the caller chose it; this makes both read the same.
    """
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    try:
        column_type = ColumnType.Categorical if kind == "categorical" else ColumnType.Numerical
        return get_registered_stattest(method, column_type).display_name
    except Exception:
        return method


def _write_html_atomically(snapshot: Any, path: str | os.PathLike) -> str:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        snapshot.save_html(str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return str(target)


def drift_report(
    current: pd.DataFrame | pl.DataFrame,
    reference: pd.DataFrame | pl.DataFrame,
    columns: Sequence[str] | None = None,
    drift_share_threshold: float = 0.5,
    html_path: str | os.PathLike | None = None,
    *,
    cat_method: str | None = "jensenshannon",
    num_method: str | None = None,
    per_column_method: dict[str, str] | None = None,
) -> DriftResult:
    """Per-column drift of ``current`` against ``reference`` with Evidently's ``DataDriftPreset``.

    Args:
        current: :func:`build_current`'s frame (or any frame with the columns).
        reference: :func:`build_reference`'s frame, or another ``build_current`` frame.
        columns: the columns to test. None: every column of :data:`ALL_COLUMNS` present in both
            frames. Named columns must exist in both frames (KeyError otherwise).
        drift_share_threshold: the dataset is drifting when at least this share of the tested
            columns drifted.
        html_path: write Evidently's HTML report there (atomically: a temporary file in the same
            folder, then ``os.replace``); None: no HTML.
        cat_method / num_method / per_column_method: Evidently stat-test names overriding the
            defaults (module docstring): ``"jensenshannon"`` for categorical columns, Evidently's
            size-dependent choice for numerical ones.

    A column with no non-null value on either side cannot be tested: it is left out of the share
    and listed in ``skipped_columns``. Columns in :data:`CATEGORICAL_COLUMNS`, or non-numeric,
    are categorical; the rest numerical. Evidently runs without network access and without any
    descriptor that needs downloads (only the drift preset is used).
    """
    cur, ref = _as_pandas(current), _as_pandas(reference)
    if columns is None:
        columns = [c for c in ALL_COLUMNS if c in cur.columns and c in ref.columns]
    else:
        missing = [c for c in columns if c not in cur.columns or c not in ref.columns]
        if missing:
            raise KeyError(f"columns missing from the current or reference frame: {missing}")
    skipped: dict[str, str] = {}
    tested: list[str] = []
    for c in dict.fromkeys(columns):
        n_cur, n_ref = int(cur[c].notna().sum()), int(ref[c].notna().sum())
        if n_cur == 0 or n_ref == 0:
            skipped[c] = f"no values in the {'current' if n_cur == 0 else 'reference'} data"
        else:
            tested.append(c)
    result = DriftResult(0.0, [], {}, len(cur), len(ref), None, False, skipped)
    if not tested:
        return result

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    kinds = {c: _column_kind(c, cur[c], ref[c]) for c in tested}
    definition = DataDefinition(
        numerical_columns=[c for c in tested if kinds[c] == "numerical"],
        categorical_columns=[c for c in tested if kinds[c] == "categorical"],
    )
    preset = DataDriftPreset(
        columns=tested,
        drift_share=drift_share_threshold,
        cat_method=cat_method,
        num_method=num_method,
        per_column_method=per_column_method,
    )
    with warnings.catch_warnings():
        # scipy and pandas warnings from Evidently internals (divide-by-zero in chi-square with a
        # category the reference lacks, future-deprecation notices) are noise here.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        snapshot = Report([preset], include_tests=True).run(
            current_data=Dataset.from_pandas(cur[tested].reset_index(drop=True), data_definition=definition),
            reference_data=Dataset.from_pandas(ref[tested].reset_index(drop=True), data_definition=definition),
        )
    report = snapshot.dict()

    verdicts: dict[str, bool] = {}
    for test in report.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        if params.get("type", "").endswith(":ValueDrift"):
            verdicts[params["column"]] = test["status"] == "FAIL"
    share = None
    for metric in report["metrics"]:
        config = metric["config"]
        kind = config.get("type", "")
        if kind.endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif kind.endswith(":ValueDrift"):
            c = config["column"]
            result.per_column[c] = {
                "stattest": _stattest_display_name(config.get("method"), kinds[c]),
                "score": float(metric["value"]),
                "threshold": config.get("threshold"),
                "drifted": verdicts[c],
                "n_current": int(cur[c].notna().sum()),
                "n_reference": int(ref[c].notna().sum()),
            }
    result.drifted_columns = [c for c in tested if result.per_column[c]["drifted"]]
    result.drift_share = share if share is not None else len(result.drifted_columns) / len(tested)
    result.dataset_drift = result.drift_share >= drift_share_threshold
    if html_path is not None:
        result.html_path = _write_html_atomically(snapshot, html_path)
    return result


# ----- the drift verdict: minimum reference, p-value and PSI, family-wise error ---------------------
#: Where each column's reference comes from, in order of preference; the first source that holds at least
#: :attr:`DriftRule.min_reference` values of the column is used, and with none the column has no verdict.
#: Content (language, unknown words) is judged against the corpus only; prompt shape against earlier traffic,
#: else the corpus snippets; outputs, latency, errors and guardrail verdicts against earlier traffic only (the
#: corpus has none).
REFERENCE_SOURCES: dict[str, tuple[str, ...]] = {
    **{c: ("corpus",) for c in CORPUS_CONTENT_COLUMNS},
    **{c: ("baseline", "corpus") for c in PROMPT_SHAPE_COLUMNS},
    **{c: ("baseline",) for c in OUTPUT_COLUMNS + SERVING_COLUMNS},
}
POOLED_COLUMNS = frozenset({"prompt_language"})  # categories rare in the reference are pooled as "other"


@dataclass(frozen=True)
class DriftRule:
    """The drift rule (module docstring, "The verdict"); the defaults are what ``bench/bench_drift.py rates``
    measured.

    Attributes:
        alpha: the family-wise error rate of one report: a column's p-value must be below
            ``alpha / m``, ``m`` the columns tested in that report (Bonferroni).
        psi_threshold: a column drifts only when its PSI is above this too (0.2: the usual "significant shift").
        psi_bins: PSI bins of a numerical column: the reference's quantiles ``1/bins .. (bins-1)/bins`` as
            edges (duplicates merged, so a column with few distinct values gets fewer bins).
        psi_epsilon: the share given to an empty bin (either side), so that ``log`` stays finite.
        min_reference: fewest values a reference must hold for a column (per source, non-null): a smaller
            earlier window is not taken as the baseline (the corpus is the fallback where it has the column).
        min_current: fewest values of a column this hour for a verdict on it.
        min_drifted_columns: the report drifts when at least this many columns drifted.
        categorical_draws: Monte Carlo draws of the categorical test's p-value (its smallest is
            ``1 / (draws + 1)``).
        seed: the Monte Carlo seed (the same data give the same p-value).
        pool_share: in :data:`POOLED_COLUMNS`, categories under this share of the reference become ``"other"``.
    """

    alpha: float = 0.05
    psi_threshold: float = 0.2
    psi_bins: int = 10
    psi_epsilon: float = 1e-4
    min_reference: int = 200
    min_current: int = 5
    min_drifted_columns: int = 1
    categorical_draws: int = 4999
    seed: int = 0
    pool_share: float = 0.05

    def describe(self, tested: int) -> str:
        p = self.alpha / tested if tested else self.alpha
        return (
            f"a column drifts when p < {self.alpha:g}/{tested} = {p:.2g} (Bonferroni over the {tested} tested "
            f"columns) and PSI > {self.psi_threshold:g} ({self.psi_bins} reference-quantile bins); the hour "
            f"drifts when at least {self.min_drifted_columns} column(s) drift; a reference needs "
            f">= {self.min_reference} values of the column, the hour >= {self.min_current}"
        )


def psi_edges(reference: Sequence[float] | np.ndarray, bins: int = 10) -> np.ndarray:
    """The inner bin edges of PSI for a numerical column: the reference's quantiles at ``1/bins, ...,
    (bins-1)/bins`` (numpy's default linear interpolation), duplicates merged. Bin ``i`` is
    ``(edges[i-1], edges[i]]``, the first bin ``(-inf, edges[0]]``, the last ``(edges[-1], inf)``."""
    ref = np.asarray(reference, dtype=float)
    if ref.size == 0:
        raise ValueError("psi_edges: empty reference")
    return np.unique(np.quantile(ref, np.arange(1, bins) / bins))


def _shares(counts: np.ndarray, epsilon: float) -> np.ndarray:
    return np.maximum(counts / max(int(counts.sum()), 1), epsilon)


def psi(
    reference: Sequence | np.ndarray | pd.Series,
    current: Sequence | np.ndarray | pd.Series,
    *,
    categorical: bool = False,
    bins: int = 10,
    epsilon: float = 1e-4,
) -> float:
    """Population stability index of ``current`` against ``reference``: ``sum((c - r) * ln(c / r))`` over
    bins, ``r`` and ``c`` the shares of each side in a bin, each at least ``epsilon``.

    Numerical: the bins of :func:`psi_edges` (deciles of the reference by default, so each bin holds about
    a tenth of the reference). Categorical: one bin per category seen on either side. Nulls are dropped.
    0 for identical shares; the bins are fixed by the reference, so PSI is unchanged by any increasing
    transformation of a numerical column. Under no drift PSI is about ``(k - 1) * (1/n_ref + 1/n_cur)``
    (``k`` bins): a small hour has a PSI above 0.2 by chance alone, which is why the verdict needs the
    p-value too.
    """
    ref, cur = pd.Series(reference).dropna(), pd.Series(current).dropna()
    if ref.empty or cur.empty:
        raise ValueError("psi: no values on one side")
    if categorical:
        cats = pd.Index(pd.unique(pd.concat([ref, cur], ignore_index=True)))
        r = ref.value_counts().reindex(cats, fill_value=0).to_numpy()
        c = cur.value_counts().reindex(cats, fill_value=0).to_numpy()
    else:
        edges = psi_edges(ref.to_numpy(dtype=float), bins)
        r = np.bincount(np.searchsorted(edges, ref.to_numpy(dtype=float), side="left"), minlength=edges.size + 1)
        c = np.bincount(np.searchsorted(edges, cur.to_numpy(dtype=float), side="left"), minlength=edges.size + 1)
    rs, cs = _shares(r, epsilon), _shares(c, epsilon)
    return float(np.sum((cs - rs) * np.log(cs / rs)))


def ks_pvalue(reference: Sequence | np.ndarray | pd.Series, current: Sequence | np.ndarray | pd.Series) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (scipy, two-sided, exact where scipy computes it exactly):
    valid at any sample size, conservative with ties (integer columns)."""
    from scipy.stats import ks_2samp

    ref = pd.Series(reference).dropna().to_numpy(dtype=float)
    cur = pd.Series(current).dropna().to_numpy(dtype=float)
    return float(ks_2samp(cur, ref).pvalue)


def categorical_pvalue(
    reference: Sequence | np.ndarray | pd.Series,
    current: Sequence | np.ndarray | pd.Series,
    *,
    draws: int = 4999,
    seed: int = 0,
) -> float:
    """Exact conditional test that both samples come from one categorical distribution (Monte Carlo).

    Statistic: Pearson's chi-square of the 2 x k table (reference and current counts of the k categories
    seen on either side). Null distribution: with both sides pooled, the current counts are a
    multivariate hypergeometric draw of ``n_cur`` from the pooled counts; ``draws`` such draws give
    ``p = (1 + #{draws with a statistic >= the observed one}) / (draws + 1)``. Unlike the chi-square
    approximation (and unlike a goodness-of-fit test that takes the reference shares as exact), it
    stays valid with tiny expected counts (a 0.5% error rate in a 30-request hour) and with a small
    reference. Seeded: the same data give the same p-value.
    """
    ref, cur = pd.Series(reference).dropna(), pd.Series(current).dropna()
    if ref.empty or cur.empty:
        raise ValueError("categorical_pvalue: no values on one side")
    cats = pd.Index(pd.unique(pd.concat([ref, cur], ignore_index=True)))
    if len(cats) < 2:
        return 1.0
    r = ref.value_counts().reindex(cats, fill_value=0).to_numpy(dtype=np.int64)
    c = cur.value_counts().reindex(cats, fill_value=0).to_numpy(dtype=np.int64)
    pooled, n_cur = r + c, int(c.sum())
    expected = n_cur * pooled / pooled.sum()

    def stat(counts: np.ndarray) -> np.ndarray:
        return (((counts - expected) ** 2) / expected).sum(axis=-1)

    sims = np.random.default_rng(seed).multivariate_hypergeometric(pooled, n_cur, size=draws)
    observed = stat(c)
    return float((1 + np.count_nonzero(stat(sims) >= observed * (1 - 1e-12))) / (draws + 1))


@dataclass(frozen=True)
class ColumnVerdict:
    """One column of a :class:`DriftVerdict`.

    Attributes:
        column: the descriptor.
        kind: ``"numerical"`` or ``"categorical"``.
        reference: the source it was compared with (``"corpus"``, ``"baseline"``), None without a verdict.
        note: why that source (``"baseline n=6 < 200"`` for a fallback) or why no verdict; "" otherwise.
        test: the p-value's test (``"K-S"``, ``"chi-square (exact, Monte Carlo)"``), None without a verdict.
        p_value / psi: the test's p-value and the PSI; None without a verdict.
        p_threshold: the p-value bound of this report (``alpha / tested``); None without a verdict.
        n_reference / n_current: non-null values compared on each side (of the chosen source; without a
            verdict, of the largest source there was).
        drifted: the column's verdict (False without one).
        verdict: ``"drift"``, ``"no drift"`` or ``"no verdict (<why>)"``.
    """

    column: str
    kind: str
    reference: str | None
    note: str
    test: str | None
    p_value: float | None
    psi: float | None
    p_threshold: float | None
    n_reference: int
    n_current: int
    drifted: bool
    verdict: str

    @property
    def reference_label(self) -> str:
        """The reference, and why it is the fallback (``"corpus (baseline n=6 < 200)"``); ``"-"`` for none."""
        if self.reference is None:
            return "-"
        return self.reference + (f" ({self.note})" if self.note and self.p_value is not None else "")


@dataclass
class DriftVerdict:
    """What :func:`drift_verdict` found.

    Attributes:
        verdict: ``"drift"``, ``"no drift"``, or ``"no verdict"`` (no column could be tested).
        dataset_drift: ``verdict == "drift"``.
        drifted_columns / tested_columns: in column order.
        drift_share: drifted / tested (0.0 when none was tested).
        columns: column -> :class:`ColumnVerdict`, every column asked for (tested or not), in order.
        rule: the rule applied.
        n_current: rows of the current frame.
        html_path: where the HTML report was written, or None.
    """

    verdict: str
    dataset_drift: bool
    drifted_columns: list[str]
    tested_columns: list[str]
    drift_share: float
    columns: dict[str, ColumnVerdict]
    rule: DriftRule
    n_current: int
    html_path: str | None = None

    @property
    def p_threshold(self) -> float | None:
        return self.rule.alpha / len(self.tested_columns) if self.tested_columns else None

    @property
    def no_verdict(self) -> dict[str, str]:
        """Columns without a verdict -> why."""
        return {c: v.verdict for c, v in self.columns.items() if v.p_value is None}

    def describe(self) -> str:
        return self.rule.describe(len(self.tested_columns))

    TABLE_HEADER = ("column", "reference", "test", "p", "PSI", "n_ref", "n_cur", "verdict")

    def rows(self) -> list[tuple]:
        """One row per column: :attr:`TABLE_HEADER` (p and PSI rounded for reading; exact in :attr:`columns`)."""
        return [
            (
                v.column,
                v.reference_label,
                v.test or "-",
                "-" if v.p_value is None else f"{v.p_value:.3g}",
                "-" if v.psi is None else f"{v.psi:.3f}",
                v.n_reference,
                v.n_current,
                v.verdict,
            )
            for v in self.columns.values()
        ]


def _values(frame: pd.DataFrame | None, column: str) -> pd.Series | None:
    if frame is None or column not in frame.columns:
        return None
    return frame[column].dropna()


def _pool_rare(ref: pd.Series, cur: pd.Series, min_share: float) -> tuple[pd.Series, pd.Series]:
    shares = ref.value_counts(normalize=True)
    keep = set(shares[shares >= min_share].index)
    return (ref.where(ref.isin(keep), "other"), cur.where(cur.isin(keep), "other"))


def drift_verdict(
    current: pd.DataFrame | pl.DataFrame,
    corpus: pd.DataFrame | pl.DataFrame | None = None,
    baseline: pd.DataFrame | pl.DataFrame | None = None,
    columns: Sequence[str] | None = None,
    rule: DriftRule = DriftRule(),
    html_path: str | os.PathLike | None = None,
    *,
    sources: dict[str, tuple[str, ...]] | None = None,
) -> DriftVerdict:
    """The drift verdict of ``current`` (module docstring, "The verdict").

    Args:
        current: :func:`build_current`'s frame of this hour.
        corpus: the corpus reference: :func:`build_reference`'s frame (its prompt descriptors; only the
            ``"corpus"`` rows count when a ``source`` column is there), or None.
        baseline: :func:`build_current`'s frame of earlier traffic (the baseline window), or None.
        columns: the columns to judge; None: :data:`ALL_COLUMNS` present in ``current``.
        rule: thresholds (:class:`DriftRule`).
        html_path: also write an HTML report there (Evidently's widgets of both tests per tested column,
            under a table of the verdicts), atomically; None: none.
        sources: column -> reference sources in order of preference (default :data:`REFERENCE_SOURCES`;
            a column it does not name tries the baseline, then the corpus).
    """
    cur = _as_pandas(current)
    frames = {
        "corpus": None if corpus is None else _as_pandas(corpus),
        "baseline": None if baseline is None else _as_pandas(baseline),
    }
    if frames["corpus"] is not None and "source" in frames["corpus"].columns:
        frames["corpus"] = frames["corpus"][frames["corpus"]["source"] == "corpus"]
    sources = REFERENCE_SOURCES if sources is None else sources
    if columns is None:
        columns = [c for c in ALL_COLUMNS if c in cur.columns]
    missing = [c for c in columns if c not in cur.columns]
    if missing:
        raise KeyError(f"columns missing from the current frame: {missing}")

    plans: dict[str, tuple] = {}
    untested: dict[str, ColumnVerdict] = {}
    for c in dict.fromkeys(columns):
        kind = "categorical" if c in CATEGORICAL_COLUMNS or not pd.api.types.is_numeric_dtype(cur[c]) else "numerical"
        cur_values = cur[c].dropna()
        order = sources.get(c, ("baseline", "corpus"))
        chosen, passed_over = None, []
        for src in order:
            values = _values(frames[src], c)
            if values is not None and len(values) >= rule.min_reference:
                chosen = (src, values)
                break
            passed_over.append(
                f"no {src}" if values is None or values.empty else f"{src} n={len(values)} < {rule.min_reference}"
            )
        reasons = [] if chosen is not None else passed_over
        if len(cur_values) < rule.min_current:
            reasons.append(f"n_cur={len(cur_values)} < {rule.min_current}")
        if reasons:
            why = "; ".join(reasons)
            n_ref = (
                len(chosen[1])
                if chosen is not None
                else max((len(v) for src in order if (v := _values(frames[src], c)) is not None), default=0)
            )
            untested[c] = ColumnVerdict(
                c,
                kind,
                None if chosen is None else chosen[0],
                why,
                None,
                None,
                None,
                None,
                n_ref,
                len(cur_values),
                False,
                f"no verdict ({why})",
            )
        else:
            plans[c] = (kind, chosen[0], "; ".join(passed_over), chosen[1], cur_values)

    tested = list(plans)
    p_threshold = rule.alpha / len(tested) if tested else None
    verdicts: dict[str, ColumnVerdict] = {}
    compared: dict[str, tuple[str, pd.Series, pd.Series]] = {}
    for c in dict.fromkeys(columns):
        if c in untested:
            verdicts[c] = untested[c]
            continue
        kind, src, note, ref_values, cur_values = plans[c]
        if kind == "categorical":
            ref_values, cur_values = ref_values.astype(object), cur_values.astype(object)
            if c in POOLED_COLUMNS:
                ref_values, cur_values = _pool_rare(ref_values, cur_values, rule.pool_share)
            p = categorical_pvalue(ref_values, cur_values, draws=rule.categorical_draws, seed=rule.seed)
            test = "chi-square (exact, Monte Carlo)"
        else:
            p, test = ks_pvalue(ref_values, cur_values), "K-S"
        value = psi(
            ref_values, cur_values, categorical=kind == "categorical", bins=rule.psi_bins, epsilon=rule.psi_epsilon
        )
        drifted = p < p_threshold and value > rule.psi_threshold
        verdicts[c] = ColumnVerdict(
            c,
            kind,
            src,
            note,
            test,
            p,
            value,
            p_threshold,
            len(ref_values),
            len(cur_values),
            drifted,
            "drift" if drifted else "no drift",
        )
        compared[c] = (kind, ref_values, cur_values)

    drifted_columns = [c for c in tested if verdicts[c].drifted]
    if not tested:
        verdict = "no verdict"
    else:
        verdict = "drift" if len(drifted_columns) >= rule.min_drifted_columns else "no drift"
    result = DriftVerdict(
        verdict,
        verdict == "drift",
        drifted_columns,
        tested,
        len(drifted_columns) / len(tested) if tested else 0.0,
        verdicts,
        rule,
        len(cur),
    )
    if html_path is not None:
        result.html_path = _write_verdict_html(result, compared, html_path)
    return result


# ----- the HTML report of a verdict --------------------------------------------------------------
def _register_stattests(rule: DriftRule) -> dict[str, str]:
    """Evidently stat tests computing exactly :func:`ks_pvalue`, :func:`categorical_pvalue` and :func:`psi`
    with ``rule``'s parameters (registered once per parameter set): kind/test -> registered name."""
    from evidently.legacy.calculations.stattests.registry import StatTest, _registered_stat_tests, register_stattest
    from evidently.legacy.core import ColumnType

    names = {
        "ks": "crawl2serve_ks_p",
        "cat": f"crawl2serve_chisq_exact_p_{rule.categorical_draws}_{rule.seed}",
        "psi": f"crawl2serve_psi_{rule.psi_bins}_{rule.psi_epsilon:g}",
    }
    if names["ks"] not in _registered_stat_tests:
        register_stattest(
            StatTest(names["ks"], "K-S p-value", [ColumnType.Numerical], 0.05),
            lambda ref, cur, _type, threshold: ((p := ks_pvalue(ref, cur)), p < threshold),
        )
    if names["cat"] not in _registered_stat_tests:
        register_stattest(
            StatTest(names["cat"], "chi-square p-value (exact, Monte Carlo)", [ColumnType.Categorical], 0.05),
            lambda ref, cur, _type, threshold: (
                (p := categorical_pvalue(ref, cur, draws=rule.categorical_draws, seed=rule.seed)),
                p < threshold,
            ),
        )
    if names["psi"] not in _registered_stat_tests:
        register_stattest(
            StatTest(
                names["psi"],
                f"PSI ({rule.psi_bins} reference-quantile bins)",
                [ColumnType.Numerical, ColumnType.Categorical],
                0.2,
            ),
            lambda ref, cur, kind, threshold: (
                (
                    v := psi(
                        ref,
                        cur,
                        categorical=kind == ColumnType.Categorical,
                        bins=rule.psi_bins,
                        epsilon=rule.psi_epsilon,
                    )
                ),
                v > threshold,
            ),
        )
    return names


def _verdict_table_html(result: DriftVerdict) -> str:
    import html

    colour = {"drift": "#fde2e1", "no drift": "#e6f4ea"}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in DriftVerdict.TABLE_HEADER)
    body = "".join(
        f'<tr style="background:{colour.get(row[-1], "#f1f3f4")}">'
        + "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
        + "</tr>"
        for row in result.rows()
    )
    return (
        f'<div id="crawl2serve-drift-verdict" style="font-family:sans-serif;margin:16px">'
        f"<h2>Drift verdict: {html.escape(result.verdict)} ({len(result.drifted_columns)} of "
        f"{len(result.tested_columns)} tested columns drifted; {result.n_current} requests)</h2>"
        f"<p>{html.escape(result.describe())}. Below: Evidently's view of both tests of every tested column "
        f"(its own 'drift detected' is per test; the verdict needs both).</p>"
        f'<table border="1" cellpadding="4" style="border-collapse:collapse"><tr>{head}</tr>{body}</table>'
        f"</div>"
    )


def _write_verdict_html(
    result: DriftVerdict, compared: dict[str, tuple[str, pd.Series, pd.Series]], path: str | os.PathLike
) -> str:
    table = _verdict_table_html(result)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        if compared:
            from evidently import DataDefinition, Dataset, Report
            from evidently.metrics import ValueDrift

            names = _register_stattests(result.rule)
            n_ref = max(len(r) for _, r, _ in compared.values())
            n_cur = max(len(c) for _, _, c in compared.values())
            ref = pd.DataFrame({c: r.reset_index(drop=True).reindex(range(n_ref)) for c, (_, r, _) in compared.items()})
            cur = pd.DataFrame({c: v.reset_index(drop=True).reindex(range(n_cur)) for c, (_, _, v) in compared.items()})
            cats = [c for c, (kind, _, _) in compared.items() if kind == "categorical"]
            for c in cats:  # one dtype per categorical column, so Evidently sees the same labels on both sides
                ref[c], cur[c] = ref[c].astype(object), cur[c].astype(object)
            definition = DataDefinition(
                numerical_columns=[c for c in compared if c not in cats], categorical_columns=cats
            )
            metrics = []
            for c, (kind, _, _) in compared.items():
                metrics.append(
                    ValueDrift(
                        column=c, method=names["cat" if kind == "categorical" else "ks"], threshold=result.p_threshold
                    )
                )
                metrics.append(ValueDrift(column=c, method=names["psi"], threshold=result.rule.psi_threshold))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                snapshot = Report(metrics).run(
                    current_data=Dataset.from_pandas(cur, data_definition=definition),
                    reference_data=Dataset.from_pandas(ref, data_definition=definition),
                )
            snapshot.save_html(str(tmp))
            page = tmp.read_text(encoding="utf-8").replace("<body>", "<body>\n" + table, 1)
        else:
            page = f'<!DOCTYPE html><html lang="en"><head><meta charset="UTF-8"></head><body>{table}</body></html>'
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return str(target)


# ----- absolute rates ----------------------------------------------------------------------------
def rates(log_df: pl.DataFrame | pd.DataFrame) -> dict[str, float | int | None]:
    """Absolute health figures of a window of requests.

    - ``requests``: rows.
    - ``error_rate``: share of requests with ``status >= 500`` (engine failures; 4xx are the client's).
    - ``unsafe_rate``: share with ``input_verdict == "block"`` or ``output_verdict == "block"``.
    - ``flag_rate``: share with ``input_verdict == "flag"`` or ``output_verdict == "flag"`` (a
      request flagged on one side and blocked on the other counts in both rates).
    - ``latency_p50_ms`` / ``latency_p99_ms``: percentiles of ``latency_ms`` over every request with
      a latency (errors included), linear interpolation between order statistics.

    Shares are 0.0 and percentiles None for an empty window.
    """
    df = _as_polars(log_df)
    n = df.height
    if n == 0:
        return {
            "requests": 0,
            "error_rate": 0.0,
            "unsafe_rate": 0.0,
            "flag_rate": 0.0,
            "latency_p50_ms": None,
            "latency_p99_ms": None,
        }

    def either(verdict: str) -> pl.Expr:
        return ((pl.col("input_verdict") == verdict) | (pl.col("output_verdict") == verdict)).fill_null(False)

    row = df.select(
        (pl.col("status") >= 500).fill_null(False).mean().alias("error_rate"),
        either("block").mean().alias("unsafe_rate"),
        either("flag").mean().alias("flag_rate"),
        pl.col("latency_ms").quantile(0.5, interpolation="linear").alias("latency_p50_ms"),
        pl.col("latency_ms").quantile(0.99, interpolation="linear").alias("latency_p99_ms"),
    ).row(0, named=True)
    out: dict[str, float | int | None] = {"requests": n}
    out.update({k: (None if v is None else float(v)) for k, v in row.items()})
    return out
