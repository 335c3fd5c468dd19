"""The one ``Definitions`` of crawl2serve: ``dagster dev -w workspace.yaml`` loads ``defs``."""

import os

import dagster as dg

for _var, _val in {"DAGSTER_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "true",
                   "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}.items():
    os.environ.setdefault(_var, _val)

from assets.corpus.cleaned import clean_documents  # noqa: E402
from assets.corpus.deduplicated import deduplicated_documents  # noqa: E402
from assets.corpus.extracted import extracted_pages  # noqa: E402
from assets.crawl.assets import raw_crawl  # noqa: E402
from assets.features.assets import document_features, feast_online_store, feast_registry  # noqa: E402
from assets.training.assets import base_model, tokenizer, training_dataset  # noqa: E402
from assets.training.lora import lora_adapter  # noqa: E402
from assets.release.assets import model_evaluation, registered_model, rollback_model  # noqa: E402
from assets.serving.assets import sglang_deployment  # noqa: E402
from assets.monitoring.assets import drift_report, inference_log  # noqa: E402
from pipelines.jobs import main_job, monitoring_job, retrain_job, serve_champion_job  # noqa: E402
from pipelines.schedules import schedules  # noqa: E402
from pipelines.sensors import sensors  # noqa: E402
from resources import build_resources  # noqa: E402

ASSETS = [
    raw_crawl, extracted_pages, clean_documents, deduplicated_documents,
    document_features, feast_registry, feast_online_store,
    tokenizer, base_model, training_dataset, lora_adapter,
    model_evaluation, registered_model, sglang_deployment,
    inference_log, drift_report,
]

defs = dg.Definitions(
    assets=ASSETS,
    jobs=[main_job, retrain_job, serve_champion_job, monitoring_job, rollback_model],
    schedules=schedules,
    sensors=sensors,
    resources=build_resources(),
)
