"""The LoRA trainer and the lora_adapter asset on the embedded lineage (CPU): one process, FSDP on gloo,
kill -9 and resume, the NaN guard, the Kubernetes pod spec, and the Pipes round trip into metadata/MLflow."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from crawl2serve.assets.release.registry import register_candidate
from crawl2serve.assets.training.lora import lora_adapter
from crawl2serve.assets.training.trainer import TrainConfig, newest_checkpoint, train
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.resources.training import TrainingLauncher
from tests.support import CORPUS, DOWNSTREAM, EMBEDDED_LORA, PARTITION

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def config(root: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        base_model=str(root / "base_model" / "_"),
        dataset_dir=str(root / "training_dataset" / "_"),
        output_dir=str(out),
        max_steps=20,
        micro_batch_size=8,
        learning_rate=5e-3,
        warmup_steps=2,
        checkpoint_every=100,
        eval_every=10,
        eval_batches=4,
        log_every=5,
    )
    return TrainConfig(**{**base, **kw})


def write(cfg: TrainConfig, path: Path) -> Path:
    path.write_text(json.dumps(cfg.__dict__))
    return path


def test_one_process_training_lowers_validation_loss(lineage, tmp_path):
    root, _, _ = lineage
    result = train(config(root, tmp_path / "run"))
    assert result["final_val_loss"] < result["initial_val_loss"] - 0.05
    assert result["steps"] == 20 and result["world_size"] == 1
    adapter = Path(result["adapter_path"])
    assert (adapter / "adapter_model.safetensors").exists() and (adapter / "adapter_config.json").exists()


def test_fsdp_two_processes_on_gloo_save_an_adapter_that_peft_loads(lineage, tmp_path):
    root, _, _ = lineage
    cfg = write(config(root, tmp_path / "fsdp", max_steps=6, eval_every=6), tmp_path / "cfg.json")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "crawl2serve.assets.training.trainer",
            "--config",
            str(cfg),
        ],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith('{"result"')))["result"]
    assert result["world_size"] == 2 and result["final_val_loss"] < result["initial_val_loss"]

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(root / "base_model" / "_")
    model = PeftModel.from_pretrained(base, result["adapter_path"])
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b)  # trained: B starts at zero
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


def test_kill_minus_nine_then_resume_finishes_at_the_configured_step(lineage, tmp_path):
    root, _, _ = lineage
    out = tmp_path / "killed"
    cfg = write(
        config(root, out, max_steps=16, checkpoint_every=3, keep_last=2, eval_every=100, log_every=1),
        tmp_path / "cfg.json",
    )
    cmd = [sys.executable, "-m", "crawl2serve.assets.training.trainer", "--config", str(cfg)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (out / "checkpoint-0000006").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint-0000006").exists(), "no checkpoint before the kill"
    before = newest_checkpoint(out)
    assert before is not None and (before / "state.pt").exists()
    assert not (out / "adapter").exists()
    assert len([p for p in out.glob("checkpoint-*") if not p.name.endswith(".tmp")]) <= 2  # keep_last

    done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(ln for ln in done.stdout.splitlines() if ln.startswith('{"result"')))["result"]
    assert result["resumed_from_step"] == int(before.name.split("-")[1]) >= 6
    assert result["steps"] == 16
    steps_run = [int(ln.split()[1].split("/")[0]) for ln in done.stdout.splitlines() if ln.startswith("step ")]
    assert steps_run[0] == result["resumed_from_step"] + 1 and steps_run[-1] == 16
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_a_diverging_run_stops_with_a_clear_error(lineage, tmp_path):
    root, _, _ = lineage
    with pytest.raises(FloatingPointError, match="non-finite loss or gradient at step"):
        train(config(root, tmp_path / "nan", max_steps=30, learning_rate=1e6, max_grad_norm=1e9, warmup_steps=0))


def test_the_pod_spec_pipes_k8s_client_would_launch():
    """No cluster exists here: this is the one place a double stands in (for the Kubernetes API)."""
    from dagster_k8s.pipes import build_pod_body
    from kubernetes.client import ApiClient

    launcher = TrainingLauncher(
        mode="k8s",
        image="registry.local/crawl2serve-trainer:1.0",
        gpus=4,
        cpu="32",
        memory="256Gi",
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        data_claim="crawl2serve-data",
        namespace="ml",
    )
    command = launcher.command("/data/lora_adapter/_/train_config.json")
    pod = build_pod_body(
        pod_name="dagster-pipes-lora",
        image=launcher.image,
        command=command,
        env_vars={"DAGSTER_PIPES_CONTEXT": "x", "DAGSTER_PIPES_MESSAGES": "y", "HF_HUB_OFFLINE": "1"},
        base_pod_meta={"labels": {"crawl2serve/stage": "training"}},
        base_pod_spec=launcher.pod_spec(),
    )
    body = ApiClient().sanitize_for_serialization(pod)
    pod_again = ApiClient()._ApiClient__deserialize(body, "V1Pod")  # validates against the API models
    container = pod_again.spec.containers[0]
    assert container.image == "registry.local/crawl2serve-trainer:1.0"
    assert container.command == [
        "torchrun",
        "--standalone",
        "--nproc-per-node=4",
        "-m",
        "crawl2serve.assets.training.trainer",
        "--config",
        "/data/lora_adapter/_/train_config.json",
    ]
    assert container.resources.limits["nvidia.com/gpu"] == "4"
    assert container.resources.requests == {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "4"}
    env = {e.name: e.value for e in container.env}
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", "HF_HUB_OFFLINE", "NCCL_DEBUG"} <= set(env)
    assert pod_again.spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod_again.spec.tolerations[0].key == "nvidia.com/gpu"
    assert {v.name for v in pod_again.spec.volumes} == {"dshm", "data"}
    assert pod_again.spec.restart_policy == "Never"
    assert body["spec"]["containers"][0]["volumeMounts"][1]["mountPath"] == "/data"


def test_pipes_round_trip_puts_trainer_metrics_in_metadata_and_mlflow(lineage):
    root, res, _ = lineage
    resources = {
        **res,
        "training_launcher": TrainingLauncher(mode="local", nproc_per_node=1),
        "mlflow_tracking": MlflowTracking(data_root=res["data_root"]),
    }
    lora = {**EMBEDDED_LORA, "max_steps": 8, "eval_every": 4, "checkpoint_every": 4, "fresh": True}
    result = dg.materialize(
        [*CORPUS, *DOWNSTREAM, lora_adapter],
        selection=[lora_adapter],
        resources=resources,
        run_config={"ops": {"lora_adapter": {"config": lora}}},
    )
    assert result.success
    md = result.get_asset_materialization_events()[0].materialization.metadata
    assert md["steps"].value == 8 and md["steps_logged"].value == 9  # the step-0 evaluation plus 8 steps
    assert md["final_val_loss"].value < md["initial_val_loss"].value
    assert md["loss_curve"].value.startswith("![loss curve](data:image/png;base64,")
    assert md["tokens_per_s"].value > 0 and md["peak_memory_mb"].value > 0

    mlflow = resources["mlflow_tracking"].client()
    run = mlflow.get_run(md["mlflow_run_id"].value)
    assert (
        md["mlflow_run"].value == f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    )
    assert run.data.params["max_steps"] == "8" and run.data.tags["git_commit"]
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == list(range(1, 9))  # logged once, live, by the trainer (no replay)
    assert run.info.status == "FINISHED"
    assert [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_bits_per_byte")] == [
        0,
        4,
        8,
    ]

    # The training data as the run's MLflow dataset: digest = training_dataset's data version, source = its folder.
    dataset = lineage[2].asset_materializations_for_node("training_dataset")[0]
    (used,) = run.inputs.dataset_inputs
    assert used.dataset.digest == dataset.metadata["version"].value and used.dataset.name == "training_dataset"
    assert json.loads(used.dataset.source)["uri"] == str(root / "training_dataset" / "_")
    assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "training"
    assert dataset.metadata["crawl_partitions"].value == [PARTITION]  # the newest (here: the only) crawl

    # Base vs adapter on the newest crawl's validation split, in metadata and in MLflow.
    base_ppl, adapter_ppl = md["base_perplexity"].value, md["adapter_perplexity"].value
    assert adapter_ppl < base_ppl and md["perplexity_reduction"].value == pytest.approx(
        1 - adapter_ppl / base_ppl, abs=1e-3
    )
    assert md["adapter_bits_per_byte"].value < md["base_bits_per_byte"].value
    assert math.log(base_ppl) == pytest.approx(md["initial_val_loss"].value, 1e-3)
    for k in ("base_perplexity", "adapter_perplexity", "perplexity_reduction", "base_bits_per_byte"):
        assert run.data.metrics[k] == pytest.approx(md[k].value, 1e-3)

    # The registered model carries a signature: a prompt string in, a completion string out.
    reg = register_candidate(
        mlflow,
        adapter_dir=md["adapter_path"].value,
        base_model=str(root / "base_model" / "_"),
        training_run_id=run.info.run_id,
        tags={},
        metrics={},
        promote=False,
    )
    signature = mlflow.models.get_model_info(reg.model_uri).signature
    assert signature.inputs.to_dict() == [{"type": "string", "name": "prompt", "required": True}]
    assert signature.outputs.to_dict() == [{"type": "string", "name": "completion", "required": True}]
    assert signature.params.to_dict()[0]["name"] == "max_new_tokens"


def test_a_failed_training_marks_its_mlflow_run_failed(lineage):
    """main started the MLflow run only after the trainer had succeeded: a failed training left no run."""
    root, res, _ = lineage
    tracking = MlflowTracking(data_root=res["data_root"])
    resources = {
        **res,
        "training_launcher": TrainingLauncher(mode="local", nproc_per_node=1),
        "mlflow_tracking": tracking,
    }
    lora = {**EMBEDDED_LORA, "max_steps": 30, "learning_rate": 1e6, "max_grad_norm": 1e9, "warmup_steps": 0}
    result = dg.materialize(
        [*CORPUS, *DOWNSTREAM, lora_adapter],
        selection=[lora_adapter],
        resources=resources,
        run_config={"ops": {"lora_adapter": {"config": {**lora, "fresh": True}}}},
        raise_on_error=False,
    )
    assert not result.success
    mlflow = tracking.client()
    (run,) = mlflow.search_runs(filter_string=f"tags.dagster_run_id = '{result.run_id}'", output_format="list")
    assert run.info.status == "FAILED"
    assert run.data.metrics["loss"] > 0  # the rows before the failure reached the run
