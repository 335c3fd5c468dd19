"""``lora_adapter``: LoRA fine-tuning launched out of process through Dagster Pipes, tracked in MLflow."""

import base64
import hashlib
import io
import json
import shutil
from pathlib import Path

import dagster as dg
from pydantic import Field

from crawl2serve.assets.lineage import data_version, git_commit
from crawl2serve.assets.metadata import GPU_POOL, readable, stage_facts
from crawl2serve.resources.storage import REPO_ROOT, DataRoot
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.resources.training import TrainingLauncher

from .assets import base_model, training_dataset

TRAINED_RECORD = "trained.json"  # the last finished training: key, result, history, MLflow run id
TRACKED_METRICS = ("loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "mfu")


class LoraConfig(dg.Config):
    """Knobs of one fine-tuning run (the trainer's TrainConfig; paths come from the data root)."""

    max_steps: int = Field(60, description="Optimizer steps in all (a resumed run stops at the same count).")
    micro_batch_size: int = Field(8, description="Sequences per rank per forward/backward.")
    grad_accum: int = Field(1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(5e-3, description="Peak AdamW learning rate.")
    warmup_steps: int = Field(5, description="Linear warmup steps, then cosine decay.")
    min_lr_ratio: float = Field(0.1, description="Cosine floor as a share of the peak learning rate.")
    max_grad_norm: float = Field(1.0, description="Gradient clipping norm.")
    lora_r: int = Field(16, description="LoRA rank.")
    lora_alpha: int = Field(32, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(0.0, description="Dropout on the LoRA path.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Modules that get LoRA weights.",
    )
    seed: int = Field(0, description="Seed of weights, data order and dropout.")
    compile: bool | None = Field(
        None,
        description="torch.compile the model; unset: on GPUs only (1.56x tokens/s "
        "on an H100, bench/bench_train.py), not on CPU where compiling costs more than it saves.",
    )
    checkpoint_every: int = Field(20, description="Steps between checkpoints.")
    keep_last: int = Field(2, description="Checkpoints kept.")
    eval_every: int = Field(20, description="Steps between validation-loss evaluations.")
    eval_batches: int = Field(8, description="Validation micro-batches per evaluation.")
    fresh: bool = Field(False, description="Discard this asset's checkpoints instead of resuming from them.")


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
    deps=[training_dataset, base_model],
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
) -> dg.MaterializeResult:
    """A LoRA adapter (peft) fine-tuned on ``training_dataset`` over ``base_model``.

    Dagster launches the trainer (assets/training/trainer.py) out of process through Pipes: locally under
    ``torchrun`` (FSDP when more than one rank), on a cluster as a GPU pod through ``PipesK8sClient``. The
    trainer streams step metrics back; the run is tracked in MLflow (params, per-step metrics, the adapter
    and loss curve as artifacts, git commit, and the data versions of the dataset and base model).
    Checkpoints under the asset's folder let a killed run resume where it stopped.
    """
    out = data_root.local_path(data_root.path("lora_adapter"))
    if config.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    versions = {
        "training_dataset": data_version(context, "training_dataset"),
        "base_model": data_version(context, "base_model"),
    }
    inputs = {
        **config.model_dump(exclude={"fresh"}),
        "base_model": data_root.path("base_model"),
        "dataset_dir": data_root.path("training_dataset"),
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
    reusable = (
        "unknown" not in versions.values()
        and record.get("training_key") == key
        and Path(record["result"]["adapter_path"]).exists()
    )
    if reusable:  # same config, same dataset and base versions: the adapter would come out the same
        context.log.info(f"inputs unchanged since MLflow run {record['mlflow_run_id']}: reusing its adapter")
        history, result, run_id = record["history"], record["result"], record["mlflow_run_id"]
        png = (run_dir / "loss_curve.png").read_bytes()
    else:
        history, result, png, run_id = _train(
            context, training_launcher, mlflow_tracking, train_cfg, config_path, versions, run_dir
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
    return dg.MaterializeResult(
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
            "steps": int(result["steps"]),
            "resumed_from_step": int(result["resumed_from_step"]),
            "world_size": int(result["world_size"]),
            "mlflow_run_id": run_id,
            "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url_of(run_id)),
            "mlflow_tracking_uri": mlflow_tracking.uri,
            "data_versions": dg.MetadataValue.json(versions),
            "steps_logged": len(history),
            "reused": reusable,
        }
    )


def _train(
    context,
    training_launcher: TrainingLauncher,
    mlflow_tracking: MlflowTracking,
    train_cfg: dict,
    config_path: Path,
    versions: dict,
    out: Path,
) -> tuple[list[dict], dict, bytes, str]:
    """Launch the trainer through Pipes, then track the run in MLflow: (history, result, loss PNG, run id)."""
    invocation = training_launcher.run(
        context, str(config_path), env={"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    )
    history = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "step" in m]
    reported = invocation.get_materialize_result()
    result = {k: v.value if hasattr(v, "value") else v for k, v in (reported.metadata or {}).items()}
    if not result.get("adapter_path"):
        raise RuntimeError(f"the trainer finished without reporting an adapter (result: {result})")
    png = loss_curve_png(history)
    (out / "loss_curve.png").write_bytes(png)
    mlflow = mlflow_tracking.client()
    with mlflow.start_run(run_name=f"lora-{context.run_id[:8]}") as run:
        mlflow.log_params({k: (",".join(v) if isinstance(v, list) else v) for k, v in train_cfg.items()})
        mlflow.set_tags(
            {
                "git_commit": git_commit(),
                "dagster_run_id": context.run_id,
                "data_version.training_dataset": versions["training_dataset"],
                "data_version.base_model": versions["base_model"],
                "launcher": f"{training_launcher.mode}x{training_launcher.nproc_per_node}",
            }
        )
        for row in history:
            mlflow.log_metrics({k: float(row[k]) for k in TRACKED_METRICS if row.get(k) is not None}, step=row["step"])
        mlflow.log_metrics(
            {
                k: float(result[k])
                for k in ("final_val_loss", "initial_val_loss", "tokens_per_s", "peak_memory_bytes")
                if result.get(k) is not None
            }
        )
        mlflow.log_artifacts(result["adapter_path"], artifact_path="adapter")
        mlflow.log_artifact(str(out / "loss_curve.png"))
        return history, result, png, run.info.run_id
