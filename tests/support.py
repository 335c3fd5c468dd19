"""Shared test helpers: resources swapped by configuration, run config and readers for the real lineage."""

import contextlib
import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from crawl2serve.assets.corpus.cleaned import clean_documents
from crawl2serve.assets.corpus.deduplicated import deduplicated_documents
from crawl2serve.assets.corpus.extracted import extracted_pages
from crawl2serve.assets.crawl.assets import raw_crawl
from crawl2serve.assets.features.assets import document_features, feast_online_store, feast_registry
from crawl2serve.assets.training.assets import base_model, tokenizer, training_dataset
from crawl2serve.pipelines.jobs import EMBEDDED_RUN_CONFIG
from crawl2serve.resources.base_model import BaseModelSource
from crawl2serve.resources.corpus_executor import CorpusExecutor
from crawl2serve.resources.crawl_target import CrawlTarget
from crawl2serve.resources.feast_store import FeastStore
from crawl2serve.resources.folders import FolderIOManager
from crawl2serve.resources.io_manager import ParquetIOManager
from crawl2serve.resources.storage import DataRoot
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.resources.training import TrainingLauncher

REPO = Path(__file__).resolve().parents[1]
PARTITION = "2026-11-20"
CORPUS = [raw_crawl, extracted_pages, clean_documents, deduplicated_documents]


def resources(root: Path, executor: CorpusExecutor | None = None, **target) -> dict:
    """The corpus stages' resources under ``root``; their shards run in process unless ``executor`` says else
    (a test on Ray passes ``CorpusExecutor()`` and the ``ray_session`` fixture)."""
    data_root = DataRoot(url=str(root))
    return {
        "data_root": data_root,
        "io_manager": ParquetIOManager(data_root=data_root),
        "folder_io_manager": FolderIOManager(data_root=data_root),
        "crawl_target": CrawlTarget(data_root=data_root, mode="pydoc", per_host_delay_s=0.0, **target),
        "corpus_executor": executor or CorpusExecutor(backend="in_process"),
    }


def run_config(max_pages: int, **crawl) -> dict:
    return {
        "ops": {
            "raw_crawl": {"config": {"max_pages": max_pages, **crawl}},
            "clean_documents": {"config": {"profile": "documentation"}},
        }
    }


def load(root: Path, asset: str) -> pl.DataFrame:
    return pl.read_parquet(root / asset / PARTITION / "data.parquet")


def records(value) -> list[dict]:
    """The rows of a typed-table metadata value (``dg.MetadataValue.table``) as dicts."""
    assert value.__class__.__name__ == "TableMetadataValue", f"not a typed table: {value!r}"
    return [dict(r.data) for r in value.records]


def facts(value) -> dict:
    """A two-column facts table (``assets.metadata.facts_table``) as {fact: value}."""
    return {r["fact"]: r["value"] for r in records(value)}


def assert_column_schemas(root: Path, result) -> set[str]:
    """Every materialization that wrote a Parquet table through the IO manager carries a column schema whose
    names (in order) and types are the file's, each column described; returns those assets' names."""
    from crawl2serve.assets.metadata import COLUMN_SCHEMA, polars_type

    tables = set()
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        path = root / mat.asset_key.to_user_string() / (mat.partition or "_") / "data.parquet"
        if not path.exists():
            continue
        schema = pl.read_parquet_schema(path)
        columns = mat.metadata[COLUMN_SCHEMA].schema.columns
        assert [c.name for c in columns] == list(schema), mat.asset_key
        assert [c.type for c in columns] == [polars_type(t) for t in schema.values()], mat.asset_key
        assert all(c.description for c in columns), mat.asset_key
        tables.add(mat.asset_key.to_user_string())
    return tables


def checks(result) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


DOWNSTREAM = [document_features, feast_registry, feast_online_store, tokenizer, base_model, training_dataset]
SEQ_LEN = 128
# The embedded run's lora_adapter values (pipelines/embedded.yaml); a test's overrides go on top.
EMBEDDED_LORA = EMBEDDED_RUN_CONFIG["ops"]["lora_adapter"]["config"]
PRETRAIN_STEPS = 4  # a handful: the tests check the wiring; bench/bench_pretrain.py measures what pretraining buys
# A base pretrained a handful of steps still loops (" the the the"): lineage tests that are not about the
# degeneracy gate let such outputs through; tests/release/test_smoke_gate.py tests the gate itself.
UNDERTRAINED_DEGENERATE_SHARE = 1.0


def all_resources(root: Path) -> dict:
    res = resources(root)
    return {
        **res,
        "feast_store": FeastStore(data_root=res["data_root"]),
        # A gentle learning rate: the LoRA and release tests need a base that 10-20 LoRA steps still improve.
        "base_model_source": BaseModelSource(
            vocab_size=1024, pretrain_steps=PRETRAIN_STEPS, pretrain_seq_len=SEQ_LEN, pretrain_learning_rate=1e-3
        ),
        "training_launcher": TrainingLauncher(mode="local", nproc_per_node=1),
        "mlflow_tracking": MlflowTracking(data_root=res["data_root"]),  # base_model's pretraining run
    }


PROSE = (
    "The committee reviewed the annual report and agreed that the library should extend its opening hours. "
    "Several members noted that students had asked for quiet rooms during the examination period. "
    "The treasurer explained that the budget would allow two more staff members next spring. "
    "Everyone agreed to publish the minutes on the website before the end of the month. "
    "A final vote approved the plan, and the chair thanked the volunteers for their careful work. "
)


def warc_bytes(records: list[tuple[str, str, bytes]]) -> bytes:
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    for url, kind, body in records:
        if kind == "response":
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            rec = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers)
        else:
            rec = writer.create_warc_record(
                url, "conversion", payload=io.BytesIO(body), warc_headers_dict={"Content-Type": "text/plain"}
            )
        writer.write_record(rec)
    return out.getvalue()


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict]]]:
    """A real HTTP server on loopback recording the JSON body of every POST (an alert channel's webhook):
    yields ``(its URL, the bodies received so far)``; stopped on exit."""
    received: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts", received
    finally:
        server.shutdown()
        server.server_close()
