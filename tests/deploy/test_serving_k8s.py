"""``sglang_deployment`` in ``mode="k8s"``: the engine is applied as a Deployment + Service through the
Kubernetes client (a double here: no cluster exists) and reached at its Service URL; the rest of the roll-out
(anchor, deltas, routing) is the local code path."""

import http.server
import threading

import pytest

import crawl2serve.serving.k8s
from crawl2serve.assets.training.base_model import TinyLlamaSpec, build_tiny_llama, save_base, train_bpe_tokenizer
from crawl2serve.resources.feast_store import FeastStore
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.storage import DataRoot
from crawl2serve.serving.deploy import Release
from tests.deploy.test_manifests import FakeKubernetesApi
from tests.serving.conftest import make_adapter
from tests.support import PROSE


@pytest.fixture
def health_server():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


def test_the_engine_is_applied_to_kubernetes_and_reached_at_its_service(tmp_path, monkeypatch, health_server):
    api = FakeKubernetesApi()
    monkeypatch.setattr(crawl2serve.serving.k8s, "default_api_client", lambda: api)
    tok = train_bpe_tokenizer([PROSE] * 10, vocab_size=300)
    save_base(build_tiny_llama(TinyLlamaSpec(hidden_size=32, intermediate_size=64), tok), tok, tmp_path / "base")
    release = Release("3", make_adapter(str(tmp_path / "base"), tmp_path / "adapter", seed=1), str(tmp_path / "base"))
    data_root = DataRoot(url=str(tmp_path))
    engine = ServingEngine(
        data_root=data_root,
        feast_store=FeastStore(data_root=data_root),
        backend="sglang",
        mode="k8s",
        service_host="127.0.0.1",
        engine_port=health_server,
        image="sglang:test",
        data_mount=str(tmp_path),
        startup_timeout_s=30,
    )
    deployment = engine.deployment(log=lambda m: None)
    cfg = engine.engine_configs()[0]
    handle, seconds = deployment.ensure_engine(cfg, release, remote=engine.remote_launcher())
    assert seconds is not None and handle.pid is None and handle.url == f"http://127.0.0.1:{health_server}"
    created = {(kind, name) for kind, _, name in api.objects}
    assert created == {("deployment", "crawl2serve-sglang"), ("service", "crawl2serve-sglang")}
    args = api.objects[("deployment", "crawl2serve", "crawl2serve-sglang")]["spec"]["template"]["spec"]["containers"][
        0
    ]["command"]
    command = " ".join(args)
    assert f"--model-path {tmp_path}/sglang_deployment/_/models/v3-merged" in command
    assert "--enable-lora" in command and "base=" in command
    assert handle.models == {"3": "crawl2serve", "base": "crawl2serve:base"}
    again, seconds = deployment.ensure_engine(cfg, release, remote=engine.remote_launcher())
    assert seconds is None and again.url == handle.url, "a healthy engine is reused, not re-applied"
    assert engine.gateway_settings().engines[0].url == f"http://127.0.0.1:{health_server}"
