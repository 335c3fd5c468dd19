"""A live crawl sharded by host across workers, each host owned by exactly one shard (framework-free).

Politeness is per host here by construction: :func:`shard_of` maps every host (all its schemes and ports) to
one of ``n`` shards by a stable BLAKE2b hash, and a shard's :class:`~.crawler.Crawler` fetches only the URLs
of the hosts it owns (``owns``); a link to another shard's host is handed off, never fetched. So the
per-origin concurrency, delay, 429 pauses and robots.txt rules of a host live in one process, whichever
worker runs it — the guarantee a shared-frontier crawler needs a distributed lock for.

The crawl runs in rounds, like Nutch's generate/fetch/update cycle: in each round every shard with work crawls
its frontier (its seeds, the links other shards handed it, and its own stored links) to the end, then the
links each shard found for the others are routed to their owners; the crawl ends when a round hands no shard
a link it has not had. Each shard keeps its own :class:`~.crawler.CrawlStore` (``shard-KK-of-NN/``), so a
shard killed mid-round resumes from its committed segments like any crawl, and the links it had found are
in those segments' link lists: nothing is lost, and a URL is stored once (its owner's seen-set). A round is
``map_shards(crawl_shard, tasks)``: threads in one process by default, or Ray tasks through the
``corpus_executor`` (:func:`on_executor`), since :class:`ShardTask` and :class:`ShardResult` are plain data.

``max_pages`` applies to each shard (a shard stops fetching at it; the partition's total is up to
``n x max_pages``): a shared budget would need a coordinator in every fetch.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .crawler import Crawler, CrawlSettings, CrawlStore
from .urls import canonical_host, host_of, normalize_url

__all__ = ["ShardResult", "ShardTask", "crawl_shard", "crawl_sharded", "on_executor", "shard_dir", "shard_of"]

MAX_ROUNDS = 1000  # a guard: each round must hand some shard a link it never had, so rounds <= pages


def shard_of(url: str, shards: int) -> int:
    """The shard (0 .. shards-1) that owns ``url``'s host: the same in every process and on every machine."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    digest = hashlib.blake2b(canonical_host(host_of(url)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_dir(directory: str, shard: int, shards: int) -> str:
    """The store directory of one shard under the partition's ``directory``."""
    return f"{directory}/shard-{shard:02d}-of-{shards:02d}"


@dataclass(frozen=True)
class ShardTask:
    """One shard's work in one round (picklable: a Ray task's argument)."""

    settings: CrawlSettings
    root_url: str  # the data root (DataRoot url) the stores live on
    directory: str  # the partition's raw_crawl directory
    shard: int
    shards: int
    inbox: tuple[tuple[str, int, int], ...] = ()


@dataclass
class ShardResult:
    shard: int
    summary: dict
    handed_off: dict[str, tuple[int, int]] = field(default_factory=dict)  # url -> (depth, hops), others' hosts
    log: list[str] = field(default_factory=list)


def crawl_shard(task: ShardTask) -> ShardResult:
    """Crawl one shard to the end of its frontier (resuming its store); return its summary and the links it
    found for hosts other shards own."""
    from crawl2serve.resources.storage import DataRoot

    lines: list[str] = []
    store = CrawlStore(DataRoot(url=task.root_url), shard_dir(task.directory, task.shard, task.shards))
    crawler = Crawler(
        task.settings,
        store,
        log=lambda m: lines.append(f"shard {task.shard}: {m}"),
        owns=lambda url: shard_of(url, task.shards) == task.shard,
        inbox=task.inbox,
    )
    summary = asyncio.run(crawler.run())
    return ShardResult(task.shard, summary.as_dict(), dict(crawler.foreign), lines)


def _threads(fn: Callable[[ShardTask], ShardResult], tasks: Sequence[ShardTask]) -> list[ShardResult]:
    if len(tasks) <= 1:
        return [fn(t) for t in tasks]
    with ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="crawl-shard") as pool:
        return list(pool.map(fn, tasks))


