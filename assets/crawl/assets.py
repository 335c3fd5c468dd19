"""The crawl stage: ``raw_crawl`` — WARC files plus a Parquet manifest, one partition per crawl."""

import asyncio

import dagster as dg
import polars as pl
from pydantic import Field

from crawl2serve.assets.contracts import Distribution, TableContract
from crawl2serve.assets.metadata import facts_table, frame_table, stage_facts, table
from crawl2serve.assets.partitions import DAILY_FRESHNESS, crawl_partitions
from crawl2serve.resources.corpus_executor import CorpusExecutor, Shard, run_shards
from crawl2serve.resources.crawl_target import CrawlTarget
from crawl2serve.resources.storage import DataRoot

from .crawler import Crawler, CrawlSettings, CrawlStore, final_manifest
from .ingest import MANIFEST, combine_manifests, ingest_shard, ingest_sources
from .sharded import crawl_sharded, on_executor, shard_dir

CONTRACT = TableContract(
    schema=MANIFEST,
    not_null=("url", "fetch_time", "record_type"),
    unique=("url",),
    ranges={"status": (100, 599), "bytes": (0, None), "attempts": (0, None)},
    distributions=(
        Distribution(
            "stored_pages",
            "At least one page stored (a crawl that stored nothing must not flow on).",
            lambda df, _: float(df["warc_file"].is_not_null().sum()),
            low=1,
            blocking=True,
        ),
        Distribution(
            "error_share",
            "Share of fetches that ended in an error (warn above 50%).",
            lambda df, _: float(df["error"].is_not_null().mean() or 0.0),
            high=0.5,
        ),
    ),
    columns={
        "url": "The fetched URL (normalized); one row per URL.",
        "status": "HTTP status of the last attempt; null when no response came (an error).",
        "bytes": "Body bytes received (stored pages: the WARC record's payload).",
        "fetch_time": "When the fetch finished (ingest mode: the record's WARC-Date).",
        "elapsed_ms": "Wall time of the fetch, retries included, in milliseconds.",
        "content_type": "The response's Content-Type header.",
        "error": "Why the fetch stored nothing (timeout, robots, too_large, redirect_loop, ...); null on success.",
        "depth": "Link hops from the nearest seed.",
        "attempts": "Requests made for this URL (1 plus retries; 0 for ingested records).",
        "redirect_to": "The redirect target of a 3xx response (queued as its own URL).",
        "warc_file": "The WARC file holding the response record; null when nothing was stored.",
        "warc_offset": "Byte offset of the record in warc_file.",
        "record_id": "WARC-Record-ID of the stored response record.",
        "record_type": "WARC record type the row points at: response (crawl, WARC) or conversion (WET).",
    },
)


class CrawlConfig(dg.Config):
    """Per-run knobs of a crawl; where to crawl comes from the ``crawl_target`` resource."""

    max_pages: int = Field(400, description="Fetches per crawl partition (all outcomes count), resumes included.")
    max_depth: int = Field(20, description="Link hops from the seeds.")
    include_patterns: list[str] = Field(default_factory=list, description="URL regexes; if set, one must match.")
    exclude_patterns: list[str] = Field(default_factory=list, description="URL regexes never fetched.")
    concurrency: int = Field(8, description="Requests in flight overall.")
    per_host_concurrency: int = Field(2, description="Requests in flight per host.")
    connect_timeout_s: float = Field(10.0, description="TCP connect timeout.")
    read_timeout_s: float = Field(20.0, description="Longest silence while reading a response.")
    total_timeout_s: float = Field(60.0, description="Whole-request timeout (ends slow-drip bodies).")
    max_retries: int = Field(3, description="Retries on timeouts, resets, 5xx and 429.")
    max_redirects: int = Field(5, description="Redirect hops before giving up.")
    max_body_bytes: int = Field(
        5_000_000, description="Bodies larger than this are dropped (streamed, never buffered)."
    )
    restart: bool = Field(False, description="Discard this partition's stored segments instead of resuming.")
    shards: int = Field(
        1,
        ge=1,
        description="Crawl in this many host shards, each host owned by exactly one (assets/crawl/sharded.py); "
        "max_pages then applies to each shard. A partition keeps the shard count it was first crawled with.",
    )
    ingest_paths: list[str] = Field(
        default_factory=list,
        description="Ingest mode: WARC/WET files, globs or path lists (Common Crawl's warc.paths.gz; any fsspec "
        "URL) to read instead of crawling, one file per shard on the corpus executor.",
    )
    ingest_base: str = Field(
        "", description="Folder that relative lines of a path list are under (default: the list's own folder)."
    )


