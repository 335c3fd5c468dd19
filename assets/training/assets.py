"""The training inputs: ``tokenizer``, ``base_model`` and the packed ``training_dataset``."""

import hashlib
import json
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from crawl2serve.assets.features.assets import feast_registry
from crawl2serve.assets.metadata import frame_table, stage_facts
from crawl2serve.assets.partitions import EVERY_PARTITION
from crawl2serve.resources.base_model import BaseModelSource
from crawl2serve.resources.feast_store import FeastStore
from crawl2serve.resources.folders import DatasetFolder, ModelFolder, TokenizerFolder, asset_folder
from crawl2serve.resources.storage import DataRoot
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.resources.training import TrainingLauncher

from .packing import PRETRAIN, assign_split, newest_partitions, pack_documents, select_documents, split_keys

FOLDER = "folder_io_manager"  # folder-shaped outputs: a handle recorded by resources/folders.py


@dg.asset(
    group_name="training",
    ins={"deduplicated_documents": EVERY_PARTITION},
    io_manager_key=FOLDER,
    kinds={"huggingface"},
    tags={"stage": "training"},
    **stage_facts("training"),
)
def tokenizer(
    context: dg.AssetExecutionContext,
    base_model_source: BaseModelSource,
    data_root: DataRoot,
    deduplicated_documents: pl.DataFrame,
) -> dg.Output[TokenizerFolder]:
    """The tokenizer of the base model, saved under ``{data_root}/tokenizer``.

    Embedded default: a byte-level BPE trained on every crawl's ``deduplicated_documents``. With a real
    base model: that model's own tokenizer, loaded (offline) and saved here unchanged.
    """
    from transformers import AutoTokenizer

    from .base_model import save_tokenizer, train_bpe_tokenizer

    target = data_root.local_path(asset_folder(data_root, context))
    if base_model_source.embedded:
        tok = train_bpe_tokenizer(deduplicated_documents["text"].to_list(), vocab_size=base_model_source.vocab_size)
        source = f"BPE trained on {deduplicated_documents.height} documents"
    else:
        tok = AutoTokenizer.from_pretrained(base_model_source.model, local_files_only=True)
        source = base_model_source.model
    version = save_tokenizer(tok, target)["version"]
    sample = deduplicated_documents["text"].head(50).to_list()
    n_tokens = sum(len(ids) for ids in tok(sample, add_special_tokens=False)["input_ids"])
    n_chars = sum(len(t) for t in sample)
    return dg.Output(
        TokenizerFolder(path=str(target), version=version, facts={"vocab_size": len(tok)}),
        data_version=dg.DataVersion(version),
        metadata={
            "path": dg.MetadataValue.path(str(target)),
            "source": source,
            "vocab_size": len(tok),
            "chars_per_token": round(n_chars / max(n_tokens, 1), 2),
            "version": version,
        },
    )


@dg.asset(
    group_name="training",
    ins={"deduplicated_documents": EVERY_PARTITION},
    io_manager_key=FOLDER,
    kinds={"pytorch", "huggingface"},
    tags={"stage": "training"},
    **stage_facts("training"),
)
def base_model(
    context: dg.AssetExecutionContext,
    base_model_source: BaseModelSource,
    training_launcher: TrainingLauncher,
    mlflow_tracking: MlflowTracking,
    data_root: DataRoot,
    tokenizer: TokenizerFolder,
    deduplicated_documents: pl.DataFrame,
) -> dg.Output[ModelFolder]:
    """The base causal LM that LoRA adapters fine-tune, saved under ``{data_root}/base_model``.

    Embedded default: a tiny Llama sized to the ``tokenizer``'s vocabulary, pretrained from scratch (every
    parameter, seeded) on ``pretrain_share`` of the pages of every crawl's ``deduplicated_documents`` by the
    project's trainer, launched through Pipes like ``lora_adapter`` and tracked live in MLflow
    (assets/training/pretrain.py); checkpointed, resumed after a kill, and reused while its inputs are
    unchanged; its generation config recommends ``repetition_penalty``. ``pretrain_steps=0`` keeps the random
    initialization. Real runs: a Hugging Face id or local path, loaded as is.
    """
    from transformers import AutoTokenizer

    from .base_model import build_tiny_llama, load_base, save_base
    from .pretrain import pretrain

    tok = AutoTokenizer.from_pretrained(data_root.local_path(tokenizer.path))
    pretraining = {}
    if base_model_source.embedded and base_model_source.pretrain_steps > 0:
        model, pretraining = pretrain(
            context, base_model_source, training_launcher, mlflow_tracking, data_root, deduplicated_documents, tok
        )
    elif base_model_source.embedded:
        model = build_tiny_llama(base_model_source.spec(), tok)
    else:
        model, _ = load_base(base_model_source.model)
    if base_model_source.embedded:  # its recommended decoding, applied by every engine unless a request overrides
        model.generation_config.repetition_penalty = base_model_source.repetition_penalty
    target = asset_folder(data_root, context)
    facts = save_base(model, tok, data_root.local_path(target))
    return dg.Output(
        ModelFolder(path=target, version=facts["version"], facts={"architecture": type(model).__name__}),
        data_version=dg.DataVersion(facts["version"]),
        metadata={
            "path": dg.MetadataValue.path(target),
            "model": base_model_source.model,
            "architecture": type(model).__name__,
            **{k: v for k, v in facts.items() if k not in ("path", "files")},
            **pretraining,
        },
    )


