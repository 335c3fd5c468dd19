"""What the training assets share about the trainer's run: the environment that hands it an MLflow run, its
metric rows as Pipes brought them, and a data folder as an MLflow dataset input."""

from pathlib import Path

from crawl2serve.resources.storage import REPO_ROOT
from crawl2serve.resources.tracking import MlflowTracking

from .trainer import MLFLOW_RUN_ENV, MLFLOW_URI_ENV


def trainer_env(tracking: MlflowTracking, run_id: str) -> dict[str, str]:
    """The trainer's environment: offline Hub, this checkout importable, and the MLflow run its rank 0 logs
    metric rows into as they come (trainer.MlflowMetrics). The run goes by environment, not TrainConfig: the
    config's fields are lora_adapter's Dagster knobs, and a run id is none (it is new on every launch)."""
    return {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), MLFLOW_RUN_ENV: run_id, MLFLOW_URI_ENV: tracking.uri}


def metric_rows(messages) -> list[dict]:
    """The trainer's metric rows among its Pipes custom messages: one per step, in step order, the last one
    reported for each. A rank 0 that torchrun restarted (a lost node, ``--max-restarts``) reports the steps after
    its checkpoint again; the later row is the one the finished training went through."""
    rows: dict[int, dict] = {}
    for m in messages:
        if isinstance(m, dict) and "step" in m:
            rows[int(m["step"])] = m
    return [rows[step] for step in sorted(rows)]


def log_dataset(mlflow, folder: str | Path, name: str, digest: str) -> None:
    """Record ``folder`` as the active run's training dataset (context "training"): ``name``, the folder as
    its source and ``digest`` (the data's version) as its digest."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    mlflow.log_input(MetaDataset(LocalArtifactDatasetSource(str(folder)), name=name, digest=digest), context="training")