def crawl_settings(config: CrawlConfig, target: CrawlTarget) -> CrawlSettings:
    return CrawlSettings(
        seeds=tuple(target.seed_urls),
        allowed_hosts=tuple(target.allowed_hosts),
        include_patterns=tuple(config.include_patterns),
        exclude_patterns=(*target.excludes, *config.exclude_patterns),
        private_hosts=tuple(target.reachable_private_hosts),
        max_pages=config.max_pages,
        max_depth=config.max_depth,
        concurrency=config.concurrency,
        per_host_concurrency=config.per_host_concurrency,
        per_host_delay_s=target.per_host_delay_s,
        connect_timeout_s=config.connect_timeout_s,
        read_timeout_s=config.read_timeout_s,
        total_timeout_s=config.total_timeout_s,
        max_retries=config.max_retries,
        max_redirects=config.max_redirects,
        max_body_bytes=config.max_body_bytes,
        user_agent=target.user_agent,
    )


def summary_facts(summary: dict) -> dict:
    """The crawl summary as flat facts: nested counters become ``name.key`` (errors and status codes are in
    the per-host table already)."""
    facts = {}
    for name, value in summary.items():
        if isinstance(value, dict):
            if name not in ("errors", "status"):
                facts.update({f"{name}.{k}": v for k, v in sorted(value.items())})
        else:
            facts[name] = value
    return facts


def host_status_rows(manifest: pl.DataFrame) -> list[tuple]:
    """(host, status, error, fetches, stored, bytes, mean ms) per host and outcome, most fetches first."""
    return (
        manifest.with_columns(host=pl.col("url").str.extract(r"^[a-zA-Z][a-zA-Z0-9+.-]*://([^/?#]+)", 1))
        .group_by("host", "status", "error")
        .agg(
            pl.len().alias("fetches"),
            pl.col("warc_file").is_not_null().sum().alias("stored"),
            pl.col("bytes").sum().alias("bytes"),
            pl.col("elapsed_ms").mean().alias("mean_ms"),
        )
        .sort(["fetches", "host", "status"], descending=[True, False, False], nulls_last=True)
        .rows()
    )


def _refuse_another_layout(data_root: DataRoot, directory: str, layout: str, partition: str) -> None:
    """A partition resumes only with the shard count it was crawled with: other stores would be ignored."""
    found = [p.rsplit("/", 1)[-1] for p in data_root.glob(f"{directory}/shard-*")]
    if data_root.exists(f"{directory}/segments"):
        found.append("segments")
    theirs = {"segments" if f == "segments" else f.rsplit("-of-", 1)[-1] for f in found}
    ours = "segments" if layout.endswith("/segments") else layout.rsplit("-of-", 1)[-1]
    if theirs - {ours}:
        counts = sorted(1 if t == "segments" else int(t) for t in theirs)
        raise ValueError(
            f"raw_crawl {partition}: config field 'shards' differs from the stored crawl's ({counts}); "
            "run it with that count to resume, or with restart: true to crawl it again"
        )


