"""Pretraining the embedded base model (assets/training/pretrain.py, the trainer's full mode, the base_model
asset) on the session's real lineage (CPU, a handful of steps)."""

import json
import shutil

import dagster as dg
import polars as pl
import pytest
import torch
from support import CORPUS, PARTITION, PRETRAIN_STEPS, SEQ_LEN
from transformers import AutoModelForCausalLM, AutoTokenizer

from crawl2serve.assets.training.assets import base_model, tokenizer
from crawl2serve.assets.training.pretrain import (
    PRETRAINED_RECORD,
    PRETRAINING_FOLDER,
    pretraining_data,
    pretraining_split,
)
from crawl2serve.assets.training.trainer import TrainConfig, train
from crawl2serve.resources.base_model import BaseModelSource
from crawl2serve.resources.folders import FolderIOManager
from crawl2serve.resources.io_manager import ParquetIOManager
from crawl2serve.resources.storage import DataRoot


def documents(root) -> pl.DataFrame:
    return pl.read_parquet(root / "deduplicated_documents" / PARTITION / "data.parquet")


def run_dir(root):
    (found,) = (root / "base_model" / PRETRAINING_FOLDER).glob("run-*")
    return found


def test_pretraining_and_fine_tuning_share_the_held_out_pages_and_split_the_rest(lineage):
    root, _, _ = lineage
    share = BaseModelSource().pretrain_share
    split = pretraining_split(documents(root), share)
    assert set(split["split"]) == {"pretrain", "train", "validation"} and split["doc_id"].is_unique().all()
    finetune = pl.read_parquet(root / "training_dataset" / "_" / "documents.parquet")
    joined = finetune.join(split.select("doc_id", pl.col("split").alias("pretraining")), on="doc_id")
    assert joined.height == finetune.height
    # validation pages were never pretrained on, and no page the base pretrained on is fine-tuned on
    assert (joined["split"] == joined["pretraining"]).all() and "pretrain" not in set(finetune["split"])
    pretrain_pages = (
        split.filter(pl.col("split") == "pretrain").height / split.filter(pl.col("split") != "validation").height
    )
    assert abs(pretrain_pages - share) < 0.15  # the share of pages (split keys), give or take the hash's spread

    tok = AutoTokenizer.from_pretrained(root / "tokenizer" / "_")
    rows = pretraining_data(documents(root), tok, SEQ_LEN, share)
    again = pretraining_data(documents(root).reverse(), tok, SEQ_LEN, share)
    assert rows["train"].shape[1] == SEQ_LEN and len(rows["validation"]) > 0
    assert all((rows[s] == again[s]).all() for s in rows)  # a pure function of the documents


def test_pretraining_data_names_a_missing_column(lineage):
    root, _, _ = lineage
    with pytest.raises(ValueError, match="host"):
        pretraining_split(documents(root).drop("host"), 0.5)


def test_an_unknown_trainer_mode_is_refused():
    with pytest.raises(ValueError, match="'mode'"):
        TrainConfig(base_model="b", dataset_dir="d", output_dir="o", mode="partial")


def test_full_mode_trains_every_weight_reports_bits_per_byte_and_resumes_exactly(lineage, tmp_path):
    root, _, _ = lineage
    run = run_dir(root)
    cfg = TrainConfig(
        base_model=str(run / "init"),
        dataset_dir=str(run / "data"),
        output_dir=str(tmp_path / "full"),
        mode="full",
        max_steps=4,
        micro_batch_size=4,
        learning_rate=3e-3,
        warmup_steps=1,
        checkpoint_every=2,
        eval_every=2,
        eval_batches=2,
    )
    first = train(cfg)
    assert first["adapter_path"] is None and first["model_path"] == str(tmp_path / "full" / "model")
    assert first["final_val_loss"] < first["initial_val_loss"]
    assert 0 < first["final_val_bits_per_byte"] < first["initial_val_bits_per_byte"]
    init = AutoModelForCausalLM.from_pretrained(run / "init").state_dict()
    trained = AutoModelForCausalLM.from_pretrained(first["model_path"]).state_dict()
    assert all(not torch.equal(init[k], trained[k]) for k in init)  # every parameter trains, norms included

    shutil.rmtree(first["model_path"])  # as if killed after the step-2 checkpoint
    second = train(cfg)
    assert second["resumed_from_step"] == 2 and second["steps"] == 4
    resumed = AutoModelForCausalLM.from_pretrained(second["model_path"]).state_dict()
    assert all(torch.allclose(trained[k], resumed[k], atol=1e-6) for k in trained)


