"""The framework-free parts of the sharded corpus stages: path lists, tables combined from shard files (one row
group each), the IO manager's ``ShardedTable`` both ways, and the checks on a table less its text."""

import gzip
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from crawl2serve.assets.corpus.extracted import CONTRACT
from crawl2serve.assets.corpus.shards import staged_view
from crawl2serve.assets.crawl.ingest import ingest_sources
from crawl2serve.resources.io_manager import ParquetIOManager, ShardedTable, TableShard
from crawl2serve.resources.storage import DataRoot


def test_a_path_list_names_files_relative_to_its_folder_or_a_base(tmp_path):
    root = DataRoot(url=str(tmp_path))
    listing = "# Common Crawl style\ncrawl-data/a.warc.gz\n\n/abs/b.warc.gz\ns3://bucket/c.warc.gz\n"
    (tmp_path / "warc.paths.gz").write_bytes(gzip.compress(listing.encode()))
    (tmp_path / "wet.paths").write_text("x.wet.gz\n")
    (tmp_path / "d.warc.gz").write_bytes(b"")
    got = ingest_sources(root, [str(tmp_path / "warc.paths.gz"), str(tmp_path / "wet.paths"), str(tmp_path / "d.*")])
    assert got == [
        f"{tmp_path}/crawl-data/a.warc.gz",
        "/abs/b.warc.gz",
        "s3://bucket/c.warc.gz",
        f"{tmp_path}/x.wet.gz",
        f"{tmp_path}/d.warc.gz",
    ]
    assert ingest_sources(root, [str(tmp_path / "wet.paths")], base="/mirror/")[0] == "/mirror/x.wet.gz"
    (tmp_path / "empty.paths").write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.paths' lists no file"):
        ingest_sources(root, [str(tmp_path / "empty.paths")])
    with pytest.raises(FileNotFoundError, match="nothing matches"):
        ingest_sources(root, [str(tmp_path / "none-*.warc.gz")])


def parts(tmp_path: Path) -> tuple[DataRoot, list[str], list[pl.DataFrame]]:
    root = DataRoot(url=str(tmp_path))
    schema = {"id": pl.String, "n": pl.Int64}
    frames = [
        pl.DataFrame({"id": [f"{i}-{j}" for j in range(n)], "n": list(range(n))}, schema=schema)
        for i, n in enumerate([3, 0, 2])
    ]
    paths = [root.write_parquet(f, f"{tmp_path}/staged/{i}.parquet") for i, f in enumerate(frames)]
    return root, paths, frames


def test_parts_combine_into_one_table_with_a_row_group_each(tmp_path):
    root, paths, frames = parts(tmp_path)
    out = f"{tmp_path}/t/data.parquet"
    assert root.combine_parquet(paths, out, labels=["a", "b", "c"]) == [3, 0, 2]
    assert pl.read_parquet(out).equals(pl.concat(frames))
    assert root.parquet_parts(out) == [("a", 3, (0, 1)), ("b", 0, (1, 1)), ("c", 2, (1, 2))]
    assert root.read_parquet(out, row_groups=(1, 2)).equals(frames[2])
    assert root.read_parquet(out, row_groups=(1, 1)).height == 0
    assert root.parquet_null_counts(out, ["id", "n", "absent"]) == {"id": 0, "n": 0}
    other = root.write_parquet(pl.DataFrame({"id": ["x"]}), f"{tmp_path}/staged/other.parquet")
    with pytest.raises(ValueError, match="other.parquet: columns"):
        root.combine_parquet([paths[0], other], f"{tmp_path}/t/bad.parquet")
    assert not Path(f"{tmp_path}/t/bad.parquet").exists()  # never half-written
    assert root.parquet_parts(str(root.write_parquet(frames[0], f"{tmp_path}/whole.parquet"))) is None


def test_the_io_manager_commits_a_sharded_table_and_hands_its_shards_on(tmp_path):
    root, paths, frames = parts(tmp_path)

    @dg.asset
    def table() -> ShardedTable:
        return ShardedTable(
            shards=tuple(TableShard(source=f"src{i}", path=p) for i, p in enumerate(paths)),
            schema={"id": pl.String, "n": pl.Int64},
        )

    @dg.asset
    def per_shard(table: ShardedTable) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "source": [s.source for s in table.shards],
                "rows": [root.read_parquet(s.path, row_groups=s.row_groups).height for s in table.shards],
            }
        )

    @dg.asset
    def whole(table: pl.DataFrame) -> pl.DataFrame:
        return table

    result = dg.materialize([table, per_shard, whole], resources={"io_manager": ParquetIOManager(data_root=root)})
    assert result.success
    assert pl.read_parquet(tmp_path / "whole" / "_" / "data.parquet").equals(pl.concat(frames))
    shards = pl.read_parquet(tmp_path / "per_shard" / "_" / "data.parquet")
    assert shards.rows() == [("src0", 3), ("src1", 0), ("src2", 2)]
    assert not (tmp_path / "staged").exists(), "the staged files are committed and gone"
    meta = result.asset_materializations_for_node("table")[0].metadata
    assert meta["rows"].value == 5


def test_the_checks_on_a_table_less_its_text_match_the_checks_on_the_whole_table(tmp_path):
    from crawl2serve.assets.corpus.extracted import SCHEMA

    row = {c: None for c in SCHEMA} | {"doc_id": "a", "url": "u", "host": "h", "text": None, "language": "en"}
    df = pl.DataFrame([row, row | {"doc_id": "b", "url": "v", "text": "body"}], schema=SCHEMA)
    root = DataRoot(url=str(tmp_path))
    path = root.write_parquet(df, f"{tmp_path}/s/0.parquet")
    view, nulls = staged_view(root, ShardedTable((TableShard("x", path),), dict(SCHEMA)), CONTRACT.not_null)
    assert "text" not in view.columns and nulls["text"] == 1
    facts = {"failed": 0, "pages": 2}
    whole = CONTRACT.evaluate(df, "extracted_pages", facts)
    light = CONTRACT.evaluate(view, "extracted_pages", facts, schema=dict(SCHEMA), null_counts=nulls)
    assert [(c.check_name, c.passed, c.metadata) for c in light] == [
        (c.check_name, c.passed, c.metadata) for c in whole
    ]
    assert not next(c for c in light if c.check_name == "no_nulls").passed
