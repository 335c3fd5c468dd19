"""The corpus executor on a real local Ray (the session's ``ray_session``) and in process: the same outcomes, a
shard's own failure kept to that shard, and a worker killed mid-shard retried by Ray with no row lost or doubled.
"""

from pathlib import Path

import polars as pl
import pytest

from crawl2serve.assets.corpus.extracted import ExtractConfig
from crawl2serve.assets.corpus.shards import extract_shard, staged_table
from crawl2serve.assets.crawl.ingest import ingest_shard
from crawl2serve.resources.corpus_executor import (
    CorpusExecutor,
    InProcessExecutor,
    RayExecutor,
    Shard,
    run_shards,
)
from crawl2serve.resources.storage import TMP_PREFIX, DataRoot
from tests.resources.shard_functions import (
    die_mid_write_once,
    pid_and_square,
    span,
    square_or_refuse,
    task_and_square_or_refuse,
)
from tests.support import warc_bytes

FIXTURES = Path(__file__).parents[1] / "corpus" / "fixtures"
PAGES = ["pg-btree-intro.html", "python-faq-installed.html", "sphinx-support.html", "javadoc-RandomAccess.html"]


def test_in_process_and_ray_give_the_same_outcomes_and_keep_a_failure_to_its_shard(ray_session):
    shards = [Shard(f"{i:02d}", (x,)) for i, x in enumerate([3, -1, 4, 5])]
    for executor in (InProcessExecutor(), CorpusExecutor(workers=2).executor()):
        run = run_shards(executor, square_or_refuse, shards)
        assert run.values == {"00": 9, "02": 16, "03": 25}, executor.name
        assert run.failures == {"01": "ValueError: negative input -1"}, executor.name
    default = CorpusExecutor().executor()  # unset: every CPU of the cluster busy, more queued for its autoscaler
    assert (default.workers, default.description, default._in_flight()) == (2, "ray, 2 CPUs", RayExecutor.MIN_IN_FLIGHT)
    assert CorpusExecutor(workers=1).executor().description == "ray, 1 worker"


def test_ray_runs_shards_in_worker_processes(ray_session):
    import os

    run = run_shards(RayExecutor(workers=2), pid_and_square, [Shard(str(x), (x,)) for x in range(4)])
    assert {k: v[1] for k, v in run.values.items()} == {"0": 0, "1": 1, "2": 4, "3": 9}
    assert os.getpid() not in {pid for pid, _ in run.values.values()}


def test_workers_bounds_the_shards_in_flight(ray_session):
    def overlaps(workers: int) -> int:
        run = run_shards(RayExecutor(workers=workers), span, [Shard(str(i), (0.2,)) for i in range(4)])
        spans = sorted(run.values.values())
        return sum(b[0] < a[1] for a, b in zip(spans, spans[1:]))

    assert overlaps(1) == 0  # one at a time
    assert overlaps(2) >= 1  # two run side by side


def test_the_heaviest_shards_start_first_and_equal_weights_keep_their_order(ray_session):
    weights = [1, 40, 0, 7, 40, 3]
    shards = [Shard(str(i), (0.01,), weight=w) for i, w in enumerate(weights)]
    run = run_shards(RayExecutor(workers=1), span, shards)  # one at a time: the start times give the order
    started = sorted(run.values, key=lambda k: run.values[k][0])
    assert started == ["1", "4", "3", "5", "0", "2"]
    assert list(run_shards(InProcessExecutor(), span, shards).values) == [s.key for s in shards]  # in order


def test_small_shards_share_tasks_large_first_single_at_the_end_and_fail_alone(ray_session):
    values = [*range(20), -1, *range(21, 40)]  # shard 20's data is bad
    shards = [Shard(f"{i:02d}", (x,), weight=1) for i, x in enumerate(values)]
    run = run_shards(RayExecutor(workers=2), task_and_square_or_refuse, shards)
    assert run.failures == {"20": "ValueError: negative input -1"}
    assert {k: v[1] for k, v in run.values.items()} == {f"{i:02d}": x * x for i, x in enumerate(values) if x >= 0}
    tasks: dict[str, list[str]] = {}
    for key, (task, _) in sorted(run.values.items()):
        tasks.setdefault(task, []).append(key)
    sizes = [len(keys) for keys in sorted(tasks.values())]  # in shard order: the order they were handed out
    # guided: each task about 1/(4 x 2 workers) of what is left: 5, 4, 3, ... shards, single ones at the end
    assert sizes[:2] == [5, 4] and sizes[-10:] == [1] * 10 and len(tasks) < len(shards) / 1.5, sizes
    assert run_shards(RayExecutor(workers=2, max_batch=1), square_or_refuse, shards).values == {
        k: v[1] for k, v in run.values.items()
    }


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="corpus_executor.workers: must be at least 1"):
        CorpusExecutor(workers=0).executor()
    with pytest.raises(ValueError, match="max_batch: must be at least 1"):
        RayExecutor(workers=1, max_batch=0)
    with pytest.raises(ValueError, match="corpus_executor.max_batch: must be at least 1"):
        CorpusExecutor(max_batch=0).executor()
    assert CorpusExecutor(backend="in_process", workers=8).executor().workers == 1


def test_a_worker_killed_mid_shard_is_retried_with_no_row_lost_or_doubled(ray_session, tmp_path):
    data_root = DataRoot(url=str(tmp_path))
    files = []
    for i in range(2):  # two WARC files of real documentation pages, under URLs of their own
        path = tmp_path / "in" / f"{i}.warc.gz"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(
            warc_bytes([(f"https://docs.example.org/{i}/{n}", "response", (FIXTURES / n).read_bytes()) for n in PAGES])
        )
        files.append(str(path))
    manifests = [ingest_shard(data_root.url, f)[0] for f in files]
    config = ExtractConfig()

    def shards(folder: str) -> list[Shard]:
        return [Shard(str(i), (data_root.url, m, config, f"{folder}/{i}.parquet")) for i, m in enumerate(manifests)]

    expected = run_shards(InProcessExecutor(), extract_shard, shards(f"{tmp_path}/expected"))
    (tmp_path / "0.died").write_text("0")  # shard 0 never dies; shard 1's first worker dies writing its output
    dying = [
        Shard(s.key, (str(tmp_path / f"{s.key}.died"), s.args[0], extract_shard, *s.args[1:]))
        for s in shards(f"{tmp_path}/ray")
    ]
    run = run_shards(RayExecutor(workers=2, max_retries=2), die_mid_write_once, dying)
    assert not run.failures and set(run.values) == {"0", "1"}
    died = int((tmp_path / "1.died").read_text())
    assert run.values["1"]["pid"] != died  # a second attempt, in another worker, wrote shard 1
    leftovers = [p for p in (tmp_path / "ray").iterdir() if p.name.startswith(TMP_PREFIX)]
    assert len(leftovers) == 1, "the killed attempt left its temporary file (never under the shard's name)"
    table = staged_table(data_root, f"{tmp_path}/ray", ["0", "1"], {"0": files[0], "1": files[1]}, {"0", "1"}, {})
    assert not [p for p in (tmp_path / "ray").iterdir() if p.name.startswith(TMP_PREFIX)]
    got = pl.concat([pl.read_parquet(s.path) for s in table.shards])
    want = pl.concat([pl.read_parquet(f"{tmp_path}/expected/{k}.parquet") for k in ("0", "1")])
    assert got.height == want.height == 2 * len(PAGES) == got["url"].n_unique()
    assert got.equals(want)
    assert [v["rows"] for v in expected.values.values()] == [len(PAGES)] * 2