def copy_inputs(src, dst) -> None:
    for name in ("deduplicated_documents", "tokenizer", f"base_model/{PRETRAINING_FOLDER}"):
        shutil.copytree(src / name, dst / name)


def materialize_base(root, res, source: BaseModelSource) -> dg.ExecuteInProcessResult:
    data_root = DataRoot(url=str(root))
    resources = {
        **res,
        "data_root": data_root,
        "io_manager": ParquetIOManager(data_root=data_root),
        "folder_io_manager": FolderIOManager(data_root=data_root),  # the copy's folders, not the session's
        "base_model_source": source,
    }
    return dg.materialize([*CORPUS, tokenizer, base_model], selection=[base_model], resources=resources)


def test_base_model_is_pretrained_then_reused_while_its_inputs_are_unchanged(lineage, tmp_path):
    root, res, result = lineage
    first = next(
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "base_model"
    ).materialization
    assert first.metadata["pretraining_steps"].value == PRETRAIN_STEPS
    assert first.metadata["pretraining_reused"].value is False
    assert first.metadata["final_val_bits_per_byte"].value < first.metadata["initial_val_bits_per_byte"].value
    assert (root / "base_model" / PRETRAINING_FOLDER / PRETRAINED_RECORD).exists()
    # the embedded model recommends its decoding: every engine loads it from the folder as its default
    recommended = json.loads((root / "base_model" / "_" / "generation_config.json").read_text())
    assert recommended["repetition_penalty"] == res["base_model_source"].repetition_penalty

    copy_inputs(root, tmp_path)
    again = materialize_base(tmp_path, res, res["base_model_source"])
    mat = again.get_asset_materialization_events()[0].materialization
    assert mat.metadata["pretraining_reused"].value is True
    assert mat.tags["dagster/data_version"] == first.tags["dagster/data_version"]  # the same weights


def test_the_pretraining_is_tracked_in_its_own_mlflow_run_by_the_trainer(lineage):
    """main tracked base_model's pretraining nowhere in MLflow."""
    root, res, result = lineage
    md = result.asset_materializations_for_node("base_model")[0].metadata
    client = res["mlflow_tracking"].client().MlflowClient()
    run = client.get_run(md["pretraining_mlflow_run_id"].value)
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "pretraining"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(1, PRETRAIN_STEPS + 1))
    assert run.data.metrics["final_val_bits_per_byte"] == pytest.approx(md["final_val_bits_per_byte"].value)
    (used,) = run.inputs.dataset_inputs
    assert used.dataset.name == "pretraining_data" and len(used.dataset.digest) == 16


def test_zero_pretraining_steps_keep_the_random_initialization(lineage, tmp_path):
    root, res, _ = lineage
    copy_inputs(root, tmp_path)
    source = BaseModelSource(vocab_size=1024, pretrain_steps=0, pretrain_seq_len=SEQ_LEN)  # support's, no steps
    mat = materialize_base(tmp_path, res, source).get_asset_materialization_events()[0].materialization
    assert "pretraining_steps" not in mat.metadata
    init = AutoModelForCausalLM.from_pretrained(run_dir(root) / "init").state_dict()
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "base_model" / "_").state_dict()
    assert all(torch.equal(init[k], saved[k]) for k in init)  # the same seeded init pretraining starts from
