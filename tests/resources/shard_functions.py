"""Shard functions for the executor tests, in a module Ray workers can import (``tests.resources.shard_functions``
from the repository root, which Ray puts on its workers' path)."""

import os

from crawl2serve.resources.storage import DataRoot


def square_or_refuse(x: int) -> int:
    """x squared; a negative x is this shard's own bad data."""
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x * x


def pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def die_mid_write_once(marker: str, root_url: str, fn, *args):
    """``fn(root_url, *args)``, except on the first attempt: that one begins the shard's staged file (the last
    argument) the way ``DataRoot.write_parquet`` does, writes half a file, and its worker dies (``os._exit``), as
    a worker killed mid-shard would. ``marker`` records the dying attempt's pid."""
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        with DataRoot(url=root_url).atomic_open(args[-1], "wb") as f:
            f.write(b"PAR1 half a Parquet file")
            f.flush()
            os._exit(1)
    return {**fn(root_url, *args), "pid": os.getpid()}


def span(seconds: float) -> tuple[float, float]:
    """When this shard started and ended (it sleeps ``seconds``)."""
    import time

    started = time.time()
    time.sleep(seconds)
    return started, time.time()


def task_and_square_or_refuse(x: int) -> tuple[str, int]:
    """(the Ray task this shard ran in, x squared); a negative x is this shard's own bad data."""
    import ray

    return ray.get_runtime_context().get_task_id(), square_or_refuse(x)
