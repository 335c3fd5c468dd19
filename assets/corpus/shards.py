"""The corpus stages shard by shard: the per-shard functions a ``ShardExecutor`` maps, and the driver's side.

A shard is one WARC/WET file. ``extract_shard`` runs ``extract_partition`` on that file's manifest rows and
``clean_shard`` runs ``clean_frame`` on one shard of ``extracted_pages``: the stages' own functions, unchanged.
Each writes its table(s) to a staged Parquet file named for the shard, under ``{asset}/{partition}/shards/``,
atomically (``DataRoot.write_parquet``: temp + rename), and returns small facts only (rows, failures, seconds,
its worker's peak RSS). A task that Ray runs again after its worker died mid-shard replaces what the dead attempt
began under the same name, so no row is lost or doubled; the IO manager then commits the staged files, in shard
order, into the partition's table (``ShardedTable``). The driver never holds a shard's text: ``staged_view``
reads the staged files less their text, for the checks and the metadata.
"""

from __future__ import annotations

import resource
import time
from collections import Counter
from collections.abc import Sequence

import polars as pl

from crawl2serve.resources.corpus_executor import ShardRun
from crawl2serve.resources.io_manager import ShardedTable, TableShard
from crawl2serve.resources.storage import DataRoot

STAGING = "shards"
BULKY = ("text",)  # columns no check or metadata reads: the driver leaves them on disk


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (a Ray worker's, over every shard it ran)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def extract_shard(root_url: str, manifest: pl.DataFrame, config, out: str) -> dict:
    """Extract the pages of one WARC file's manifest rows to ``out``; facts of the shard."""
    from .extracted import extract_partition

    data_root = DataRoot(url=root_url)
    started, cpu, problems = time.monotonic(), time.process_time(), []
    docs, failures = extract_partition(manifest, data_root, config, problems=problems)
    data_root.write_parquet(docs, out)
    return {
        "rows": docs.height,
        "failures": failures,
        "problems": problems,
        "seconds": time.monotonic() - started,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mb": peak_rss_mb(),
    }


def clean_shard(root_url: str, shard: TableShard, config, kept_out: str, rejected_out: str) -> dict:
    """Clean one shard of extracted pages; kept and rejected documents to their staged files; facts."""
    from .cleaned import clean_frame

    data_root = DataRoot(url=root_url)
    cpu = time.process_time()
    pages = data_root.read_parquet(shard.path, row_groups=shard.row_groups)
    kept, rejected, facts = clean_frame(pages, config)
    data_root.write_parquet(kept, kept_out)
    data_root.write_parquet(rejected, rejected_out)
    return {
        "in": facts["in"],
        "kept": kept.height,
        "rejected": rejected.height,
        "funnel": facts["funnel"],
        "seconds": facts["seconds"],
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mb": peak_rss_mb(),
    }


def staging(data_root: DataRoot, asset: str, partition: str) -> str:
    """The staging folder of an asset's partition, emptied (a killed run's leftovers go)."""
    folder = data_root.path(asset, partition, STAGING)
    data_root.remove(folder)
    return folder


def staged_table(
    data_root: DataRoot, folder: str, keys: Sequence[str], sources: dict[str, str], done: set[str], schema
) -> ShardedTable:
    """The staged files of the shards in ``done``, in shard order, for the IO manager to commit, with the columns
    the files have (``schema`` when there are none). What attempts killed mid-write left (temporaries that never
    got a shard's name) is deleted."""
    data_root.clean_temporaries(folder)
    shards = tuple(TableShard(source=sources[k], path=f"{folder}/{k}.parquet") for k in keys if k in done)
    actual = dict(data_root.parquet_schema(shards[0].path)) if shards else dict(schema)
    return ShardedTable(shards=shards, schema=actual)


def staged_view(data_root: DataRoot, table: ShardedTable, not_null: Sequence[str]) -> tuple[pl.DataFrame, dict]:
    """(the staged shards' rows less their ``BULKY`` columns, nulls per ``not_null`` column over the whole table):
    what the checks and the metadata read, without the text."""
    light = [c for c in table.schema if c not in BULKY]
    frames, nulls = [], Counter({c: 0 for c in not_null if c in table.schema})
    for shard in table.shards:
        frames.append(data_root.read_parquet(shard.path, columns=light))
        nulls.update(data_root.parquet_null_counts(shard.path, list(nulls)))
    view = pl.concat(frames) if frames else pl.DataFrame(schema={c: table.schema[c] for c in light})
    return view, dict(nulls)


def run_facts(run: ShardRun, sources: dict[str, str], docs: int) -> dict:
    """Metadata of a sharded run: shards, failures, throughput (per second of wall time, and per CPU second the
    shards used: the figure a loaded machine moves least) and the workers' peak memory."""
    from crawl2serve.assets.metadata import table

    peaks = [v["peak_rss_mb"] for v in run.values.values()]
    cpu = sum(v["cpu_seconds"] for v in run.values.values())
    return {
        "executor": run.executor,
        "shards": len(run.values) + len(run.failures),
        "failed_shards": len(run.failures),
        "docs_per_s": round(docs / run.seconds, 1) if run.seconds else 0.0,
        "docs_per_cpu_s": round(docs / cpu, 1) if cpu else 0.0,
        "cores_used": round(cpu / run.seconds, 2) if run.seconds else 0.0,  # CPU the shards got, per wall second
        "worker_peak_rss_mb": round(max(peaks), 1) if peaks else 0.0,
        "shard_failures": table(("shard", "source", "error"), [(k, sources[k], e) for k, e in run.failures.items()]),
    }
