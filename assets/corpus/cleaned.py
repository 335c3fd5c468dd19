"""``clean_documents`` and ``document_rejections``: the corpus rules applied to extracted pages."""

import time
import typing
from collections import Counter
from typing import Literal

import dagster as dg
import polars as pl
import pydantic
from pydantic import Field

from crawl2serve.assets.contracts import Distribution, TableContract
from crawl2serve.assets.metadata import facts_table, frame_table, funnel_table, histogram_table, stage_facts
from crawl2serve.assets.partitions import DAILY_FRESHNESS, crawl_partitions
from crawl2serve.resources.corpus_executor import CorpusExecutor, Shard, run_shards
from crawl2serve.resources.io_manager import ShardedTable
from crawl2serve.resources.storage import DataRoot

from .cleaning import clean_document
from .extract import content_hash
from .extracted import COLUMNS as PAGE_COLUMNS
from .language import MIXED, MIXED_MIN_SHARE, identify
from .shards import clean_shard, run_facts, staged_table, staged_view, staging
from .thresholds import RULE_TYPES, describe_type, field_types, profile_with_overrides

LANGUAGE_RULE = "language"
KEPT_SCHEMA = {
    "doc_id": pl.String,
    "url": pl.String,
    "canonical_url": pl.String,
    "host": pl.String,
    "title": pl.String,
    "text": pl.String,
    "language": pl.String,
    "language_score": pl.Float64,
    "quality_score": pl.Float64,
    "word_count": pl.Int64,
    "char_count": pl.Int64,
    "content_hash": pl.String,
    "c4_lines_removed": pl.Int64,
    "language_mix": pl.String,
    "pii_emails": pl.Int64,
    "pii_ip_addresses": pl.Int64,
    "pii_phones": pl.Int64,
    "fetch_time": pl.Datetime("us", "UTC"),
}
REJECTED_SCHEMA = {
    "doc_id": pl.String,
    "url": pl.String,
    "host": pl.String,
    "rule": pl.String,
    "reason": pl.String,
    "quality_score": pl.Float64,
    "language": pl.String,
    "text_chars": pl.Int64,
    "text": pl.String,
    "fetch_time": pl.Datetime("us", "UTC"),
}
KEPT_COLUMNS = {
    **{c: PAGE_COLUMNS[c] for c in ("doc_id", "url", "canonical_url", "host", "title", "fetch_time")},
    "text": "The cleaned text: Unicode and whitespace normalized, C4-removed lines gone, PII replaced.",
    "language": "Language the language rule decided on ('mixed' for a mixed-language page).",
    "language_score": "Confidence in language, 0-1.",
    "quality_score": "Quality 0-1 from sentence length, unique-word ratio and alphabetic ratio.",
    "word_count": "Words in the cleaned text.",
    "char_count": "Characters of the cleaned text.",
    "content_hash": "BLAKE2b of the cleaned text with case and whitespace folded: equal for exact duplicates.",
    "c4_lines_removed": "Lines the C4 line rules removed.",
    "language_mix": "A kept mixed-language page's languages and shares ('fr 57% + en 42%'); null otherwise.",
    "pii_emails": "Email addresses replaced.",
    "pii_ip_addresses": "IP addresses replaced.",
    "pii_phones": "Phone numbers replaced.",
}
KEPT = TableContract(
    schema=KEPT_SCHEMA,
    columns=KEPT_COLUMNS,
    not_null=("doc_id", "url", "host", "text", "quality_score", "content_hash", "fetch_time"),
    unique=("doc_id", "url"),
    ranges={"quality_score": (0.0, 1.0), "word_count": (1, None), "char_count": (1, None)},
    distributions=(
        Distribution(
            "documents_kept",
            "At least one document survives cleaning.",
            lambda df, _: float(df.height),
            low=1,
            blocking=True,
        ),
        Distribution(
            "rejected_share",
            "Share of extracted pages rejected (warn above 80%).",
            lambda df, f: 1 - df.height / max(f["in"], 1),
            high=0.8,
        ),
        Distribution(
            "mean_quality",
            "Mean quality score of kept documents (warn below 0.4).",
            lambda df, _: float(df["quality_score"].mean() or 0.0),
            low=0.4,
        ),
    ),
)
REJECTED = TableContract(
    schema=REJECTED_SCHEMA,
    columns={
        **{c: PAGE_COLUMNS[c] for c in ("doc_id", "url", "host", "text", "text_chars", "fetch_time")},
        "rule": "The first rule that dropped the document (language, length_bounds, c4_quality, ...).",
        "reason": "What the rule measured against which threshold.",
        "quality_score": "Quality 0-1 when the rule scored it (0 for language rejections).",
        "language": "Language the language rule decided on ('mixed' for a mixed-language page).",
    },
    not_null=("doc_id", "url", "rule", "reason"),
    unique=("doc_id",),
    ranges={"quality_score": (0.0, 1.0)},
    distributions=(
        Distribution(
            "known_rules",
            "Every rejection names a rule of the pipeline.",
            lambda df, _: float((~df["rule"].is_in([LANGUAGE_RULE, *RULE_TYPES])).sum()),
            high=0,
            blocking=True,
        ),
    ),
)


