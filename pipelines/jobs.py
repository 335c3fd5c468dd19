"""Jobs: ``main`` materializes the whole lineage built so far for one crawl partition."""

from pathlib import Path

import dagster as dg
import yaml

from assets.partitions import crawl_partitions

EMBEDDED_CONFIG_FILE = Path(__file__).with_name("embedded.yaml")
EMBEDDED_RUN_CONFIG = yaml.safe_load(EMBEDDED_CONFIG_FILE.read_text())

LINEAGE = dg.AssetSelection.groups("crawl", "corpus", "features", "training", "release", "serving")

main_job = dg.define_asset_job(
    "main",
    selection=LINEAGE,
    partitions_def=crawl_partitions,
    config=EMBEDDED_RUN_CONFIG,
    description="The whole lineage built so far, for one crawl partition: crawl → corpus → features → "
    "training dataset → LoRA adapter → evaluation + gate → registered model → served behind the gateway.",
)
