"""Experiment tracking and the model registry: MLflow (SQLite under the data root by default)."""

import os
from urllib.parse import quote

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

    ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="Base URL of the MLflow UI that shows this store (what `mlflow ui` serves by default); "
        "asset metadata links runs and model versions there",
    )

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """The MLflow UI page of a run: ``{ui_url}/#/experiments/<id>/runs/<run_id>``."""
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, name: str, version: str | int) -> str:
        """The MLflow UI page of a registered model version: ``{ui_url}/#/models/<name>/versions/<v>``."""
        return f"{self.ui_url.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{version}"

    def run_url_of(self, run_id: str) -> str:
        """:meth:`run_url` of a run known by id only (its experiment looked up in the store)."""
        return self.run_url(self.client().get_run(run_id).info.experiment_id, run_id)

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
