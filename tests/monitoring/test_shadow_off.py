"""Shadow traffic off (the embedded default): the hourly ``shadow_report`` has nothing to judge, and says so
without a warning. The first ``./dev.sh main`` summary showed "1 warned (shadow_report:challenger_passes_shadow)"
for a feature nobody had switched on."""

import dagster as dg
from monitoring_traffic import english, log_frame

from crawl2serve.assets.monitoring.assets import inference_log
from crawl2serve.assets.monitoring.comparisons import NO_SHADOW, SHADOW_CHECK, shadow_report
from crawl2serve.resources.feast_store import FeastStore
from crawl2serve.resources.io_manager import ParquetIOManager
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.storage import DataRoot

HOUR = "2026-11-23-06:00"


def test_an_hour_without_mirrored_requests_passes_the_shadow_check(tmp_path):
    import random

    rng = random.Random(3)
    log = tmp_path / "inference_log" / HOUR / "data.parquet"
    log.parent.mkdir(parents=True)
    log_frame([english(rng) for _ in range(12)]).write_parquet(log)  # the clients' rows only
    data_root = DataRoot(url=str(tmp_path))
    result = dg.materialize(
        [inference_log, shadow_report],
        partition_key=HOUR,
        resources={
            "io_manager": ParquetIOManager(data_root=data_root),
            "serving_engine": ServingEngine(
                data_root=data_root, feast_store=FeastStore(data_root=data_root), feast_tiers=False
            ),
        },
        selection=[shadow_report],
    )
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == SHADOW_CHECK and check.passed
    assert result.asset_materializations_for_node("shadow_report")[0].metadata["verdict"].value == NO_SHADOW
