"""``extracted_pages``: main-content text of every stored HTML page of a crawl partition."""

import time

import dagster as dg
import polars as pl
from pydantic import Field

from crawl2serve.assets.contracts import Distribution, TableContract
from crawl2serve.assets.crawl.warc import iter_records
from crawl2serve.assets.metadata import frame_table, stage_facts, table
from crawl2serve.assets.partitions import DAILY_FRESHNESS, crawl_partitions
from crawl2serve.resources.corpus_executor import CorpusExecutor, Shard, run_shards
from crawl2serve.resources.storage import DataRoot

from .extract import DEFAULT_SKIP_SELECTORS, content_hash, doc_id, extract_html, extract_text_record
from .shards import extract_shard, run_facts, staged_table, staged_view, staging

SCHEMA = {
    "doc_id": pl.String,
    "url": pl.String,
    "canonical_url": pl.String,
    "host": pl.String,
    "title": pl.String,
    "text": pl.String,
    "language": pl.String,
    "language_score": pl.Float64,
    "content_hash": pl.String,
    "encoding": pl.String,
    "html_bytes": pl.Int64,
    "text_chars": pl.Int64,
    "fetch_time": pl.Datetime("us", "UTC"),
}
# What each column holds; the corpus tables after this one describe the columns they keep with these words.
COLUMNS = {
    "doc_id": "Stable document id: 16 hex chars of BLAKE2b over the URL.",
    "url": "The page's URL as crawled.",
    "canonical_url": "The page's <link rel=canonical> (absolute), else its URL.",
    "host": "Host (and port) of the URL.",
    "title": "The page's <title> ('' for WET text records).",
    "text": "Main-content text extracted by resiliparse (boilerplate removed).",
    "language": "Language code CLD2 detects in the text.",
    "language_score": "CLD2's confidence in language, 0-1.",
    "content_hash": "BLAKE2b of the text with case and whitespace folded: equal for exact duplicates.",
    "encoding": "Character encoding the HTML was decoded with.",
    "html_bytes": "Bytes of the stored response body.",
    "text_chars": "Characters of the extracted text.",
    "fetch_time": "When raw_crawl fetched the page (UTC).",
}
CONTRACT = TableContract(
    schema=SCHEMA,
    columns=COLUMNS,
    not_null=("doc_id", "url", "host", "text", "content_hash", "language", "fetch_time"),
    unique=("doc_id", "url"),
    ranges={"language_score": (0.0, 1.0), "text_chars": (0, None), "html_bytes": (0, None)},
    distributions=(
        Distribution(
            "extraction_failure_share",
            "Pages that failed to extract (warn above 5%).",
            lambda df, f: f["failed"] / max(f["pages"], 1),
            high=0.05,
        ),
        Distribution(
            "empty_text_share",
            "Pages with under 50 characters of main content (warn above 30%).",
            lambda df, _: float((df["text_chars"] < 50).mean() or 0.0) if df.height else 0.0,
            high=0.3,
        ),
    ),
)
HTML_TYPES = ("text/html", "application/xhtml+xml", "")


class ExtractConfig(dg.Config):
    main_content: bool = Field(True, description="Keep only main content (drop navigation and boilerplate).")
    skip_selectors: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SKIP_SELECTORS), description="CSS selectors never extracted."
    )


def wanted_pages(manifest: pl.DataFrame) -> pl.DataFrame:
    """The manifest rows extraction reads: stored HTTP 200 responses and WET conversion records."""
    return manifest.filter(
        pl.col("warc_file").is_not_null() & ((pl.col("status") == 200) | (pl.col("record_type") == "conversion"))
    )


