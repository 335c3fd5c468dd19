"""Pretraining of the embedded base model from scratch on the corpus, through the project's trainer.

:func:`pretraining_data` (no Dagster) turns the corpus documents into packed train/validation rows, split by
the same keys and rule as ``training_dataset`` (:func:`.packing.split_keys`, :func:`.packing.assign_split`):
the base pretrains on the "pretrain" pages (``BaseModelSource.pretrain_share`` of them), which the fine-tuning
set leaves out, and both hold out the same validation pages. :func:`pretrain` (called by
the ``base_model`` asset) writes them, saves the seeded random initialization, and launches the trainer in
``mode="full"`` through Dagster Pipes, like ``lora_adapter``: locally under torchrun, on a cluster as a pod;
tracked live in an MLflow run, like ``lora_adapter``'s.
The run folder is named by a training key (model shape, trainer knobs, data digest): a killed run resumes
from its newest checkpoint, and a finished one is reused while the key is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from crawl2serve.assets.lineage import git_commit
from crawl2serve.resources.base_model import BaseModelSource
from crawl2serve.resources.folders import asset_folder
from crawl2serve.resources.storage import DataRoot
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.resources.training import TrainingLauncher

from .base_model import build_tiny_llama, save_base
from .packing import PRETRAIN, TRAIN, VALIDATION, assign_split, pack_documents, split_keys
from .tracking import log_dataset, metric_rows, trainer_env

PRETRAINING_FOLDER = "pretraining"  # {data_root}/base_model/pretraining
PRETRAINED_RECORD = "pretrained.json"  # the last finished pretraining: key, result, history
VALIDATION_SHARE = 0.1  # training_dataset's default validation_share: the same pages are held out
MIN_DOMAINS_FOR_DOMAIN_SPLIT = 20  # training_dataset's default


def pretraining_split(documents: pl.DataFrame, pretrain_share: float) -> pl.DataFrame:
    """Every corpus document once (its newest text), ordered by ``doc_id``, with a ``split`` column:
    "pretrain" (the base pretrains on it), "train" (left to the fine-tuning set) or "validation".

    ``documents`` needs ``doc_id``, ``url``, ``host`` and ``text`` (``fetch_time`` too when a document was
    crawled more than once). The split is ``training_dataset``'s rule with its default validation share and
    domain threshold, so a page held out there is held out here, and a page pretrained on here is left out
    there.

    Raises:
        ValueError: naming the missing column(s).
    """
    missing = {"doc_id", "url", "host", "text"} - set(documents.columns)
    if missing:
        raise ValueError(f"pretraining documents lack column(s) {sorted(missing)}")
    docs = documents.sort("fetch_time") if "fetch_time" in documents.columns else documents
    docs = docs.unique("doc_id", keep="last").sort("doc_id")
    _, keys = split_keys(docs["url"].to_list(), docs["host"].to_list(), MIN_DOMAINS_FOR_DOMAIN_SPLIT)
    splits = assign_split(keys, VALIDATION_SHARE, pretrain_share=pretrain_share)
    return docs.with_columns(split=pl.Series(splits, dtype=pl.String))


def pretraining_data(documents: pl.DataFrame, tokenizer, seq_len: int, pretrain_share: float) -> dict[str, np.ndarray]:
    """Packed rows of the corpus, ``{"train": rows, "validation": rows}`` (int32, seq_len wide): the "pretrain"
    pages of :func:`pretraining_split` to train on and its validation pages, packed like ``training_dataset``
    (:func:`.packing.pack_documents`). The rows are a pure function of the documents.

    Raises:
        ValueError: when a needed column is missing, or a split ends up without a full row.
    """
    docs = pretraining_split(documents, pretrain_share)
    out = {}
    for split, pages in ((TRAIN, PRETRAIN), (VALIDATION, VALIDATION)):
        rows, _ = pack_documents(docs.filter(pl.col("split") == pages)["text"].to_list(), tokenizer, seq_len)
        if not len(rows):
            raise ValueError(
                f"pretraining: the {split} split of {docs.height} documents holds no full row of seq_len={seq_len}"
            )
        out[split] = rows
    return out


def write_rows(rows: dict[str, np.ndarray], directory: Path) -> None:
    """Write packed rows as ``{split}.parquet`` (column ``input_ids``), the layout the trainer reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    for split, array in rows.items():
        width = array.shape[1]
        column = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1), pa.int32()), width)
        pq.write_table(pa.table({"input_ids": column}), directory / f"{split}.parquet")


