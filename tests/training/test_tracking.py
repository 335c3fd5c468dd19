"""Live MLflow tracking of the trainer: metric rows reach the run the asset started while the trainer still runs,
in batches, and a trainer without mlflow reports through Pipes only."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from crawl2serve.assets.training.trainer import MLFLOW_RUN_ENV, MLFLOW_URI_ENV, MlflowMetrics, Reporter, TrainConfig

REPO = Path(__file__).resolve().parents[2]


def store(tmp_path: Path):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("live", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri, client, client.create_run(experiment).info.run_id


def test_the_runs_curve_grows_while_the_trainer_is_still_going(lineage, tmp_path):
    """main logged the history into MLflow only after the trainer had finished: nothing while it ran."""
    root, _, _ = lineage
    uri, client, run_id = store(tmp_path)
    cfg = TrainConfig(
        base_model=str(root / "base_model" / "_"),
        dataset_dir=str(root / "training_dataset" / "_"),
        output_dir=str(tmp_path / "run"),
        max_steps=10_000,  # far more than the test waits for: the trainer is still going when it looks
        micro_batch_size=2,
        warmup_steps=1,
        checkpoint_every=100_000,
        eval_every=100_000,
        eval_batches=1,
        log_every=1,
    )
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg.__dict__))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.update({MLFLOW_RUN_ENV: run_id, MLFLOW_URI_ENV: uri})
    env.pop("DAGSTER_PIPES_CONTEXT", None)
    cmd = [sys.executable, "-m", "crawl2serve.assets.training.trainer", "--config", str(path)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, steps = time.monotonic() + 240, []
        while time.monotonic() < deadline and proc.poll() is None and len(steps) < 3:
            time.sleep(0.5)
            steps = [m.step for m in client.get_metric_history(run_id, "loss")]
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]  # the trainer is still training
        assert len(steps) >= 3 and steps == sorted(steps) and steps[0] == 1, steps
        run = client.get_run(run_id)
        assert run.info.status == "RUNNING"
        assert {"loss", "lr", "grad_norm", "tokens_per_s", "val_loss"} <= set(run.data.metrics)  # val_loss: step 0
    finally:
        proc.kill()
        proc.wait()


def test_rows_are_sent_in_batches_at_most_once_per_interval(tmp_path):
    uri, client, run_id = store(tmp_path)
    import mlflow

    sink = MlflowMetrics(mlflow.MlflowClient(uri), run_id, flush_s=3600)
    for step in (1, 2, 3):
        sink.add({"step": step, "loss": 10.0 - step, "mfu": None})
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1]  # the first row goes at once
    sink.flush()
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(1, 9.0), (2, 8.0), (3, 7.0)]
    assert "mfu" not in client.get_run(run_id).data.metrics  # None (CPU) is no metric


def test_without_mlflow_the_reporter_reports_through_pipes_only(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError: not installed
    monkeypatch.setenv(MLFLOW_RUN_ENV, "0123456789abcdef")
    monkeypatch.delenv("DAGSTER_PIPES_CONTEXT", raising=False)
    assert MlflowMetrics.create() is None
    reporter = Reporter(rank=0)
    reporter.metrics({"step": 1, "loss": 2.0})
    reporter.log("step 1/1 loss 2.0")
    reporter.close()
    assert capsys.readouterr().out == '{"metrics": {"step": 1, "loss": 2.0}}\nstep 1/1 loss 2.0\n'  # stdout only


def test_without_a_handed_over_run_nothing_is_tracked(monkeypatch):
    monkeypatch.delenv(MLFLOW_RUN_ENV, raising=False)
    assert MlflowMetrics.create() is None