def _config_annotation(tp: object) -> object:
    """The Dagster config type for a threshold's Python type: bool, int, float stay themselves; a string or
    ``Literal`` choice is a string; a tuple is a list of its items' type (Dagster config has no tuples and
    no unions, so a pair such as ``(2, 0.2)`` is a list of numbers, checked again on the way in)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (bool, int, float, str):
        return tp
    if origin is Literal:
        return str
    if origin is tuple:
        items = [a for a in args if a is not Ellipsis]
        if len(items) == 1 or (items and all(a in (int, float) for a in items)):
            inner = items[0] if len(items) == 1 else float
            return list[_config_annotation(inner)]  # type: ignore[misc]
        raise TypeError(f"no config type for {tp}")
    raise TypeError(f"no config type for {tp}")


def _overrides_class(rule_name: str) -> type[dg.Config]:
    """A typed config class with one optional field per threshold of ``rule_name`` (unset: the profile's value)."""
    fields = {
        name: (
            _config_annotation(tp) | None,
            Field(None, description=f"{rule_name}.{name}: {describe_type(tp)}; unset keeps the profile's value."),
        )
        for name, tp in field_types(rule_name).items()
    }
    return pydantic.create_model(f"{rule_name.title().replace('_', '')}Overrides", __base__=dg.Config, **fields)


_RULE_OVERRIDES = {name: _overrides_class(name) for name in RULE_TYPES}


class _OverridesBase(dg.Config):
    def flat(self) -> dict[str, object]:
        """``{"rule.field": value}`` for every field set (the form :func:`profile_with_overrides` takes)."""
        out: dict[str, object] = {
            k: getattr(self, k) for k in ("keep_indentation", "order") if getattr(self, k) is not None
        }
        for rule in _RULE_OVERRIDES:
            for name, value in getattr(self, rule).model_dump().items():
                if value is not None:
                    out[f"{rule}.{name}"] = value
        return out


ThresholdOverrides = pydantic.create_model(
    "ThresholdOverrides",
    __base__=_OverridesBase,
    __doc__="""Per-threshold overrides of the profile, typed per field (a bool stays a bool, a tuple is a list):
    ``{"c4_quality": {"filter_curly_bracket": false}, "gopher_repetition": {"top_n_grams": [[2, 0.3]]}}``.""",
    keep_indentation=(bool | None, Field(None, description="Normalization keeps leading spaces.")),
    order=(list[str] | None, Field(None, description=f"Rules to run, in order, from {list(RULE_TYPES)}.")),
    **{
        name: (cls, Field(default_factory=cls, description=f"Overrides of {name}'s thresholds."))
        for name, cls in _RULE_OVERRIDES.items()
    },
)


class CleanConfig(dg.Config):
    """Which thresholds the rules use: ``published`` = the papers' thresholds with crawl2serve's measures
    and order; ``fineweb`` = FineWeb as datatrove 0.10.1 implements it; ``documentation`` = relaxed for
    software documentation (see assets/corpus/thresholds.py)."""

    profile: Literal["published", "fineweb", "documentation"] = Field("published", description="Threshold profile.")
    overrides: ThresholdOverrides = Field(
        default_factory=ThresholdOverrides,
        description='Typed per-threshold overrides, e.g. {"gopher_quality": {"min_doc_words": 30}}.',
    )
    languages: list[str] = Field(default_factory=lambda: ["en"], description="Languages kept (CLD2 codes); empty: all.")
    min_language_score: float = Field(0.5, description="CLD2 confidence below which a page's language is unknown.")
    mixed_language: Literal["drop", "tag"] = Field(
        "drop",
        description=f"Pages whose language is 'mixed' (a second language holds >= {MIXED_MIN_SHARE:.0%} of the text): "
        "'drop' rejects them (rule 'language'); 'tag' judges them by their first language and keeps "
        "them with language_mix set, e.g. 'fr 57% + en 42%'.",
    )
    per_language_rules: bool = Field(
        True,
        description="Judge each page with its detected language's stop words and thresholds (FineWeb-2's "
        "per-language settings, assets/corpus/languages.py; English, unknown and untabled languages keep the "
        "profile's English rules). false: English rules for every page.",
    )


def language_verdict(row: dict, config: CleanConfig) -> tuple[str, float, str | None, str | None]:
    """(language, score, language_mix, rejection reason or None) of an extracted page under ``config``.

    A ``mixed`` page is re-identified (the extracted table keeps only the verdict) to name its
    languages: dropped under ``mixed_language="drop"``, else judged by its first language and tagged.
    """
    language, score, mix = row["language"], row["language_score"], None
    if language == MIXED:
        lid = identify(row["text"])
        mix = lid.describe()
        if config.mixed_language == "drop":
            return language, score, mix, f"language=mixed ({mix})"
        language, score = lid.language, lid.score
    langs = set(config.languages)
    if langs and (language not in langs or score < config.min_language_score):
        return language, score, mix, f"language={language}@{score:.2f}" + (f" ({mix})" if mix else "")
    return language, score, mix, None


def clean_frame(pages: pl.DataFrame, config: CleanConfig, log=None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """(kept, rejected, facts) for a frame of extracted pages."""
    profile = profile_with_overrides(config.profile, config.overrides.flat())
    kept, rejected = [], []
    dropped = Counter()
    started = time.monotonic()
    for i, row in enumerate(pages.iter_rows(named=True)):
        language, score, mix, why = language_verdict(row, config)
        if why is not None:
            dropped[LANGUAGE_RULE] += 1
            rejected.append(
                (
                    row["doc_id"],
                    row["url"],
                    row["host"],
                    LANGUAGE_RULE,
                    why,
                    0.0,
                    language,
                    len(row["text"]),
                    row["text"],
                    row["fetch_time"],
                )
            )
            continue
        res = clean_document(row["text"], profile, language=language if config.per_language_rules else None)
        if res.text is None:
            dropped[res.dropped_by] += 1
            rejected.append(
                (
                    row["doc_id"],
                    row["url"],
                    row["host"],
                    res.dropped_by,
                    res.reason,
                    res.quality,
                    language,
                    len(row["text"]),
                    row["text"],
                    row["fetch_time"],
                )
            )
            continue
        kept.append(
            (
                row["doc_id"],
                row["url"],
                row["canonical_url"],
                row["host"],
                row["title"],
                res.text,
                language,
                score,
                res.quality,
                len(res.text.split()),
                len(res.text),
                content_hash(res.text),
                res.lines_removed,
                mix,
                res.pii.get("email", 0),
                res.pii.get("ip_address", 0),
                res.pii.get("phone", 0),
                row["fetch_time"],
            )
        )
        if log and (i + 1) % 1000 == 0:
            log(f"cleaned {i + 1}/{pages.height} ({(i + 1) / (time.monotonic() - started):.0f} docs/s)")
    funnel, n = [], pages.height
    for rule in (LANGUAGE_RULE, *profile.order):
        funnel.append((rule, n, n - dropped[rule]))
        n -= dropped[rule]
    facts = {"in": pages.height, "funnel": funnel, "seconds": time.monotonic() - started, "profile": profile}
    return (
        pl.DataFrame(kept, schema=KEPT_SCHEMA, orient="row"),
        pl.DataFrame(rejected, schema=REJECTED_SCHEMA, orient="row"),
        facts,
    )


@dg.multi_asset(
    outs={
        "clean_documents": dg.AssetOut(
            group_name="corpus",
            kinds={"python", "parquet", "ray"},
            tags={"stage": "corpus"},
            freshness_policy=DAILY_FRESHNESS,
            description="Cleaned, quality-scored, PII-scrubbed documents.",
            metadata=KEPT.definition_metadata(),
            **stage_facts("corpus"),
        ),
        "document_rejections": dg.AssetOut(
            group_name="corpus",
            kinds={"parquet"},
            tags={"stage": "corpus"},
            freshness_policy=DAILY_FRESHNESS,
            description="Every dropped document with the rule that dropped it.",
            metadata=REJECTED.definition_metadata(),
            **stage_facts("corpus"),
        ),
    },
    partitions_def=crawl_partitions,
    check_specs=KEPT.check_specs("clean_documents") + REJECTED.check_specs("document_rejections"),
)
def clean_documents(
    context: dg.AssetExecutionContext,
    config: CleanConfig,
    data_root: DataRoot,
    corpus_executor: CorpusExecutor,
    extracted_pages: ShardedTable,
):
    """Cleaned documents and the rejections table, from ``extracted_pages``.

    Unicode/whitespace normalization, then language, length bounds, C4 line and document rules, Gopher
    repetition and quality rules and FineWeb quality rules (the first failing rule drops a document and
    is recorded), PII scrubbing (emails, IP addresses, phone numbers), and a 0–1 quality score
    (sentence length, unique-word ratio, alphabetic ratio). One shard of ``extracted_pages`` (a WARC file's
    pages) per task on the ``corpus_executor``; a shard that fails is recorded and the others commit.
    """
    partition = context.partition_key
    profile = profile_with_overrides(config.profile, config.overrides.flat())  # a bad override fails here, once
    kept_dir = staging(data_root, "clean_documents", partition)
    rejected_dir = staging(data_root, "document_rejections", partition)
    keys = [f"{i:05d}" for i in range(len(extracted_pages.shards))]
    sources = {k: s.source for k, s in zip(keys, extracted_pages.shards)}
    shards = [
        Shard(k, (data_root.url, s, config, f"{kept_dir}/{k}.parquet", f"{rejected_dir}/{k}.parquet"), weight=s.rows)
        for k, s in zip(keys, extracted_pages.shards)
    ]
    run = run_shards(corpus_executor.executor(), clean_shard, shards, context.log.info)
    done = set(run.values)
    kept_table = staged_table(data_root, kept_dir, keys, sources, done, KEPT_SCHEMA)
    rejected_table = staged_table(data_root, rejected_dir, keys, sources, done, REJECTED_SCHEMA)
    kept, kept_nulls = staged_view(data_root, kept_table, KEPT.not_null)
    rejected, rejected_nulls = staged_view(data_root, rejected_table, REJECTED.not_null)
    funnel = [(rule, 0, 0) for rule in (LANGUAGE_RULE, *profile.order)]
    for value in run.values.values():
        funnel = [(rule, a + n_in, b + n_out) for (rule, a, b), (_, n_in, n_out) in zip(funnel, value["funnel"])]
    facts = {"in": sum(v["in"] for v in run.values.values()), "funnel": funnel, "profile": profile}
    by_rule = rejected.group_by("rule").len().sort("len", descending=True)
    overrides = config.overrides.flat()
    yield dg.Output(
        kept_table,
        output_name="clean_documents",
        metadata={
            "documents_in": facts["in"],
            "documents_kept": kept.height,
            "kept_share": round(kept.height / max(facts["in"], 1), 4),
            "mean_quality": round(float(kept["quality_score"].mean() or 0.0), 4),
            "mixed_language_kept": int(kept["language_mix"].is_not_null().sum()),
            **run_facts(run, sources, facts["in"]),
            "funnel": funnel_table(facts["funnel"]),
            "quality_histogram": histogram_table(kept["quality_score"].to_list(), title="quality"),
            "pii_replacements": facts_table(
                {c: int(kept[c].sum()) for c in ("pii_emails", "pii_ip_addresses", "pii_phones")},
                ("column", "replaced"),
            ),
            "profile": dg.MetadataValue.text(profile.name),
            "rule_order": dg.MetadataValue.text(" -> ".join(profile.order)),
            "overrides": dg.MetadataValue.json(overrides),
        },
    )
    yield dg.Output(
        rejected_table,
        output_name="document_rejections",
        metadata={
            "documents_rejected": rejected.height,
            "shards": len(rejected_table.shards),
            "by_rule": frame_table(by_rule.rename({"len": "documents"})),
            "sample": frame_table(rejected.select("url", "rule", "reason"), limit=15),
        },
    )
    yield from KEPT.evaluate(kept, "clean_documents", facts, schema=kept_table.schema, null_counts=kept_nulls)
    yield from REJECTED.evaluate(
        rejected, "document_rejections", facts, schema=rejected_table.schema, null_counts=rejected_nulls
    )
