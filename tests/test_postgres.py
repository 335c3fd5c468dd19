"""Production configurations against the real PostgreSQL on 127.0.0.1:5432: Dagster's run/event storage and
MLflow's tracking store + model registry. Skipped (with the reason) where no PostgreSQL answers."""

import socket
import uuid

import dagster as dg
import pytest
from support import PARTITION, PROSE, resources, warc_bytes

from crawl2serve.assets.crawl.assets import raw_crawl
from crawl2serve.assets.release.registry import CHAMPION, MODEL_NAME, rollback
from crawl2serve.resources.storage import DataRoot
from crawl2serve.resources.tracking import MlflowTracking

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"


def _postgres_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=0.5):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _postgres_up(), reason="no PostgreSQL on 127.0.0.1:5432 (CI has one)")


@pytest.fixture
def database():
    """A fresh, empty database for one test, dropped afterwards."""
    import psycopg2

    name = f"c2s_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host=HOST, port=PORT, user=USER, dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_dagster_run_and_event_storage_on_postgres(database, tmp_path):
    (tmp_path / "in").mkdir()
    html = f"<html><head><title>T</title></head><body><p>{PROSE}</p></body></html>".encode()
    (tmp_path / "in" / "a.warc.gz").write_bytes(warc_bytes([("https://example.org/a", "response", html)]))
    # SQLAlchemy 2.1 made psycopg 3 the default driver for postgresql://, and dagster-postgres 0.29's
    # `NOTIFY run_events, %(id)s` fails under it (server-side parameter binding): name psycopg2 explicitly.
    url = f"postgresql+psycopg2://{USER}@{HOST}:{PORT}/{database}"
    overrides = {"storage": {"postgres": {"postgres_url": url}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = dg.materialize(
            [raw_crawl],
            resources=resources(tmp_path / "data"),
            partition_key=PARTITION,
            instance=instance,
            run_config={"ops": {"raw_crawl": {"config": {"ingest_paths": [str(tmp_path / "in" / "*.gz")]}}}},
        )
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("raw_crawl"))
        assert event.asset_materialization.partition == PARTITION
        assert event.asset_materialization.metadata["stored_pages"].value == 1
        assert instance.get_run_by_id(result.run_id).is_success


def test_mlflow_tracking_and_registry_on_postgres(database, tmp_path):
    tracking = MlflowTracking(
        data_root=DataRoot(url=str(tmp_path)), tracking_uri=f"postgresql+psycopg2://{USER}@{HOST}:{PORT}/{database}"
    )
    mlflow = tracking.client()
    client = mlflow.MlflowClient()
    (tmp_path / "artifact.txt").write_text("adapter stand-in")
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 1.5, step=1)
        mlflow.log_metric("loss", 1.2, step=2)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [1.5, 1.2]

    client.create_registered_model(MODEL_NAME)
    v1 = client.create_model_version(MODEL_NAME, source=str(tmp_path), run_id=run.info.run_id)
    v2 = client.create_model_version(
        MODEL_NAME, source=str(tmp_path), run_id=run.info.run_id, tags={"previous_champion": str(v1.version)}
    )
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, v2.version)
    assert rollback(client) == (str(v2.version), str(v1.version))
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(v1.version)
