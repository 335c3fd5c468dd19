"""The gateway's /metrics scrapes when the gateway is started exactly as the serving asset starts it: by
``Deployment.ensure_gateway`` in a process that has imported Feast (which sets PROMETHEUS_MULTIPROC_DIR
process-wide) and then exits (Feast's exit hook removes its folder), as a Dagster run does."""

import subprocess
import sys
import textwrap

import httpx
import openai

from crawl2serve.serving.deploy import Deployment
from crawl2serve.serving.gateway.settings import FeastSettings
from tests.serving.helpers import free_port, metric, start_gateway


def test_metrics_of_a_gateway_started_like_the_serving_asset_starts_it(tmp_path, cpu_engine, tiny_model):
    # a gateway configuration like the asset's (Feast tiers on: the gateway imports Feast too)
    template = start_gateway(tmp_path / "template", [("primary", cpu_engine.url)], tiny_model)
    template.stop()
    settings = template.settings.model_copy(
        update={
            "port": free_port(),
            "feast": FeastSettings(repo_path="feature_repo", feast_dir=str(tmp_path / "feast")),
        }
    )
    state = tmp_path / "state"
    starter = textwrap.dedent(f"""
        import os, feast
        assert os.environ.get("PROMETHEUS_MULTIPROC_DIR"), "feast no longer sets PROMETHEUS_MULTIPROC_DIR"
        from crawl2serve.serving.deploy import Deployment
        from crawl2serve.serving.gateway.settings import GatewaySettings
        Deployment({str(state)!r}).ensure_gateway(GatewaySettings.model_validate_json({settings.model_dump_json()!r}))
    """)
    subprocess.run([sys.executable, "-c", starter], check=True, timeout=180)
    gateway = Deployment(str(state)).gateway_state()
    try:
        client = openai.OpenAI(base_url=gateway["url"] + "/v1", api_key=template.key, max_retries=0)
        client.completions.create(model="crawl2serve", prompt="The", max_tokens=2)
        scrape = httpx.get(gateway["url"] + "/metrics")
        assert scrape.status_code == 200 and scrape.text.strip(), "empty scrape"
        assert metric(gateway["url"], "c2s_gateway_requests_total", endpoint="completions", status="200") == 1
        assert "c2s_gateway_circuit_state" in scrape.text and "c2s_gateway_engine_healthy" in scrape.text
    finally:
        Deployment(str(state)).stop_all()
