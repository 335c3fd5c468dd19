"""The Feast feature store of this environment: the repo in feature_repo/, its data under the data root."""

import importlib.util
import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from crawl2serve.serving.gateway.tiers import FEAST_DIR_VAR, REDIS_VAR, open_feature_store

from .storage import REPO_ROOT, DataRoot


def import_feast():
    import feast

    return feast


class FeastStore(dg.ConfigurableResource):
    """Feast over ``feature_repo/``: registry, online store and offline Parquet under ``{data_root}/feast``.

    ``yaml_file`` picks the store configuration: ``feature_store.yaml`` (SQLite online store, the
    embedded default) or ``feature_store.redis.yaml`` (Redis at ``redis``).
    """

    data_root: dg.ResourceDependency[DataRoot]
    repo_path: str = Field(default=str(REPO_ROOT / "feature_repo"), description="The Feast repository folder.")
    yaml_file: str = Field(default="feature_store.yaml", description="Store configuration inside repo_path.")
    redis: str = Field(default="127.0.0.1:6379", description="Redis connection string (Redis configuration).")

    @property
    def feast_dir(self) -> Path:
        """Local folder of the registry, the SQLite online store and the offline Parquet files."""
        return self.data_root.local_path(f"{self.data_root.root}/feast")

    @property
    def offline_dir(self) -> Path:
        return self.feast_dir / "offline"

    def environment(self) -> dict[str, str]:
        return {FEAST_DIR_VAR: str(self.feast_dir), REDIS_VAR: self.redis}

    def store(self):
        """A ``feast.FeatureStore`` for this configuration."""
        self.offline_dir.mkdir(parents=True, exist_ok=True)
        return open_feature_store(self.repo_path, self.yaml_file, str(self.feast_dir), self.redis)

    def definitions(self) -> list:
        """Every Feast object that feature_repo/definitions.py declares (as `feast apply` would find them)."""
        os.environ.update(self.environment())
        feast = import_feast()
        spec = importlib.util.spec_from_file_location(
            "crawl2serve_feast_definitions", Path(self.repo_path) / "definitions.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        kinds = (feast.Entity, feast.FeatureView, feast.FeatureService, feast.PushSource, feast.FileSource)
        return [v for v in vars(module).values() if isinstance(v, kinds)]