def extract_partition(
    manifest: pl.DataFrame, data_root: DataRoot, config: ExtractConfig, log=None, problems: list | None = None
):
    """(documents, failures) for the stored pages a crawl manifest lists; WARC read problems (file, offset)
    are appended to ``problems``, and a listed page whose record no longer validates is a failure."""
    problems = [] if problems is None else problems
    wanted = wanted_pages(manifest)
    fetch_time = dict(zip(wanted["url"].to_list(), wanted["fetch_time"].to_list()))
    rows, failures = [], []
    started, done = time.monotonic(), 0
    for path in wanted["warc_file"].unique(maintain_order=True).to_list():
        with data_root.open(path, "rb") as f:
            # a record that does not validate is never extracted; its URL counts as a failure below
            for rec in iter_records(f, name=path, on_problem=lambda p: problems.append(p)):
                if rec.url not in fetch_time:
                    continue
                mime = (rec.content_type or "").split(";")[0].strip().lower()
                if rec.kind == "response" and mime not in HTML_TYPES:
                    continue
                try:
                    ex = (
                        extract_text_record(rec.url, rec.body)
                        if rec.kind == "conversion"
                        else extract_html(
                            rec.url, rec.body, rec.content_type, tuple(config.skip_selectors), config.main_content
                        )
                    )
                except Exception as e:
                    failures.append((rec.url, f"{type(e).__name__}: {e}"[:300]))
                    continue
                rows.append(
                    (
                        doc_id(rec.url),
                        rec.url,
                        ex.canonical_url,
                        ex.host,
                        ex.title,
                        ex.text,
                        ex.language,
                        ex.language_score,
                        content_hash(ex.text),
                        ex.encoding,
                        len(rec.body),
                        len(ex.text),
                        fetch_time.pop(rec.url),
                    )
                )
                done += 1
                if log and done % 500 == 0:
                    log(f"extracted {done}/{wanted.height} pages ({done / (time.monotonic() - started):.0f}/s)")
    failures += [(p.url, f"WARC record: {p}"[:300]) for p in problems if p.url in fetch_time]
    return pl.DataFrame(rows, schema=SCHEMA, orient="row"), failures


@dg.asset(
    group_name="corpus",
    partitions_def=crawl_partitions,
    freshness_policy=DAILY_FRESHNESS,
    check_specs=CONTRACT.check_specs("extracted_pages"),
    kinds={"python", "parquet", "ray"},
    tags={"stage": "corpus"},
    metadata=CONTRACT.definition_metadata(),
    **stage_facts("corpus"),
)
def extracted_pages(
    context: dg.AssetExecutionContext,
    config: ExtractConfig,
    data_root: DataRoot,
    corpus_executor: CorpusExecutor,
    raw_crawl: pl.DataFrame,
):
    """Main-content text, title, canonical URL, language (CLD2) and content hash of each stored page.

    Comes from the WARC records that the ``raw_crawl`` manifest lists (HTTP 200 HTML responses, or WET
    conversion records in ingest mode), extracted with resiliparse, one WARC file per shard on the
    ``corpus_executor`` (Ray tasks by default). A shard that fails (its file gone or unreadable) counts its
    pages as failures and the others commit.
    """
    partition = context.partition_key
    folder = staging(data_root, "extracted_pages", partition)
    stored = raw_crawl.filter(pl.col("warc_file").is_not_null())
    files = stored["warc_file"].unique(maintain_order=True).to_list()
    keys = [f"{i:05d}" for i in range(len(files))]
    sources = dict(zip(keys, files))
    by_file = stored.partition_by("warc_file", as_dict=True, maintain_order=True)
    shards = [
        Shard(key, (data_root.url, by_file[(path,)], config, f"{folder}/{key}.parquet"), weight=by_file[(path,)].height)
        for key, path in sources.items()
    ]
    context.log.info(f"extracted_pages {partition}: {len(shards)} WARC files ({stored.height} stored pages)")
    run = run_shards(corpus_executor.executor(), extract_shard, shards, context.log.info)
    failures = [f for v in run.values.values() for f in v["failures"]]
    problems = [p for v in run.values.values() for p in v["problems"]]
    for key, error in run.failures.items():  # every page the failed shard should have extracted is a failure
        failures += [(url, f"shard failed: {error}"[:300]) for url in wanted_pages(by_file[(sources[key],)])["url"]]
    for p in problems:
        context.log.warning(f"extracted_pages: {p}")
    table_out = staged_table(data_root, folder, keys, sources, set(run.values), SCHEMA)
    docs, null_counts = staged_view(data_root, table_out, CONTRACT.not_null)
    pages = docs.height + len(failures)
    langs = docs.group_by("language").len().sort("len", descending=True).head(10)
    yield dg.Output(
        table_out,
        metadata={
            "documents": docs.height,
            "failures": len(failures),
            **run_facts(run, sources, docs.height),
            "median_text_chars": int(docs["text_chars"].median() or 0),
            "languages": frame_table(langs.rename({"len": "docs"})),
            "encodings": frame_table(
                docs.group_by("encoding").len().sort("len", descending=True).rename({"len": "docs"})
            ),
            "failed_pages": table(("url", "error"), failures[:20]),
            "read_problems": table(
                ("file", "offset", "problem", "detail"),
                [(p.file, p.offset, p.problem, p.detail) for p in problems[:20]],
            ),
            "sample": frame_table(docs.select("url", "title", "language", "text_chars"), limit=10),
        },
    )
    yield from CONTRACT.evaluate(
        docs,
        "extracted_pages",
        {"failed": len(failures), "pages": pages},
        schema=table_out.schema,
        null_counts=null_counts,
    )
