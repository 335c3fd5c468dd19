"""Shared fixtures: one real lineage (pydoc crawl → corpus → features → training dataset) per test session."""

import dagster as dg
import pytest
from support import CORPUS, DOWNSTREAM, PARTITION, SEQ_LEN, all_resources, run_config


@pytest.fixture(scope="session")
def lineage(tmp_path_factory):
    """(data root, resources, result) after materializing everything up to ``training_dataset``."""
    root = tmp_path_factory.mktemp("lineage")
    res = all_resources(root)
    corpus = dg.materialize(CORPUS, resources=res, partition_key=PARTITION, run_config=run_config(120))
    assert corpus.success
    result = dg.materialize(
        [*CORPUS, *DOWNSTREAM],
        selection=DOWNSTREAM,
        resources=res,
        run_config={"ops": {"training_dataset": {"config": {"seq_len": SEQ_LEN}}}},
    )
    return root, res, result


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (2 CPUs, loopback only), started by the first test that asks for
    it and stopped at the end; ``CorpusExecutor()`` in a test then runs its shards there."""
    import ray

    from crawl2serve.resources.corpus_executor import ensure_ray

    resources = ensure_ray(num_cpus=2)
    yield resources
    ray.shutdown()
