"""Folder-shaped outputs as typed handles, and the IO manager that records and loads them.

A tokenizer, a model, a packed dataset, an adapter or an evaluation report is a folder of files, not a table.
The asset that writes one returns a handle (a small frozen dataclass: the folder, its data version, a few facts
its consumers need); ``FolderIOManager`` records the handle beside the files, at
``{data_root}/{asset}/{partition}/folder.json``, and loads it for every asset that declares the folder as an
input. So a consumer gets the path from its declared input, never by naming another asset's folder, and the
asset graph shows every edge the data takes.
"""

import json
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from .storage import DataRoot

RECORD = "folder.json"


@dataclass(frozen=True)
class Folder:
    """An asset's folder (or a folder inside it): where it is, its data version, and facts about it."""

    path: str
    version: str
    facts: dict[str, Any] = field(default_factory=dict)

    def file(self, *names: str) -> str:
        return "/".join([self.path, *names])


@dataclass(frozen=True)
class TokenizerFolder(Folder):
    """A tokenizer saved with ``save_pretrained`` (``AutoTokenizer.from_pretrained(path)`` loads it)."""


@dataclass(frozen=True)
class ModelFolder(Folder):
    """A causal LM with its tokenizer, saved with ``save_pretrained``."""


@dataclass(frozen=True)
class DatasetFolder(Folder):
    """Packed token sequences: ``train.parquet``, ``validation.parquet``, ``documents.parquet``, ``dataset.json``."""


@dataclass(frozen=True)
class AdapterFolder(Folder):
    """A peft LoRA adapter (``adapter_model.safetensors`` + ``adapter_config.json``)."""


@dataclass(frozen=True)
class ReportFolder(Folder):
    """An evaluation's report (``report.json``); the facts hold its summary."""


@dataclass(frozen=True)
class IndexFolder(Folder):
    """A retrieval index version (assets/retrieval/index.py: chunks, BM25, embedder, vectors); facts: its
    ``version.json``."""


KINDS = {
    kind.__name__: kind
    for kind in (TokenizerFolder, ModelFolder, DatasetFolder, AdapterFolder, ReportFolder, IndexFolder)
}


def asset_folder(data_root: DataRoot, context: dg.AssetExecutionContext) -> str:
    """The running asset's own folder under the data root (for its partition, if it has partitions: an unpartitioned
    asset in a run for one partition still writes its one folder)."""
    partition = context.partition_key if context.assets_def.partitions_def is not None else None
    return data_root.path("/".join(context.asset_key.path), partition)


class FolderIOManager(dg.ConfigurableIOManager):
    """Handles of folder-shaped assets, recorded at ``{data_root}/{asset}/{partition}/folder.json``.

    The record holds the handle's path relative to the asset's folder, so a copied data root stays valid.
    """

    data_root: dg.ResourceDependency[DataRoot]

    def _folder(self, asset_key: dg.AssetKey, partition: str | None) -> str:
        return self.data_root.path("/".join(asset_key.path), partition)

    def record(self, asset_key: dg.AssetKey, partition: str | None, handle: Folder) -> str:
        """Write ``handle``'s record for ``asset_key`` (and partition); the path of the record."""
        folder = self._folder(asset_key, partition)
        if handle.path != folder and not handle.path.startswith(folder + "/"):
            raise ValueError(
                f"{asset_key.to_user_string()}: handle path {handle.path!r} is outside the asset's folder {folder!r}"
            )
        body = {
            "kind": type(handle).__name__,
            "path": handle.path[len(folder) + 1 :],
            "version": handle.version,
            "facts": handle.facts,
        }
        return self.data_root.write_bytes(json.dumps(body, indent=2, default=str).encode(), f"{folder}/{RECORD}")

    def handle_output(self, context: dg.OutputContext, obj: Folder | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, Folder):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a Folder handle, got {type(obj)}")
        partition = context.partition_key if context.has_asset_partitions else None
        self.record(context.asset_key, partition, obj)

    def load_input(self, context: dg.InputContext) -> Folder:
        key = context.asset_key
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        if len(partitions) != 1:
            raise ValueError(f"{key.to_user_string()}: a folder input maps to one partition, got {len(partitions)}")
        folder = self._folder(key, partitions[0])
        path = f"{folder}/{RECORD}"
        if not self.data_root.exists(path):
            raise FileNotFoundError(f"{key.to_user_string()}: not materialized yet (no {path})")
        with self.data_root.open(path) as f:
            body = json.loads(f.read())
        kind = KINDS.get(body.get("kind"))
        if kind is None:
            raise ValueError(f"{path}: unknown folder kind {body.get('kind')!r} (known: {sorted(KINDS)})")
        expected = getattr(context.dagster_type, "typing_type", None)
        if isinstance(expected, type) and issubclass(expected, Folder) and not issubclass(kind, expected):
            raise TypeError(
                f"{key.to_user_string()}: input wants a {expected.__name__}, the record holds a {kind.__name__}"
            )
        return kind(path="/".join(p for p in (folder, body["path"]) if p), version=body["version"], facts=body["facts"])