class DatasetConfig(dg.Config):
    """Selection, split and packing of the fine-tuning set: the newest crawl's high-quality documents, less the
    pages the embedded base model pretrains on (``BaseModelSource.pretrain_share``)."""

    newest_partitions: int | None = Field(
        1,
        description="Fine-tune on the documents of the newest this many crawl partitions (the run's own crawl is "
        "the newest); None: every partition.",
    )
    min_quality: float = Field(0.3, description="Documents below this quality score (as of `as_of`) are left out.")
    max_domain_rejection_share: float = Field(1.0, description="Leave out domains rejecting more than this share.")
    max_docs_per_domain: int | None = Field(None, description="Cap per domain (best quality first); None: no cap.")
    validation_share: float = Field(0.1, description="Share of split keys (URLs or domains) held out.")
    min_domains_for_domain_split: int = Field(20, description="Split by domain from this many domains, else by URL.")
    seq_len: int = Field(256, description="Tokens per packed sequence.")
    as_of: str | None = Field(None, description="Point in time (ISO 8601) of the features; default: now.")


def historical_features(store, docs: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Point-in-time features of every document as of ``as_of`` from Feast's offline store."""
    entity_df = (
        docs.select("doc_id", pl.col("host").alias("domain"))
        .unique("doc_id")
        .with_columns(event_timestamp=pl.lit(as_of))
        .to_pandas()
    )
    joined = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service("training_features")
    ).to_df()
    return pl.from_pandas(joined).with_columns(pl.col("quality_score").cast(pl.Float64))


