"""Jobs: ``main`` materializes the whole lineage built so far for one crawl partition."""

from pathlib import Path

import dagster as dg
import yaml

EMBEDDED_CONFIG_FILE = Path(__file__).with_name("embedded.yaml")
EMBEDDED_RUN_CONFIG = yaml.safe_load(EMBEDDED_CONFIG_FILE.read_text())

# batch_generations (serving group) runs a prompt set on demand, not as part of a (re)training run
ON_DEMAND = dg.AssetSelection.assets("batch_generations")
LINEAGE = dg.AssetSelection.groups("crawl", "corpus", "features", "training", "release", "serving") - ON_DEMAND
RETRAIN = dg.AssetSelection.groups("corpus", "features", "training", "release", "serving") - ON_DEMAND
# The retraining run reuses the day's crawl: the embedded config without the crawler's part.
RETRAIN_RUN_CONFIG = {"ops": {k: v for k, v in EMBEDDED_RUN_CONFIG["ops"].items() if k != "raw_crawl"}}

main_job = dg.define_asset_job(
    "main",
    selection=LINEAGE,
    config=EMBEDDED_RUN_CONFIG,
    description="The whole lineage built so far, for one crawl partition: crawl → corpus → features → "
    "training dataset → LoRA adapter → evaluation + gate → registered model → served behind the gateway.",
)

retrain_job = dg.define_asset_job(
    "retrain",
    selection=RETRAIN,
    config=RETRAIN_RUN_CONFIG,
    description="Retraining on a crawl partition already fetched (what the drift sensor requests): corpus → "
    "features → training → gate → registry → serving. Run `main` instead to re-crawl too.",
)

serve_champion_job = dg.define_asset_job(
    "serve_champion",
    selection=dg.AssetSelection.assets("sglang_deployment"),
    description="Serve the registry's current champion (what the new-champion sensor requests).",
)

monitoring_job = dg.define_asset_job(
    "monitoring",
    selection=dg.AssetSelection.groups("monitoring"),
    description="One hour of inference logs compacted, and its Evidently drift report.",
)

retrieval_job = dg.define_asset_job(
    "retrieval",
    selection=dg.AssetSelection.groups("retrieval"),
    description="A new retrieval index version over every crawl partition (incremental from the last one), its "
    "evaluation, and the switch the gateway's crawl2serve-rag model serves from (only if the evaluation passes).",
)