@dg.asset(
    group_name="crawl",
    partitions_def=crawl_partitions,
    freshness_policy=DAILY_FRESHNESS,
    check_specs=CONTRACT.check_specs("raw_crawl"),
    kinds={"python", "parquet"},
    tags={"stage": "crawl"},
    metadata=CONTRACT.definition_metadata(),
    **stage_facts("crawl"),
)
def raw_crawl(
    context: dg.AssetExecutionContext,
    config: CrawlConfig,
    crawl_target: CrawlTarget,
    data_root: DataRoot,
    corpus_executor: CorpusExecutor,
):
    """Raw web crawl: WARC files (request + response records) and a Parquet manifest of every fetch.

    Comes from a real async HTTP crawl of the ``crawl_target`` resource (embedded default: the pydoc
    documentation server on loopback), or, in ingest mode, from existing WARC/WET files (read one file per
    shard on the ``corpus_executor``; a file that cannot be read at all is recorded and the others commit).
    One partition per crawl day; re-running a partition resumes it without refetching what it already stored.
    """
    directory = data_root.path("raw_crawl", context.partition_key)
    if config.ingest_paths:
        files = ingest_sources(data_root, config.ingest_paths, config.ingest_base)
        shards = [Shard(f"{i:05d}", (data_root.url, path)) for i, path in enumerate(files)]
        run = run_shards(corpus_executor.executor(), ingest_shard, shards, context.log.info)
        ok = [s.key for s in shards if s.key in run.values]
        manifest = combine_manifests([run.values[k][0] for k in ok])
        problems = [p for k in ok for p in run.values[k][1]]
        for p in problems:
            context.log.warning(f"ingest: {p}")
        sources = {s.key: s.args[1] for s in shards}
        if not ok:
            raise RuntimeError(f"raw_crawl: none of the {len(files)} ingest files could be read: {run.failures}")
        summary = {
            "mode": "ingest",
            "files": len(files),
            "failed_files": len(run.failures),
            "read_problems": len(problems),
            "executor": run.executor,
        }
        extra = {
            "read_problems": table(
                ("file", "offset", "problem", "detail", "url"),
                [(p.file, p.offset, p.problem, p.detail, p.url or "") for p in problems[:50]],
            ),
            "failed_files": table(("file", "error"), [(sources[k], e) for k, e in run.failures.items()]),
        }
    else:
        layout = f"{directory}/segments" if config.shards == 1 else shard_dir(directory, 0, config.shards)
        if config.restart:
            for old in (f"{directory}/segments", *data_root.glob(f"{directory}/shard-*")):
                data_root.remove(old)
        _refuse_another_layout(data_root, directory, layout, context.partition_key)
        settings = crawl_settings(config, crawl_target)
        if config.shards == 1:
            store = CrawlStore(data_root, directory)
            summary = {"mode": "crawl", **asyncio.run(Crawler(settings, store, log=context.log.info).run()).as_dict()}
            stores = [store]
        else:
            summary = {
                "mode": "crawl",
                **crawl_sharded(
                    settings,
                    data_root,
                    directory,
                    config.shards,
                    map_shards=on_executor(corpus_executor.executor()),
                    log=context.log.info,
                ),
            }
            stores = [CrawlStore(data_root, shard_dir(directory, k, config.shards)) for k in range(config.shards)]
        manifest = pl.concat([final_manifest(s) for s in stores]).with_columns(record_type=pl.lit("response"))
        extra = {}
    stored = manifest.filter(pl.col("warc_file").is_not_null())
    context.log.info(f"raw_crawl {context.partition_key}: {manifest.height} fetches, {stored.height} stored")
    yield dg.Output(
        manifest,
        metadata={
            "fetches": manifest.height,
            "stored_pages": stored.height,
            "stored_bytes": int(stored["bytes"].sum() or 0),
            "warc_files": stored["warc_file"].n_unique(),
            "by_host_status": table(
                ("host", "status", "error", "fetches", "stored", "bytes", "mean_ms"), host_status_rows(manifest)
            ),
            "summary": facts_table(summary_facts(summary)),
            "sample": frame_table(manifest.select("url", "status", "bytes", "error"), limit=10),
            **extra,
        },
    )
    yield from CONTRACT.evaluate(manifest, "raw_crawl")
