"""FolderIOManager: a folder handle recorded by the asset that writes it, loaded by the assets that declare it."""

import dagster as dg
import pytest

from crawl2serve.resources.folders import FolderIOManager, ModelFolder, TokenizerFolder, asset_folder
from crawl2serve.resources.storage import DataRoot


def _resources(root):
    data_root = DataRoot(url=str(root))
    return {"data_root": data_root, "folder_io_manager": FolderIOManager(data_root=data_root)}


@dg.asset(io_manager_key="folder_io_manager")
def vocab(context: dg.AssetExecutionContext, data_root: DataRoot) -> dg.Output[TokenizerFolder]:
    folder = asset_folder(data_root, context)
    data_root.write_bytes(b"{}", f"{folder}/tokenizer.json")
    return dg.Output(
        TokenizerFolder(path=folder, version="v1", facts={"vocab_size": 3}), data_version=dg.DataVersion("v1")
    )


@dg.asset(io_manager_key="folder_io_manager")
def reader(vocab: TokenizerFolder) -> dg.Output[TokenizerFolder]:
    return dg.Output(vocab)  # someone else's folder: refused


@dg.asset
def wants_model(vocab: ModelFolder) -> None:
    pass


def test_a_handle_round_trips_through_a_copied_data_root(tmp_path):
    assert dg.materialize([vocab], resources=_resources(tmp_path / "a")).success
    (tmp_path / "a").rename(tmp_path / "b")
    seen = {}

    @dg.asset
    def consumer(vocab: TokenizerFolder) -> None:
        seen["vocab"] = vocab

    assert dg.materialize([vocab, consumer], selection=[consumer], resources=_resources(tmp_path / "b")).success
    handle = seen["vocab"]
    assert handle == TokenizerFolder(path=str(tmp_path / "b" / "vocab" / "_"), version="v1", facts={"vocab_size": 3})
    assert (tmp_path / "b" / "vocab" / "_" / "tokenizer.json").exists()


def test_a_handle_outside_the_assets_folder_is_refused(tmp_path):
    dg.materialize([vocab], resources=_resources(tmp_path))
    with pytest.raises(ValueError, match=r"reader: handle path .*vocab/_' is outside the asset's folder .*reader/_"):
        dg.materialize([vocab, reader], selection=[reader], resources=_resources(tmp_path))


def test_the_wrong_kind_and_a_missing_folder_name_the_asset(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab: not materialized yet"):
        dg.materialize([vocab, wants_model], selection=[wants_model], resources=_resources(tmp_path))
    dg.materialize([vocab], resources=_resources(tmp_path))
    with pytest.raises(TypeError, match="vocab: input wants a ModelFolder, the record holds a TokenizerFolder"):
        dg.materialize([vocab, wants_model], selection=[wants_model], resources=_resources(tmp_path))


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2026-01-01"))
def daily() -> None:
    pass


def test_an_unpartitioned_folder_in_a_partitioned_run_is_its_one_folder(tmp_path):
    """The ``main`` job runs for one crawl partition; the tokenizer and the models still have one folder each."""
    result = dg.materialize([daily, vocab], partition_key="2026-11-20", resources=_resources(tmp_path))
    assert result.success
    assert (tmp_path / "vocab" / "_" / "folder.json").exists() and not (tmp_path / "vocab" / "2026-11-20").exists()
