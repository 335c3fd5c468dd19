"""Resources, chosen per environment in one place: ``build_resources(env)``.

``local`` (the embedded default): data under ./data, the pydoc server as crawl target, no services.
Later environments change configuration only (object-store data root, seed URLs, Redis, MLflow server).
"""

from __future__ import annotations

import os

from .base_model import BaseModelSource
from .crawl_target import CrawlTarget
from .feast_store import FeastStore
from .io_manager import ParquetIOManager
from .serving import ServingEngine
from .storage import DEFAULT_DATA_ROOT, DataRoot
from .tracking import MlflowTracking
from .training import TrainingLauncher

ENV_VAR = "CRAWL2SERVE_ENV"


def build_resources(env: str | None = None) -> dict:
    env = env or os.environ.get(ENV_VAR, "local")
    if env == "local":
        data_root = DataRoot(url=DEFAULT_DATA_ROOT)
        # pydoc is a single-threaded server on loopback: no delay, two requests in flight is plenty.
        crawl_target = CrawlTarget(data_root=data_root, mode="pydoc", per_host_delay_s=0.0)
    else:
        raise ValueError(f"{ENV_VAR}={env!r}: unknown environment (known: local)")
    feast_store = FeastStore(data_root=data_root)
    return {
        "data_root": data_root,
        "io_manager": ParquetIOManager(data_root=data_root),
        "crawl_target": crawl_target,
        "feast_store": feast_store,
        "base_model_source": BaseModelSource(),
        "training_launcher": TrainingLauncher(mode="local", nproc_per_node=1),
        "mlflow_tracking": MlflowTracking(data_root=data_root),
        "serving_engine": ServingEngine(data_root=data_root, feast_store=feast_store),
    }
