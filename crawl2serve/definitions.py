"""The one ``Definitions`` of crawl2serve (``[tool.dg.project]`` in pyproject.toml points ``dg`` here).

Nothing is listed by hand: every asset, asset check and job defined in ``crawl2serve.assets`` and every job,
schedule and sensor in ``crawl2serve.pipelines`` is found by walking those packages; the resources come from
``crawl2serve.resources.build_resources``.
"""

import os
import warnings

import dagster as dg

for _var, _val in {
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_var, _val)

from crawl2serve import assets, pipelines  # noqa: E402  (after the telemetry switches)
from crawl2serve.resources import build_resources  # noqa: E402

# The package loader is marked preview in Dagster 1.13; the stable ones (load_assets_/load_asset_checks_from_
# package_module) would leave jobs, schedules and sensors to a hand-kept list again.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)
    defs = dg.Definitions.merge(
        dg.load_definitions_from_package_module(assets),
        dg.load_definitions_from_package_module(pipelines),
        dg.Definitions(resources=build_resources()),
    )
