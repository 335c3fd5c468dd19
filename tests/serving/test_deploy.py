"""Blue/green and canary roll-outs on a real CPU engine, through serving.deploy (framework-free)."""

import sys
import time

import httpx
import openai
import pytest

from crawl2serve.serving.deploy import Deployment, EngineConfig, Release
from crawl2serve.serving.engines import alive
from crawl2serve.serving.gateway.auth import KeyStore
from crawl2serve.serving.gateway.logstore import read_rows
from crawl2serve.serving.gateway.settings import EngineSettings, GatewaySettings
from tests.serving.conftest import make_adapter
from tests.serving.helpers import free_port


@pytest.fixture(scope="module")
def rollout(tmp_path_factory, tiny_base):
    tmp = tmp_path_factory.mktemp("rollout")
    v1 = Release("1", make_adapter(tiny_base, tmp / "a1", seed=1), tiny_base)
    v2 = Release("2", make_adapter(tiny_base, tmp / "a2", seed=2), tiny_base)
    deployment = Deployment(str(tmp / "state"), log=lambda m: None)
    cfg = EngineConfig(name="primary", backend="cpu", python=sys.executable, port=free_port(), startup_timeout_s=120)
    yield deployment, cfg, v1, v2
    deployment.stop_all()


def test_first_release_starts_the_engine_and_routes_everything(rollout):
    deployment, cfg, v1, _ = rollout
    handle, started = deployment.ensure_engine(cfg, v1)
    assert started is not None and alive(handle.pid) and handle.version.startswith("transformers ")
    deployment.add_version(handle, v1)
    smoke = deployment.smoke(handle, ["1", "base"])
    assert smoke["1"]["completion_tokens"] == smoke["base"]["completion_tokens"] == 8
    assert smoke["1"]["text"] != smoke["base"]["text"], "the adapter changes what the model says"
    table = deployment.route("1", [handle], canary_share=0.0)
    assert (table["stable"], table["canary"], set(table["versions"])) == ("1", None, {"1", "base"})
    # the gateway counts prompt tokens with each version's tokenizer: the CPU engine's merged folders
    assert table["tokenizers"] == {v: table["versions"][v]["primary"] for v in ("1", "base")}


def test_a_new_champion_is_loaded_beside_and_canaried_then_switched(rollout):
    deployment, cfg, v1, v2 = rollout
    handle, started = deployment.ensure_engine(cfg, v1)
    assert started is None, "the running engine is reused"
    pid = handle.pid
    deployment.add_version(handle, v2)
    assert deployment.smoke(handle, ["2"])["2"]["completion_tokens"] == 8
    table = deployment.route("2", [handle], canary_share=0.5)
    assert (table["stable"], table["canary"], table["canary_share"]) == ("1", "2", 0.5)
    table = deployment.route("2", [handle], canary_share=0.0)
    assert (table["stable"], table["canary"], table["previous"]) == ("2", None, "1")
    assert set(table["versions"]) == {"1", "2", "base"}, "earlier versions stay loaded for rollback"
    assert deployment.handles()["primary"].pid == pid, "no restart: blue/green on the running engine"


def test_the_gateway_splits_canary_traffic(rollout):
    deployment, cfg, v1, v2 = rollout
    handle, _ = deployment.ensure_engine(cfg, v1)
    deployment.route("1", [handle], 0.0)
    deployment.route("2", [handle], canary_share=0.3)
    state = deployment.dir
    settings = GatewaySettings(
        port=free_port(),
        routing_file=deployment.routing_file,
        keys_file=str(state / "api_keys.json"),
        log_dir=str(state / "spool"),
        engines=[EngineSettings(name="primary", url=cfg.url)],
    )
    gateway, reused = deployment.ensure_gateway(settings)
    assert not reused and deployment.ensure_gateway(settings)[1], "same settings: the running gateway is kept"
    key, _ = KeyStore.load(settings.keys_file).add("acme", "enterprise")
    time.sleep(1.1)  # the running gateway re-reads its keys file within a second
    client = openai.OpenAI(base_url=gateway["url"] + "/v1", api_key=key, max_retries=0)
    for _ in range(60):
        client.completions.create(model="crawl2serve", prompt="The", max_tokens=1)
    time.sleep(0.3)
    rows = read_rows(settings.log_dir)[0]
    share = sum(r["route"] == "canary" for r in rows) / len(rows)
    assert 0.1 < share < 0.55, share
    assert {r["model_version"] for r in rows if r["route"] == "canary"} == {"2"}
    pinned = client.completions.create(model="crawl2serve@1", prompt="The", max_tokens=1)
    assert pinned.model == "crawl2serve@1"
    assert httpx.get(gateway["url"] + "/ready").json()["canary"] == "2"
