"""The GPU pods' tolerations have one home, serving.k8s.GPU_TOLERATIONS: the engine Deployment, the trainer pod,
the GPU step pods and every static manifest under deploy/ (checked here) carry exactly it."""

import ast
from collections.abc import Iterable
from typing import Any

from k8s_checks import DEPLOY, REPO, load_docs

from crawl2serve.serving.k8s import GPU_TOLERATIONS, sglang_manifests

HOME = REPO / "serving" / "k8s.py"
GPU_KEY = GPU_TOLERATIONS[0]["key"]


def _tolerations(obj: Any, path: str = "") -> Iterable[tuple[str, list]]:
    """Every ``tolerations`` list in a YAML document, with where it is."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "tolerations" and isinstance(value, list):
                yield f"{path}/{key}", value
            else:
                yield from _tolerations(value, f"{path}/{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _tolerations(value, f"{path}/{i}")


def test_static_manifests_tolerate_gpus_as_the_code_does():
    """A manifest or Helm value under deploy/ that must stay static (kubectl apply -f, helm -f) and tolerates the
    GPU taint carries GPU_TOLERATIONS exactly (the API's spelling of these keys is the same as the client's)."""
    files = sorted(p for p in DEPLOY.rglob("*.y*ml") if p.is_file())
    assert files, "no manifests under deploy/"
    seen = []
    for path in files:
        for doc in load_docs(path):
            for where, tolerations in _tolerations(doc):
                if any(isinstance(t, dict) and t.get("key") == GPU_KEY for t in tolerations):
                    seen.append(path.name)
                    assert tolerations == [dict(t) for t in GPU_TOLERATIONS], f"{path.relative_to(REPO)}{where}"
    # Today no static manifest runs on a GPU (the gateway and Redis are CPU pods; GPU pods are rendered by code).
    assert seen == []


def test_every_gpu_pod_the_code_renders_carries_the_one_constant(production_env):
    from crawl2serve.pipelines.k8s import GPU_POD_CONFIG, k8s_executor_config
    from crawl2serve.resources import build_resources
    from crawl2serve.resources.serving import ServingEngine
    from crawl2serve.resources.training import TrainingLauncher

    expected = [dict(t) for t in GPU_TOLERATIONS]
    resources = build_resources("production")
    assert resources["training_launcher"].pod_spec()["tolerations"] == expected
    (deployment, _service) = resources["serving_engine"].k8s_manifests("/data/sglang_deployment/_/models/v1-merged")
    assert deployment["spec"]["template"]["spec"]["tolerations"] == expected
    assert TrainingLauncher.model_fields["tolerations"].default_factory() == expected
    assert ServingEngine.model_fields["tolerations"].default_factory() == expected
    assert GPU_POD_CONFIG["pod_spec_config"]["tolerations"] == expected
    per_step = k8s_executor_config(trainer_in_step_pod=True)["per_step_k8s_config"]
    for op in ("model_evaluation", "lora_adapter"):
        assert per_step[op]["pod_spec_config"]["tolerations"] == expected
    (engine, _) = sglang_manifests(name="e", namespace="n", image="i", model_path="/m")
    assert engine["spec"]["template"]["spec"]["tolerations"] == expected


def test_no_second_gpu_toleration_in_the_code():
    """Only serving/k8s.py spells the GPU toleration out (main had it in four modules)."""
    found = []
    for folder in ("assets", "pipelines", "resources", "serving", "crawl2serve"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == HOME:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Dict) and any(
                    isinstance(k, ast.Constant)
                    and k.value == "key"
                    and isinstance(v, ast.Constant)
                    and v.value == GPU_KEY
                    for k, v in zip(node.keys, node.values)
                ):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []


def test_deploy_readme_names_the_taint_tolerated():
    toleration = GPU_TOLERATIONS[0]
    assert f"`{toleration['key']}:{toleration['effect']}`" in (DEPLOY / "README.md").read_text()