def pretrain(
    context: dg.AssetExecutionContext,
    source: BaseModelSource,
    launcher: TrainingLauncher,
    tracking: MlflowTracking,
    data_root: DataRoot,
    documents: pl.DataFrame,
    tokenizer,
):
    """Pretrain the tiny Llama of ``source`` on ``documents`` with the trainer (``mode="full"``) via Pipes.

    Works under ``{data_root}/base_model/pretraining``: ``run-<key>/`` holds the packed data, the random
    initialization, the trainer's checkpoints and the trained ``model/``; ``pretrained.json`` records the
    last finished run. Returns ``(model, facts)``: the trained model (float32, on CPU) and what to report.
    """
    from transformers import AutoModelForCausalLM

    # In the asset's own folder, beside the saved model (``_``), which save_base replaces as a whole.
    work = data_root.local_path(asset_folder(data_root, context)).parent / PRETRAINING_FOLDER
    work.mkdir(parents=True, exist_ok=True)
    rows = pretraining_data(documents, tokenizer, source.pretrain_seq_len, source.pretrain_share)
    digest = hashlib.sha256()
    for split in (TRAIN, VALIDATION):
        digest.update(np.ascontiguousarray(rows[split]).tobytes())
    knobs = source.pretrain_knobs()
    versioned = {"spec": asdict(source.spec()), "knobs": knobs, "data": digest.hexdigest(), "vocab": len(tokenizer)}
    key = hashlib.sha256(json.dumps(versioned, sort_keys=True).encode()).hexdigest()
    run_dir = work / f"run-{key[:12]}"
    record_path = work / PRETRAINED_RECORD
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    reused = record.get("training_key") == key and Path(record["result"].get("model_path") or "").is_dir()
    if reused:
        context.log.info(f"pretraining inputs unchanged (key {key[:12]}): reusing its model")
        history, result, run_id = record["history"], record["result"], record.get("mlflow_run_id")
    else:
        history, result, run_id = _launch(
            context, launcher, tracking, source, tokenizer, rows, run_dir, knobs, digest.hexdigest()[:16]
        )
        record_path.write_text(
            json.dumps(
                {"training_key": key, "history": history, "result": result, "mlflow_run_id": run_id},
                default=str,
                indent=2,
            )
        )
        for old in work.glob("run-*"):
            if old != run_dir:
                shutil.rmtree(old, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(result["model_path"], local_files_only=True, dtype="float32")
    facts = {
        "pretraining_steps": int(result["steps"]),
        "pretraining_resumed_from_step": int(result["resumed_from_step"]),
        "pretraining_reused": reused,
        "pretraining_tokens_per_s": round(float(result["tokens_per_s"]), 1),
        "pretraining_train_sequences": int(len(rows[TRAIN])),
        "pretraining_validation_sequences": int(len(rows[VALIDATION])),
        "pretraining_seq_len": source.pretrain_seq_len,
        "training_key": key[:12],
        **({"pretraining_mlflow_run_id": run_id} if run_id else {}),
        **{
            k: float(result[k])
            for k in ("initial_val_loss", "final_val_loss", "initial_val_bits_per_byte", "final_val_bits_per_byte")
            if result.get(k) is not None
        },
    }
    return model, facts


def _launch(
    context, launcher, tracking, source, tokenizer, rows, run_dir: Path, knobs: dict, data_version: str
) -> tuple[list[dict], dict, str]:
    """Write the run folder (data, random init, config) and run the trainer through Pipes, tracked in an MLflow
    run started first, which the trainer's metric rows reach as they come (as for ``lora_adapter``); a failed
    pretraining leaves it FAILED. Returns (history, result, MLflow run id)."""
    data_dir, init_dir = run_dir / "data", run_dir / "init"
    if not (data_dir / "validation.parquet").exists():
        write_rows(rows, data_dir)
    if not (init_dir / "config.json").exists():  # kept across a resume: checkpoints hold the weights anyway
        save_base(build_tiny_llama(source.spec(), tokenizer), tokenizer, init_dir)
    config = {
        **knobs,
        "mode": "full",
        "base_model": str(init_dir),
        "dataset_dir": str(data_dir),
        "output_dir": str(run_dir),
    }
    config_path = run_dir / "train_config.json"
    config_path.write_text(json.dumps(config, indent=2))
    mlflow = tracking.client()
    with mlflow.start_run(run_name=f"pretrain-{context.run.run_id[:8]}") as run:
        mlflow.log_params({k: (",".join(v) if isinstance(v, list) else v) for k, v in config.items()})
        mlflow.set_tags(
            {
                "git_commit": git_commit(),
                "dagster_run_id": context.run.run_id,
                "stage": "pretraining",
                "run_folder": run_dir.name,
            }
        )
        log_dataset(mlflow, data_dir, "pretraining_data", data_version)
        invocation = launcher.run(context, str(config_path), env=trainer_env(tracking, run.info.run_id))
        history = metric_rows(invocation.get_custom_messages())
        reported = invocation.get_materialize_result()
        result = {k: v.value if hasattr(v, "value") else v for k, v in (reported.metadata or {}).items()}
        if not result.get("model_path"):
            raise RuntimeError(f"the pretraining run finished without reporting a model (result: {result})")
        mlflow.log_metrics(
            {k: float(v) for k, v in result.items() if k.startswith(("initial_val", "final_val")) and v is not None}
        )
        return history, result, run.info.run_id
