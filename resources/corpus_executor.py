"""Where the corpus stages run their per-shard work: in this process, or as tasks on a Ray cluster.

A corpus stage splits a crawl partition into shards (one WARC file each) and maps one framework-free function
over them (``ShardExecutor.map``): ``InProcessExecutor`` calls it here, one shard after another;
``RayExecutor`` runs them as Ray tasks (one CPU each, small shards batched) on a local Ray started on this
machine's cores (the embedded default) or on a Ray cluster reached by address (production: the KubeRay cluster of
deploy/ray/). Either way a shard that raises for its own data comes back as a failed ``ShardOutcome`` and
its neighbours go on; under Ray, a worker that dies mid-shard (killed, OOM, a crash in native code) has its
task run again (``max_retries``), so a shard function must write its output atomically (temp + rename) to a
name of its own: a retried shard then replaces, never duplicates, what a killed attempt began.

Why not dagster-ray's ``LocalRay``/``RayResource`` (0.4.8): its lifecycle ties the Ray runtime to one step's
resource scope (``ray.init`` when the step starts, ``ray.shutdown`` when it ends), so an in-process run
(tests, ``dg.materialize``, the embedded job) would start and stop a local Ray for every corpus step (~4 s on
2 cores each) and would shut down a Ray the process shares; its ``connect`` also imports Ray Data and runs a
task to apply Ray Data options these stages do not use. Here Ray starts lazily, on a stage's first map,
once per process, and stays up until the process exits (Ray stops the local cluster it started then);
connecting to a cluster is the one ``address`` setting. dagster-ray's KubeRay resources, which create a
cluster per step through the Kubernetes API, remain an option for a deployment that wants that (dagster-ray is
not a dependency: nothing here uses it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import dagster as dg
from pydantic import Field


@dataclass(frozen=True)
class Shard:
    """One unit of work: ``fn(*args)``; ``key`` names it in outcomes, logs and metadata; ``weight`` is its
    expected size (pages, rows): a parallel executor starts the heaviest first, so that no large shard is left
    running alone at the end while the other workers idle."""

    key: str
    args: tuple
    weight: float = 0.0


@dataclass(frozen=True)
class ShardOutcome:
    """What became of one shard: ``value`` (what the function returned) or ``error`` (why it failed)."""

    key: str
    value: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class ShardExecutor(Protocol):
    """Maps a framework-free function over shards; outcomes come back as shards finish (any order)."""

    name: str
    workers: int  # shards that run at once
    description: str  # for logs and metadata: "in process, 1 worker", "ray, 2 workers", "ray, 64 CPUs"

    def map(self, fn: Callable[..., Any], shards: Sequence[Shard]) -> Iterator[ShardOutcome]: ...


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


class InProcessExecutor:
    """Every shard in this process, in order (one worker: the baseline, and the choice for tiny inputs)."""

    name = "in_process"
    workers = 1
    description = "in process, 1 worker"

    def map(self, fn: Callable[..., Any], shards: Sequence[Shard]) -> Iterator[ShardOutcome]:
        for shard in shards:
            started = time.monotonic()
            try:
                value = fn(*shard.args)
            except Exception as e:  # one bad shard never costs its neighbours
                yield ShardOutcome(shard.key, error=_describe(e), seconds=time.monotonic() - started)
            else:
                yield ShardOutcome(shard.key, value=value, seconds=time.monotonic() - started)


def _run_batch(fn: Callable[..., Any], batch: list[tuple[str, tuple]]) -> list[ShardOutcome]:
    """``fn`` over a batch of shards, in order, in one Ray task: each shard's outcome its own (one that raises
    fails alone, the rest of the batch goes on)."""
    return list(InProcessExecutor().map(fn, [Shard(key, args) for key, args in batch]))


def _weight(shard: Shard, weighed: bool) -> float:
    return max(shard.weight, 0.0) if weighed else 1.0


class RayExecutor:
    """Shards as Ray tasks (``num_cpus=1``), several small shards to a task.

    ``workers``: at most this many tasks in flight (the benches' 1 and 2 workers); None: as many as keep the
    cluster busy and its autoscaler asking for more, ``max(2 x the cluster's CPUs, MIN_IN_FLIGHT)``, re-read as
    workers join (a bound, so that a dump's 90,000 files never sit in the object store at once).
    ``max_retries``: how often Ray runs a task again when its worker dies (system failures only: an exception
    the function raises is the shard's own failure and is not retried).

    Batches, by guided self-scheduling (Polychronopoulos and Kuck 1987): each task takes about
    ``1 / (GUIDED x workers)`` of the weight still pending (at least one shard, at most ``max_batch``), so tasks
    are large while much is left and single shards at the end, when the workers must finish together. Each Ray
    task costs its worker ~5-6 ms between shards (measured on 2 cores: 0.18-0.21 s of a 2.4-2.9 s map of 66
    clean shards of 50-100 ms, per worker); a batch pays it once. A worker killed mid-batch has the whole batch
    run again, which the shards' atomic writes to names of their own make safe.
    """

    name = "ray"
    MIN_IN_FLIGHT = 64
    REFRESH_S = 5.0
    GUIDED = 4

    def __init__(self, workers: int | None = None, max_retries: int = 3, max_batch: int = 16):
        if workers is not None and workers < 1:
            raise ValueError(f"workers: must be at least 1, got {workers}")
        if max_batch < 1:
            raise ValueError(f"max_batch: must be at least 1, got {max_batch}")
        self.limit = workers
        self.max_retries = max_retries
        self.max_batch = max_batch
        self.workers = workers or self._cluster_cpus()
        self.description = (
            f"ray, {workers} worker{'s' if workers > 1 else ''}" if workers else f"ray, {self.workers} CPUs"
        )

    @staticmethod
    def _cluster_cpus() -> int:
        import ray

        return max(int(ray.cluster_resources().get("CPU", 0)), 1)

    def _in_flight(self) -> int:
        return self.limit or max(2 * self._cluster_cpus(), self.MIN_IN_FLIGHT)

    def _next_batch(self, pending: list[Shard], left: float, workers: int, weighed: bool) -> list[Shard]:
        """The next task's shards, popped from the end of ``pending``, whose weights add up to ``left`` (or,
        not ``weighed``, which count one each): see the class docstring."""
        share = left / (self.GUIDED * workers)
        batch = [pending.pop()]
        taken = _weight(batch[0], weighed)
        while pending and len(batch) < self.max_batch and taken + _weight(pending[-1], weighed) <= share:
            taken += _weight(pending[-1], weighed)
            batch.append(pending.pop())
        return batch

    def map(self, fn: Callable[..., Any], shards: Sequence[Shard]) -> Iterator[ShardOutcome]:
        import ray

        task = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(_run_batch)
        # heaviest first (longest-processing-time order; stable, so equal weights keep their order), popped
        # from the end: a dump's files differ in size by 10x and more. On the Ray corpus bench (58 WARC files of
        # 84-569 kB, in crawl order) it changed nothing measurable (clean 1.56 cores with and without).
        pending = [s for _, s in sorted(enumerate(shards), key=lambda p: (-p[1].weight, p[0]))][::-1]
        running: dict[Any, tuple[list[Shard], float]] = {}
        bound, checked = self._in_flight(), time.monotonic()
        workers = self.limit or self._cluster_cpus()
        weighed = any(s.weight > 0 for s in pending)  # else every shard counts one
        left = sum(_weight(s, weighed) for s in pending)
        try:
            while pending or running:
                if self.limit is None and time.monotonic() - checked > self.REFRESH_S:
                    bound, checked, workers = self._in_flight(), time.monotonic(), self._cluster_cpus()
                while pending and len(running) < bound:
                    batch = self._next_batch(pending, left, workers, weighed)
                    left -= sum(_weight(s, weighed) for s in batch)
                    name = f"shard:{batch[0].key}" + (f"+{len(batch) - 1}" if len(batch) > 1 else "")
                    ref = task.options(name=name).remote(fn, [(s.key, s.args) for s in batch])
                    running[ref] = (batch, time.monotonic())
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    batch, started = running.pop(ref)
                    try:
                        yield from ray.get(ref)
                    except ray.exceptions.RayError as e:  # its worker died more often than max_retries, ...
                        for shard in batch:
                            yield ShardOutcome(shard.key, error=_describe(e), seconds=time.monotonic() - started)
        finally:  # the step stopped early (cancelled, failed): its shards stop too
            for ref in running:
                ray.cancel(ref)


_RAY_LOCK = threading.Lock()


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> dict:
    """Connect this process to Ray once: to ``address`` (``ray://head:10001`` through Ray Client, or a GCS
    ``host:6379``), or, without one, to a local Ray started on this machine (``num_cpus``, default: the cores
    Ray detects, which is ``os.cpu_count()`` on a bare machine and the CPU limit in a container), bound to
    loopback, with no dashboard, no usage statistics and errors only in the log. A process already connected
    keeps its Ray (a test session's, a driver's own). Returns the cluster's resources."""
    with _RAY_LOCK:
        if address is None:
            # A single-node Ray on loopback only, and no usage report; read by Ray at import, hence before it.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        if not ray.is_initialized():
            options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if address is None:  # errors only: its warnings are of a cluster (token authentication is on, ...)
                options |= {"num_cpus": num_cpus, "include_dashboard": False, "logging_level": logging.ERROR}
            ray.init(address=address, **options)
        return ray.cluster_resources()


class CorpusExecutor(dg.ConfigurableResource):
    """Where the corpus stages run their shards (one WARC file each).

    ``backend="ray"`` (the default): Ray tasks, on a local Ray started on this machine's cores when ``address``
    is unset (embedded), or on the Ray cluster at ``address`` (production: ``CRAWL2SERVE_RAY_ADDRESS``).
    ``backend="in_process"``: one shard after another in the step's own process.
    """

    backend: Literal["ray", "in_process"] = Field("ray", description="ray (tasks on a Ray cluster) or in_process.")
    address: str | None = Field(
        None,
        description="Ray cluster to connect to (ray://head:10001 or head:6379); unset: start a local Ray here.",
    )
    num_cpus: int | None = Field(
        None, description="CPUs of the local Ray (address unset); unset: the machine's cores as Ray detects them."
    )
    workers: int | None = Field(
        None,
        description="Shards in flight at once; unset: enough to keep every CPU of the Ray cluster busy and its "
        "autoscaler growing it (in_process: always 1).",
    )
    max_retries: int = Field(3, description="Ray runs a shard again this often when its worker dies mid-shard.")
    max_batch: int = Field(
        16, description="Most shards one Ray task runs (small shards share a task; fewer at the end of a map)."
    )

    def executor(self) -> ShardExecutor:
        """The executor this configuration names (under Ray: connecting, or starting a local Ray, first)."""
        if self.backend == "in_process":
            return InProcessExecutor()
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"corpus_executor.workers: must be at least 1, got {self.workers}")
        if self.max_batch < 1:
            raise ValueError(f"corpus_executor.max_batch: must be at least 1, got {self.max_batch}")
        ensure_ray(self.address, self.num_cpus)
        return RayExecutor(workers=self.workers, max_retries=self.max_retries, max_batch=self.max_batch)


@dataclass
class ShardRun:
    """What one map over shards gave: each successful shard's value, each failed shard's error, wall seconds."""

    executor: str  # its description
    values: dict[str, Any]
    failures: dict[str, str]
    seconds: float


def run_shards(
    executor: ShardExecutor, fn: Callable[..., Any], shards: Sequence[Shard], log: Callable[[str], None] | None = None
) -> ShardRun:
    """``fn`` over every shard through ``executor``; progress and each failure to ``log``."""
    started = time.monotonic()
    values, failures = {}, {}
    for done, outcome in enumerate(executor.map(fn, shards), 1):
        if outcome.ok:
            values[outcome.key] = outcome.value
        else:
            failures[outcome.key] = outcome.error
            if log:
                log(f"shard {outcome.key} failed: {outcome.error}")
        if log and (done % 10 == 0 or done == len(shards)):
            log(f"{done}/{len(shards)} shards done ({executor.description}, {time.monotonic() - started:.1f}s)")
    return ShardRun(executor.description, values, failures, time.monotonic() - started)
