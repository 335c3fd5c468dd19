"""Experiment tracking and the model registry: MLflow (SQLite under the data root by default)."""

import os

import dagster as dg
from pydantic import Field

from .storage import DataRoot


class MlflowTracking(dg.ConfigurableResource):
    """MLflow tracking. Embedded default: ``sqlite:///{data_root}/mlflow/mlflow.db`` with artifacts beside it;
    production: a tracking server URI (``http://mlflow:5000``) or a Postgres URI."""

    data_root: dg.ResourceDependency[DataRoot]
    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI; default: SQLite under the data root")
    experiment: str = Field(default="crawl2serve", description="Experiment of the training runs")

    @property
    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        folder = self.data_root.local_path(f"{self.data_root.root}/mlflow")
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder}/mlflow.db"

    def client(self):
        """The ``mlflow`` module pointed at this store, with the experiment created if missing."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        if mlflow.get_experiment_by_name(self.experiment) is None:
            location = None
            if not self.tracking_uri:
                location = (self.data_root.local_path(f"{self.data_root.root}/mlflow") / "artifacts").as_uri()
            mlflow.create_experiment(self.experiment, artifact_location=location)
        mlflow.set_experiment(self.experiment)
        return mlflow