def on_executor(executor) -> Callable[[Callable[[ShardTask], ShardResult], Sequence[ShardTask]], list[ShardResult]]:
    """``map_shards`` on a corpus executor (``resources/corpus_executor.py``): one Ray task per shard and round;
    threads when the executor runs in process (a crawl waits on the network: one shard after another would
    serialize the hosts). A shard that fails (a segment that did not commit) fails the round: the partition's
    rerun resumes every shard from its committed segments."""
    if executor.name == "in_process":
        return _threads

    def map_shards(fn, tasks):
        from crawl2serve.resources.corpus_executor import Shard

        outcomes = {o.key: o for o in executor.map(fn, [Shard(f"{t.shard:05d}", (t,)) for t in tasks])}
        failed = {k: o.error for k, o in outcomes.items() if not o.ok}
        if failed:
            raise RuntimeError(f"sharded crawl: shard(s) failed: {failed}")
        return [outcomes[f"{t.shard:05d}"].value for t in tasks]

    return map_shards


def crawl_sharded(
    settings: CrawlSettings,
    storage,
    directory: str,
    shards: int,
    map_shards: Callable[[Callable[[ShardTask], ShardResult], Sequence[ShardTask]], list[ShardResult]] = _threads,
    log: Callable[[str], None] = print,
) -> dict:
    """Crawl ``settings`` in ``shards`` host shards under ``directory`` until no shard gets a new link.

    Returns the crawl's summary: per-shard summaries summed (counters added; ``seconds`` is then shard-seconds),
    plus ``shards``, ``rounds``, ``wall_seconds`` and ``pages_by_shard``. ``map_shards(fn, tasks)`` runs one round's tasks (all shards with work) and returns
    their results in order.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    delivered: list[set[str]] = [set() for _ in range(shards)]
    for seed in filter(None, map(normalize_url, settings.seeds)):  # each shard queues the seeds it owns itself
        delivered[shard_of(seed, shards)].add(seed)
    found: list[dict[str, tuple[int, int]]] = [{} for _ in range(shards)]  # links for each shard, from others
    totals: list[dict] = [{} for _ in range(shards)]
    pending = set(range(shards))  # round 1: every shard (its own stored links and the seeds it owns)
    rounds, start = 0, time.monotonic()
    while pending:
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise RuntimeError(f"sharded crawl: no end after {MAX_ROUNDS} rounds")
        tasks = []
        for k in sorted(pending):
            inbox = tuple((u, d, h) for u, (d, h) in sorted(found[k].items()) if u not in delivered[k])
            delivered[k].update(u for u, _, _ in inbox)
            tasks.append(ShardTask(settings, storage.url, directory, k, shards, inbox))
        results = map_shards(crawl_shard, tasks)
        for result in results:
            for line in result.log[-3:]:
                log(line)
            totals[result.shard] = _add_round(totals[result.shard], result.summary)
            for url, hops in result.handed_off.items():
                found[shard_of(url, shards)].setdefault(url, hops)
        pending = {k for k in range(shards) if set(found[k]) - delivered[k]}
        log(
            f"sharded crawl: round {rounds} done ({len(tasks)} shards ran); "
            f"{sum(len(set(found[k]) - delivered[k]) for k in range(shards))} links handed to {len(pending)} shards"
        )
    summary: dict = {}
    for t in totals:
        summary = _add(summary, t)
    summary.update(
        shards=shards,
        rounds=rounds,
        wall_seconds=round(time.monotonic() - start, 3),
        pages_by_shard=[t.get("stored", 0) for t in totals],
    )
    return summary


def _add_round(shard: dict, this_round: dict) -> dict:
    """A shard's summary over rounds: what it did in each round added up, except what describes its store (the
    URLs it had stored when the crawl started: the first round's ``resumed``; its segments: the last round's)."""
    out = _add(shard, this_round)
    if shard:
        out["resumed"] = shard.get("resumed", 0)
        out["segments"] = this_round.get("segments", 0)
    return out


def _add(a: dict, b: dict) -> dict:
    """Counters of two summaries added (numbers summed, nested counters merged; seconds summed too)."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict):
            merged = dict(out.get(k) or {})
            for kk, vv in v.items():
                merged[kk] = merged.get(kk, 0) + vv
            out[k] = merged
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = out.get(k, 0) + v
        else:
            out[k] = v
    return out
