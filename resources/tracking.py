"""Experiment tracking and the model registry: MLflow (SQLite under the data root by default)."""

import os

import dagster as dg
from pydantic import Field

from .storage import DataRoot


class MlflowTracking(dg.ConfigurableResource):
    """MLflow tracking. Embedded default: ``sqlite:///{data_root}/mlflow/mlflow.db`` with artifacts beside it;
    production: a tracking server URI (``http://mlflow:5000``) or a Postgres URI."""

    data_root: dg.ResourceDependency[DataRoot]
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default: SQLite under the data root"
    )
    experiment: str = Field(default="crawl2serve", description="Experiment of the training runs")
    artifact_location: str | None = Field(
        default=None,
        description="Artifact store of a new experiment; default: {data_root}/mlflow/artifacts, "
        "except with an http(s) tracking server, which chooses its own",
    )

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
            location = self.artifact_location
            if location is None and not (self.tracking_uri or "").startswith(("http://", "https://")):
                location = (self.data_root.local_path(f"{self.data_root.root}/mlflow") / "artifacts").as_uri()
            mlflow.create_experiment(self.experiment, artifact_location=location)
        mlflow.set_experiment(self.experiment)
        return mlflow