@dg.asset(
    group_name="training",
    deps=[feast_registry],
    ins={"deduplicated_documents": EVERY_PARTITION, "duplicate_clusters": EVERY_PARTITION},
    io_manager_key=FOLDER,
    kinds={"feast", "parquet"},
    tags={"stage": "training"},
    **stage_facts("training"),
    check_specs=[
        dg.AssetCheckSpec(
            "no_null_keys",
            asset="training_dataset",
            blocking=True,
            description="Every selected document has a doc_id and a domain.",
        ),
        dg.AssetCheckSpec(
            "no_split_overlap",
            asset="training_dataset",
            blocking=True,
            description="No document, and no split key, is in both train and validation.",
        ),
        dg.AssetCheckSpec(
            "sequence_length",
            asset="training_dataset",
            blocking=True,
            description="Every packed sequence has exactly seq_len tokens.",
        ),
        dg.AssetCheckSpec(
            "both_splits_present",
            asset="training_dataset",
            blocking=True,
            description="Train and validation each hold at least one sequence.",
        ),
    ],
)
def training_dataset(
    context: dg.AssetExecutionContext,
    config: DatasetConfig,
    base_model_source: BaseModelSource,
    feast_store: FeastStore,
    data_root: DataRoot,
    deduplicated_documents: dict[str, pl.DataFrame],
    duplicate_clusters: dict[str, pl.DataFrame],
    tokenizer: TokenizerFolder,
):
    """Packed token sequences for training and validation, under ``{data_root}/training_dataset``.

    Comes from Feast ``get_historical_features`` (point-in-time correct, feature service
    ``training_features``) over an entity frame of the pages of the newest crawl partition(s)
    (``newest_partitions``) fetched by ``as_of``, each as kept (``duplicate_clusters`` names the re-crawls that
    global dedup kept on an earlier day): documents are selected by quality and per-domain limits,
    split train/validation by a stable hash of URL (or of domain when there are many), tokenized with
    ``tokenizer`` and packed into ``seq_len``-token sequences. With the embedded base model, the pages it
    pretrains on (``BaseModelSource.pretrain_share`` of the split keys, the same hash as ``base_model``'s) are
    left out of train, so the adapter learns what the base has not seen, as with a real base model.
    """
    from transformers import AutoTokenizer

    as_of = datetime.fromisoformat(config.as_of) if config.as_of else datetime.now(UTC)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    crawled = {k: f.filter(pl.col("fetch_time") <= as_of) for k, f in deduplicated_documents.items()}
    docs = newest_partitions(crawled, config.newest_partitions, earlier=duplicate_clusters)
    docs = docs.sort("fetch_time").unique("doc_id", keep="last")
    partitions = sorted(docs["crawl_partition"].unique().to_list())
    features = historical_features(feast_store.store(), docs, as_of)
    null_keys = int(features.select(pl.col("doc_id").is_null().sum() + pl.col("domain").is_null().sum()).item())
    eligible = features.filter(
        pl.col("quality_score").is_not_null()
        & (pl.col("rejection_share").fill_null(0.0) <= config.max_domain_rejection_share)
    ).rename({"domain": "host"})
    chosen = select_documents(eligible, config.min_quality, config.max_docs_per_domain)
    chosen = chosen.join(docs.select("doc_id", "url", "text"), on="doc_id", how="inner")
    key_kind, keys = split_keys(chosen["url"].to_list(), chosen["host"].to_list(), config.min_domains_for_domain_split)
    held = base_model_source.held_for_pretraining()
    chosen = chosen.with_columns(
        split=pl.Series(assign_split(keys, config.validation_share, pretrain_share=held)), split_key=pl.Series(keys)
    )
    pretrained_on = chosen.filter(pl.col("split") == PRETRAIN).height
    chosen = chosen.filter(pl.col("split") != PRETRAIN)

    tok = AutoTokenizer.from_pretrained(data_root.local_path(tokenizer.path))
    out_dir = asset_folder(data_root, context)
    stats, digest = {}, hashlib.sha256()
    for split in ("train", "validation"):
        part = chosen.filter(pl.col("split") == split).sort("doc_id")
        seqs, n_tokens = pack_documents(part["text"].to_list(), tok, config.seq_len)
        frame = (
            pl.DataFrame({"input_ids": seqs}, schema={"input_ids": pl.Array(pl.Int32, config.seq_len)})
            if len(seqs)
            else pl.DataFrame(schema={"input_ids": pl.Array(pl.Int32, config.seq_len)})
        )
        data_root.write_parquet(frame, f"{out_dir}/{split}.parquet")
        digest.update(np.ascontiguousarray(seqs).tobytes())
        stats[split] = {
            "documents": part.height,
            "tokens": int(n_tokens),
            "sequences": int(len(seqs)),
            "row_lengths": sorted({len(r) for r in seqs}) if len(seqs) else [],
        }
    version = digest.hexdigest()[:16]
    data_root.write_parquet(
        chosen.select("doc_id", "url", "host", "split", "split_key", "quality_score"), f"{out_dir}/documents.parquet"
    )
    manifest = {
        "version": version,
        "seq_len": config.seq_len,
        "as_of": as_of.isoformat(),
        "crawl_partitions": partitions,
        "split_key": key_kind,
        "splits": {k: {kk: vv for kk, vv in v.items() if kk != "row_lengths"} for k, v in stats.items()},
        "eos_token_id": tok.eos_token_id,
    }
    data_root.write_bytes(json.dumps(manifest, indent=2).encode(), f"{out_dir}/dataset.json")

    top = chosen.group_by("host").agg(pl.len().alias("docs")).sort("docs", descending=True).head(10)
    yield dg.Output(
        DatasetFolder(path=out_dir, version=version, facts={"seq_len": config.seq_len, "split_key": key_kind}),
        data_version=dg.DataVersion(version),
        metadata={
            "path": dg.MetadataValue.path(out_dir),
            "version": version,
            "split_key": key_kind,
            "seq_len": config.seq_len,
            "as_of": as_of.isoformat(),
            "crawl_partitions": dg.MetadataValue.json(partitions),
            "documents_eligible": features.height,
            "documents_left_to_pretraining": pretrained_on,
            **{f"{s}_{k}": v for s, d in stats.items() for k, v in d.items() if k != "row_lengths"},
            "top_domains": frame_table(top.rename({"host": "domain", "docs": "documents"})),
        },
    )
    train_keys = set(chosen.filter(pl.col("split") == "train")["split_key"])
    val = chosen.filter(pl.col("split") == "validation")
    overlap = len(train_keys & set(val["split_key"]))
    yield dg.AssetCheckResult(check_name="no_null_keys", passed=null_keys == 0, metadata={"null_keys": null_keys})
    yield dg.AssetCheckResult(
        check_name="no_split_overlap", passed=overlap == 0, metadata={"overlapping_keys": overlap}
    )
    lengths = sorted({n for s in stats.values() for n in s["row_lengths"]})
    yield dg.AssetCheckResult(
        check_name="sequence_length",
        passed=lengths in ([config.seq_len], []),
        metadata={"row_lengths": dg.MetadataValue.json(lengths)},
    )
    yield dg.AssetCheckResult(
        check_name="both_splits_present",
        passed=all(s["sequences"] > 0 for s in stats.values()),
        metadata={k: v["sequences"] for k, v in stats.items()},
    )
