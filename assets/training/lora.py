"""``lora_adapter``: LoRA fine-tuning launched out of process through Dagster Pipes, tracked in MLflow."""

import base64
import dataclasses
import hashlib
import io
import json
import math
import shutil
import typing
from pathlib import Path

import dagster as dg
import pydantic
from pydantic import Field
from pydantic.fields import FieldInfo

from crawl2serve.assets.lineage import git_commit
from crawl2serve.assets.metadata import GPU_POOL, readable, stage_facts
from crawl2serve.resources.folders import AdapterFolder, DatasetFolder, ModelFolder, asset_folder
from crawl2serve.resources.storage import DataRoot
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.resources.training import TrainingLauncher

from .assets import FOLDER
from .tracking import log_dataset, metric_rows, trainer_env
from .trainer import TrainConfig

TRAINED_RECORD = "trained.json"  # the last finished training: key, result, history, MLflow run id
TRACKED_METRICS = ("loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "mfu")


# TrainConfig fields the asset fills from its inputs and its own folder; every other field is a Dagster knob.
INPUT_PATHS = ("base_model", "dataset_dir", "output_dir")
FIXED = {"mode": "lora"}  # TrainConfig fields that are this asset's, not a knob (base_model pretrains in "full")


def trainer_knobs() -> dict[str, tuple[type, FieldInfo]]:
    """The trainer's TrainConfig fields (less the paths) as pydantic fields: type, default, description."""
    hints = typing.get_type_hints(TrainConfig)
    knobs = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in INPUT_PATHS or f.name in FIXED:
            continue
        default = (
            {"default_factory": f.default_factory}
            if f.default_factory is not dataclasses.MISSING
            else {"default": f.default}
        )
        knobs[f.name] = (hints[f.name], Field(description=f.metadata.get("doc"), **default))
    return knobs


class _RunOptions(dg.Config):
    fresh: bool = Field(False, description="Discard this asset's checkpoints instead of resuming from them.")


# One fine-tuning run's knobs: the trainer's TrainConfig (one set of defaults and descriptions, in trainer.py) and
# ``fresh``. The embedded run's values, where they differ on purpose, are in pipelines/embedded.yaml.
LoraConfig = pydantic.create_model(
    "LoraConfig",
    __base__=_RunOptions,
    __doc__="Knobs of one fine-tuning run: the trainer's TrainConfig (paths come from the inputs) and `fresh`.",
    __module__=__name__,
    **trainer_knobs(),
)


def loss_curve_png(history: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    train = [(h["step"], h["loss"]) for h in history if h.get("loss") is not None]
    val = [(h["step"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@dg.asset(
    group_name="training",
    io_manager_key=FOLDER,
    kinds={"pytorch", "mlflow"},
    tags={"stage": "training"},
    pool=GPU_POOL,
    **stage_facts("training"),
)
def lora_adapter(
    context: dg.AssetExecutionContext,
    config: LoraConfig,
    training_launcher: TrainingLauncher,
    mlflow_tracking: MlflowTracking,
    data_root: DataRoot,
    training_dataset: DatasetFolder,
    base_model: ModelFolder,
) -> dg.Output[AdapterFolder]:
    """A LoRA adapter (peft) fine-tuned on ``training_dataset`` (the newest crawl's high-quality documents)
    over ``base_model`` (pretrained on every crawl).

    Dagster launches the trainer (assets/training/trainer.py) out of process through Pipes: locally under
    ``torchrun`` (FSDP when more than one rank), on a cluster as a GPU pod through ``PipesK8sClient``. The
    trainer streams step metrics back, and into the MLflow run this asset started before launching it, live
    (params, per-step metrics, the dataset as an input, the adapter and loss curve as artifacts, git commit,
    the data versions of the dataset and base model). Metadata and MLflow show the base's and the adapter's
    perplexity and bits per byte on the dataset's validation split (:func:`base_vs_adapter`).
    Checkpoints under the asset's folder let a killed run resume where it stopped.
    """
    out = data_root.local_path(asset_folder(data_root, context))
    if config.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    versions = {"training_dataset": training_dataset.version, "base_model": base_model.version}
    inputs = {
        **config.model_dump(exclude={"fresh"}),
        **FIXED,
        "base_model": base_model.path,
        "dataset_dir": training_dataset.path,
    }
    # One folder per training key (config + input data versions): checkpoints resume only the same training.
    key = hashlib.sha256(json.dumps({"inputs": inputs, "versions": versions}, sort_keys=True).encode()).hexdigest()
    run_dir = out / f"run-{key[:12]}"
    run_dir.mkdir(exist_ok=True)
    train_cfg = {**inputs, "output_dir": str(run_dir)}
    config_path = run_dir / "train_config.json"
    data_root.write_bytes(json.dumps(train_cfg, indent=2).encode(), str(config_path))
    record_path = out / TRAINED_RECORD
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    reusable = record.get("training_key") == key and Path(record["result"]["adapter_path"]).exists()
    if reusable:  # same config, same dataset and base versions: the adapter would come out the same
        context.log.info(f"inputs unchanged since MLflow run {record['mlflow_run_id']}: reusing its adapter")
        history, result, run_id = record["history"], record["result"], record["mlflow_run_id"]
        png = (run_dir / "loss_curve.png").read_bytes()
    else:
        history, result, png, run_id = _train(
            context, training_launcher, mlflow_tracking, train_cfg, config_path, training_dataset, versions, run_dir
        )
        data_root.write_bytes(
            json.dumps(
                {"training_key": key, "history": history, "result": result, "mlflow_run_id": run_id}, default=str
            ).encode(),
            str(record_path),
        )
        for old in out.glob("run-*"):
            if old != run_dir:
                shutil.rmtree(old, ignore_errors=True)

    image = base64.b64encode(png).decode()
    adapter = AdapterFolder(
        path=str(result["adapter_path"]),
        version=key[:16],
        facts={"mlflow_run_id": run_id, "data_versions": versions, "training_key": key},
    )
    return dg.Output(
        adapter,
        metadata={
            "loss_curve": dg.MetadataValue.md(f"![loss curve](data:image/png;base64,{image})"),
            "loss_curve_png": dg.MetadataValue.path(str(run_dir / "loss_curve.png")),
            "adapter_path": dg.MetadataValue.path(result["adapter_path"]),
            "adapter_bytes": int(result["adapter_bytes"] or 0),
            "tokens_per_s": round(float(result["tokens_per_s"]), 1),
            "mfu": readable(float(result["mfu"])) if result.get("mfu") is not None else "n/a (CPU)",
            "peak_memory_mb": round(int(result["peak_memory_bytes"]) / 2**20, 1),
            "initial_val_loss": readable(float(result["initial_val_loss"]))
            if result.get("initial_val_loss") is not None
            else "n/a",
            "final_val_loss": readable(float(result["final_val_loss"]))
            if result.get("final_val_loss") is not None
            else "n/a",
            **{k: readable(v) for k, v in base_vs_adapter(result).items()},
            "steps": int(result["steps"]),
            "resumed_from_step": int(result["resumed_from_step"]),
            "world_size": int(result["world_size"]),
            "mlflow_run_id": run_id,
            "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url_of(run_id)),
            "mlflow_tracking_uri": mlflow_tracking.uri,
            "data_versions": dg.MetadataValue.json(versions),
            "steps_logged": len(history),
            "reused": reusable,
        },
    )


def base_vs_adapter(result: dict) -> dict[str, float]:
    """The base's and the adapter's perplexity and bits per byte on the validation split the trainer scored
    (the newest crawl's, as ``training_dataset`` selects it), and the relative perplexity reduction.

    The base's figures are the trainer's evaluation before the first step (``initial_val_*``), the adapter's
    the last one (``final_val_*``): the same rows, so no extra pass. Empty when the run resumed (no figure
    before training) or had no validation rows."""
    base, adapter = result.get("initial_val_loss"), result.get("final_val_loss")
    if base is None or adapter is None:
        return {}
    out = {"base_perplexity": math.exp(base), "adapter_perplexity": math.exp(adapter)}
    out["perplexity_reduction"] = 1.0 - out["adapter_perplexity"] / out["base_perplexity"]
    for who, key in (("base", "initial_val_bits_per_byte"), ("adapter", "final_val_bits_per_byte")):
        if result.get(key) is not None:
            out[f"{who}_bits_per_byte"] = float(result[key])
    return out


def _train(
    context,
    training_launcher: TrainingLauncher,
    mlflow_tracking: MlflowTracking,
    train_cfg: dict,
    config_path: Path,
    dataset: DatasetFolder,
    versions: dict,
    out: Path,
) -> tuple[list[dict], dict, bytes, str]:
    """Start the MLflow run, launch the trainer through Pipes with that run handed over, then log the summary
    and the artifacts: (history, result, loss PNG, run id).

    The run starts first so the trainer's rank 0 logs each metric row into it as it comes (its id and store go
    in the trainer's environment, :func:`.tracking.trainer_env`): the curves grow live in MLflow as in the
    Dagster run log. A trainer without
    mlflow installed reports through Pipes only; its rows are then logged here afterwards. A failed training
    leaves the run FAILED (``start_run``'s context ends it so on an exception)."""
    mlflow = mlflow_tracking.client()
    with mlflow.start_run(run_name=f"lora-{context.run_id[:8]}") as run:
        run_id = run.info.run_id
        mlflow.log_params({k: (",".join(v) if isinstance(v, list) else v) for k, v in train_cfg.items()})
        mlflow.set_tags(
            {
                "git_commit": git_commit(),
                "dagster_run_id": context.run_id,
                "data_version.training_dataset": versions["training_dataset"],
                "data_version.base_model": versions["base_model"],
                "launcher": training_launcher.describe(),
            }
        )
        log_dataset(mlflow, dataset.path, "training_dataset", dataset.version)
        invocation = training_launcher.run(context, str(config_path), env=trainer_env(mlflow_tracking, run_id))
        history = metric_rows(invocation.get_custom_messages())
        reported = invocation.get_materialize_result()
        result = {k: v.value if hasattr(v, "value") else v for k, v in (reported.metadata or {}).items()}
        if not result.get("adapter_path"):
            raise RuntimeError(f"the trainer finished without reporting an adapter (result: {result})")
        if history and not mlflow.MlflowClient().get_metric_history(run_id, "loss"):  # a trainer without mlflow
            for row in history:
                mlflow.log_metrics(
                    {k: float(row[k]) for k in TRACKED_METRICS if row.get(k) is not None}, step=row["step"]
                )
        png = loss_curve_png(history)
        (out / "loss_curve.png").write_bytes(png)
        mlflow.log_metrics(
            {
                **{
                    k: float(result[k])
                    for k in ("final_val_loss", "initial_val_loss", "tokens_per_s", "peak_memory_bytes")
                    if result.get(k) is not None
                },
                **base_vs_adapter(result),
            }
        )
        mlflow.log_artifacts(result["adapter_path"], artifact_path="adapter")
        mlflow.log_artifact(str(out / "loss_curve.png"))
        return history, result, png, run_id
