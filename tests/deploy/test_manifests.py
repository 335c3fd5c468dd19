"""Everything crawl2serve sends to Kubernetes, validated offline: deploy/k8s/, the Helm values, the SGLang
manifests of serving/k8s.py, the trainer pod of TrainingLauncher(mode="k8s"), the per-step dagster-k8s/config,
and the production environment (resources, Definitions, the image's entry point). No cluster is contacted: the
Kubernetes API is a double, and the tests fail if anything tries to load a kubeconfig or call an API server."""

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import dagster as dg
import kubernetes
import pytest
import yaml
from k8s_checks import (
    CHART_ENUMS,
    DEPLOY,
    HELM_VALUES,
    K8S_DIR,
    KUBERNETES_VERSIONS,
    PULL_POLICIES,
    REPO,
    ApiResponse,
    api_dict,
    configmap_env,
    k8s_docs,
    load_docs,
    pod,
    pod_specs,
    refuse_clusters,
    unknown_chart_keys,
    validate,
)
from kubernetes.client.exceptions import ApiException

from crawl2serve.resources import PRODUCTION_ENV
from crawl2serve.serving.engines import sglang_command
from crawl2serve.serving.k8s import apply_manifests, service_url, sglang_manifests

DOCS = k8s_docs()
DAGSTER_VERSION = importlib.metadata.version("dagster")


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
    """Any attempt to reach a cluster fails the test."""
    refuse_clusters(monkeypatch)


def test_validator_is_strict_and_offline():
    """The validator itself: an unknown field and a bad quantity fail (guards against a silently lax check)."""
    good = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"memory": "1Gi"}}}]},
    }
    validate(good)
    unknown = json.loads(json.dumps(good))
    unknown["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(AssertionError, match="imagePullPolicyy"):
        validate(unknown)
    bad_quantity = json.loads(json.dumps(good))
    bad_quantity["spec"]["containers"][0]["resources"]["limits"]["memory"] = "lots"
    with pytest.raises(AssertionError, match="not a Kubernetes quantity"):
        validate(bad_quantity)


# -- deploy/k8s/ ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,doc", DOCS, ids=[n for n, _ in DOCS])
def test_k8s_yaml_validates(name, doc):
    validate(doc)
    assert doc["metadata"].get("namespace", "crawl2serve") == "crawl2serve" or doc["kind"] == "Namespace"
    assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "crawl2serve"


def test_k8s_yaml_references_resolve():
    """ConfigMaps, claims and service accounts the pods name exist (the Secret is made by hand: README), each
    Service selects a workload's pods and targets a port they declare, and probes use declared ports."""
    by_kind: dict[str, dict[str, dict]] = {}
    for _, doc in DOCS:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    assert sorted(by_kind["Namespace"]) == ["crawl2serve"]
    assert sorted(by_kind["Deployment"]) == ["crawl2serve-gateway", "redis"]
    workloads = [d for _, d in DOCS if list(pod_specs(d))]
    for doc in workloads:
        spec = next(iter(pod_specs(doc)))
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in by_kind["ConfigMap"]
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"]
        for container in spec["containers"]:
            ports = {p.get("name") for p in container.get("ports", [])} | {
                p["containerPort"] for p in container.get("ports", [])
            }
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in by_kind["ConfigMap"]
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                action = container.get(probe, {}).get("httpGet") or container.get(probe, {}).get("tcpSocket")
                if action:
                    assert action["port"] in ports, f"{doc['metadata']['name']} {probe} port {action['port']}"
        template_labels = doc["spec"]["template"]["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    for service in by_kind["Service"].values():
        targets = [
            d
            for d in workloads
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert targets, f"Service {service['metadata']['name']} selects no pods"
        declared = {p.get("name") for c in next(iter(pod_specs(targets[0])))["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in declared
    binding = by_kind["RoleBinding"]["crawl2serve-serving"]
    assert binding["roleRef"]["name"] in by_kind["Role"]
    helm = yaml.safe_load(HELM_VALUES.read_text())
    assert binding["subjects"][0]["name"] == helm["global"]["serviceAccountName"]


def test_gateway_deployment():
    docs = {d["kind"]: d for d in load_docs(K8S_DIR / "50-gateway.yaml")}
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    meta = deployment["spec"]["template"]["metadata"]
    assert meta["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8700",
        "prometheus.io/path": "/metrics",
    }
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [
        "python",
        "-m",
        "crawl2serve.serving",
        "gateway",
        "--config",
        "/etc/crawl2serve/gateway.yaml",
    ]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/etc/crawl2serve"] == "config"
    # `python -m crawl2serve.serving gateway` exists and takes --config
    assert importlib.util.find_spec("crawl2serve.serving.__main__") is not None
    assert "--config" in (REPO / "serving" / "__main__.py").read_text()


def test_gateway_config_matches_the_production_resources(production_env):
    """The ConfigMap's gateway.yaml is valid GatewaySettings (unknown keys refused) and points where the
    production resources write: routing table, keys, log spool, Feast, Redis, and the SGLang Service."""
    from crawl2serve.resources import build_resources
    from crawl2serve.serving.gateway.settings import GatewaySettings

    config = next(d for d in load_docs(K8S_DIR / "50-gateway.yaml") if d["kind"] == "ConfigMap")
    settings = GatewaySettings.model_validate(yaml.safe_load(config["data"]["gateway.yaml"]))
    engine = build_resources("production")["serving_engine"]
    expected = engine.gateway_settings()
    assert (settings.routing_file, settings.keys_file, settings.log_dir) == (
        expected.routing_file,
        expected.keys_file,
        expected.log_dir,
    )
    assert settings.redis_url == expected.redis_url == production_env["CRAWL2SERVE_GATEWAY_REDIS_URL"]
    assert settings.cache.enabled and settings.cache.redis_url == expected.cache.redis_url == expected.redis_url
    assert [e.url for e in settings.engines] == [engine.k8s_endpoint()]
    assert [e.features for e in settings.engines] == [e.features for e in expected.engines]  # what SGLang honours
    assert (settings.feast.feast_dir, settings.feast.yaml_file, settings.feast.redis) == (
        expected.feast.feast_dir,
        expected.feast.yaml_file,
        expected.feast.redis,
    )
    assert settings.feast.repo_path == "/app/feature_repo" and Path(expected.feast.repo_path).name == "feature_repo"
    assert settings.host == "0.0.0.0" and settings.port == 8700


def test_data_claim_is_the_pvc():
    env = configmap_env()
    pvc = next(d for _, d in DOCS if d["kind"] == "PersistentVolumeClaim")
    assert env["CRAWL2SERVE_DATA_CLAIM"] == pvc["metadata"]["name"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]


# -- the Helm values -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm():
    return yaml.safe_load(HELM_VALUES.read_text())


def test_helm_values_keys_exist_in_the_chart(helm):
    assert unknown_chart_keys(helm) == []
    for path, allowed in CHART_ENUMS.items():
        value = helm
        for part in path.split("."):
            value = value[part]
        assert value in allowed, f"{path}={value!r}"
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert deployment["image"]["pullPolicy"] in PULL_POLICIES
    assert isinstance(deployment["port"], int)
    assert all(isinstance(a, str) for a in deployment["codeServerArgs"])
    assert not {"codeServerArgs", "dagsterApiGrpcArgs"} <= deployment.keys(), "set one server kind only"
    # The unknown-key check itself works.
    assert unknown_chart_keys({"runLauncher": {"config": {"k8sRunLauncher": {"jobNamespaces": "x"}}}}) == [
        "runLauncher.config.k8sRunLauncher.jobNamespaces"
    ]


def test_helm_values_what_this_project_needs(helm):
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    assert helm["dagsterDaemon"]["enabled"] is True
    assert helm["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert helm["scheduler"]["type"] == "DagsterDaemonScheduler"
    assert helm["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"  # README: psycopg 3 breaks NOTIFY
    assert helm["telemetry"]["enabled"] is False
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert [c["name"] for c in deployment["envConfigMaps"]] == ["crawl2serve-env"]
    claim = deployment["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == configmap_env()["CRAWL2SERVE_DATA_CLAIM"]
    assert deployment["volumeMounts"][0]["mountPath"] == configmap_env()["CRAWL2SERVE_DATA_ROOT"]
    assert (
        helm["serviceAccount"]["name"]
        == helm["global"]["serviceAccountName"]
        == configmap_env()["CRAWL2SERVE_SERVICE_ACCOUNT"]
    )
    # the chart version in the install command is the Dagster this project pins
    assert f"--version {DAGSTER_VERSION}" in HELM_VALUES.read_text()
    assert f"--version {DAGSTER_VERSION}" in (DEPLOY / "README.md").read_text()


def test_helm_code_location_pod_validates(helm):
    """The user deployment's pod-level values (image, args, env sources, volumes, security, resources) as the
    chart renders them into its Deployment's pod."""
    (d,) = helm["dagster-user-deployments"]["deployments"]
    container = {
        "name": "dagster-user-deployments",
        "image": f"{d['image']['repository']}:{d['image']['tag']}",
        "imagePullPolicy": d["image"]["pullPolicy"],
        "args": ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", str(d["port"]), *d["codeServerArgs"]],
        "envFrom": [{"configMapRef": c} for c in d["envConfigMaps"]] + [{"secretRef": s} for s in d["envSecrets"]],
        "resources": d["resources"],
        "volumeMounts": d["volumeMounts"],
    }
    validate(pod({"containers": [container], "volumes": d["volumes"], "securityContext": d["podSecurityContext"]}))
    launcher = helm["runLauncher"]["config"]["k8sRunLauncher"]
    validate(pod({"containers": [{"name": "dagster", "image": "x", "resources": launcher["resources"]}]}))


def _dagster_job(user_config: dict, helm: dict, name: str = "dagster-step-check") -> dict:
    """The Kubernetes Job Dagster builds for a run or step with ``user_config`` (a dagster-k8s/config dict), in
    the container context the code location hands its runs (helm: includeConfigInLaunchedRuns)."""
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    (d,) = helm["dagster-user-deployments"]["deployments"]
    job_config = DagsterK8sJobConfig(
        job_image=f"{d['image']['repository']}:{d['image']['tag']}",
        dagster_home="/opt/dagster/dagster_home",
        image_pull_policy=d["image"]["pullPolicy"],
        service_account_name=helm["global"]["serviceAccountName"],
        instance_config_map="dagster-instance",
        postgres_password_secret=helm["global"]["postgresqlSecretName"],
        env_config_maps=[c["name"] for c in d["envConfigMaps"]],
        env_secrets=[s["name"] for s in d["envSecrets"]],
        volume_mounts=d["volumeMounts"],
        volumes=d["volumes"],
    )
    job = construct_dagster_k8s_job(
        job_config,
        ["dagster", "api", "execute_step"],
        name,
        user_defined_k8s_config=UserDefinedDagsterK8sConfig.from_dict(user_config),
        pod_name=f"{name}-pod",
        component="step_worker",
    )
    return api_dict(job)


def test_helm_run_k8s_config_builds_a_valid_job(helm):
    run = helm["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    snake = {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): v for k, v in run.items()}  # as the chart renders it
    job = _dagster_job(snake, helm, "dagster-run-check")
    validate(job)
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400 and job["spec"]["backoffLimit"] == 0


# -- serving/k8s.py: SGLang as a Deployment + Service ----------------------------------------------------------------

ENGINE = dict(
    name="crawl2serve-sglang",
    namespace="crawl2serve",
    image="lmsysorg/sglang:v0.5.17",
    model_path="/data/sglang_deployment/_/models/v3-merged",
    served_name="crawl2serve",
    port=30000,
)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(gpus=1, data_claim="crawl2serve-data", data_mount="/data"),
        dict(
            gpus=4,
            data_claim="crawl2serve-data",
            data_mount="/data",
            node_selector={"pool": "h100"},
            adapters={"base": "/data/sglang_deployment/_/models/delta-base-from-v3"},
            extra_args=["--mem-fraction-static", "0.8"],
        ),
        dict(gpus=2, tolerations=None, shm_size=None, extra_args=["--tp-size", "2"]),
    ],
    ids=["one-gpu", "four-gpus-adapters", "no-claim"],
)
def test_sglang_manifests_validate(kwargs):
    deployment, service = sglang_manifests(**ENGINE, **kwargs)
    validate(deployment)
    validate(service)
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    gpus = str(kwargs["gpus"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    # a dead or hung engine is restarted by the kubelet; traffic leaves a pod that is not ready
    assert spec["restartPolicy"] == "Always"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert next(v for v in spec["volumes"] if v["name"] == "dshm")["emptyDir"]["medium"] == "Memory"
    extra = list(kwargs.get("extra_args", []))
    if kwargs["gpus"] > 1 and "--tp-size" not in extra:
        extra += ["--tp-size", gpus]
    assert container["command"] == sglang_command(
        python="python3",
        model_path=ENGINE["model_path"],
        host="0.0.0.0",
        port=30000,
        served_name="crawl2serve",
        adapters=kwargs.get("adapters"),
        extra_args=extra,
    )
    assert container["command"].count("--tp-size") <= 1
    if kwargs.get("data_claim"):
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "crawl2serve-data"}} in spec["volumes"]
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    else:
        assert all(v["name"] != "data" for v in spec["volumes"])
    assert spec.get("nodeSelector") == kwargs.get("node_selector")
    # the Service selects the pods and targets the container's named port
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_sglang_manifests_without_lora():
    deployment, service = sglang_manifests(**ENGINE, lora=False, data_claim="crawl2serve-data")
    validate(deployment)
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--enable-lora" not in command
    assert command == sglang_command(
        python="python3",
        model_path=ENGINE["model_path"],
        host="0.0.0.0",
        port=30000,
        served_name="crawl2serve",
        lora=False,
    )
    with pytest.raises(ValueError, match="adapters need lora=True"):
        sglang_manifests(**ENGINE, lora=False, adapters={"base": "/data/x"})


def test_sglang_manifests_refuse_what_cannot_run():
    with pytest.raises(ValueError, match="at least one GPU"):
        sglang_manifests(**ENGINE, gpus=0)
    with pytest.raises(ValueError, match="not under data_mount"):
        sglang_manifests(**{**ENGINE, "model_path": "/models/x"}, data_claim="crawl2serve-data", data_mount="/data")
    with pytest.raises(ValueError, match="1-63 characters"):
        sglang_manifests(**{**ENGINE, "name": "x" * 64})


def test_serving_engine_k8s_manifests(production_env):
    from crawl2serve.resources import build_resources

    engine = build_resources("production")["serving_engine"]
    assert (engine.backend, engine.mode, engine.image) == ("sglang", "k8s", production_env["CRAWL2SERVE_SGLANG_IMAGE"])
    deployment, service = engine.k8s_manifests(
        "/data/sglang_deployment/_/models/v1-merged", adapters={"base": "/data/sglang_deployment/_/models/delta-base"}
    )
    validate(deployment)
    validate(service)
    spec = deployment["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "crawl2serve-data"}} in spec["volumes"]
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert (
        engine.k8s_endpoint()
        == service_url(name, namespace, service["spec"]["ports"][0]["port"])
        == "http://crawl2serve-sglang.crawl2serve.svc.cluster.local:30000"
    )
    assert engine.model_copy(update={"service_host": "10.0.0.7"}).k8s_endpoint() == "http://10.0.0.7:30000"
    # the LoRA-free champion engine: its own Deployment + Service
    champion = engine.model_copy(update={"champion_engine_port": 30001})
    deployment, service = champion.k8s_manifests("/data/sglang_deployment/_/models/v1-merged", engine="champion")
    validate(deployment)
    assert "--enable-lora" not in deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert (
        champion.k8s_endpoint("champion")
        == service_url(service["metadata"]["name"], "crawl2serve", 30001)
        == "http://crawl2serve-sglang-champion.crawl2serve.svc.cluster.local:30001"
    )
    with pytest.raises(ValueError, match="primary or champion"):
        engine.k8s_endpoint("fallback")


class FakeKubernetesApi:
    """A double of AppsV1Api + CoreV1Api: objects in a dict; reads of unknown objects raise a 404 ApiException.
    Only methods that exist on the real APIs can be called."""

    REAL = (kubernetes.client.AppsV1Api, kubernetes.client.CoreV1Api)

    def __init__(self, fail_reads_with: int | None = None):
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.calls: list[tuple] = []
        self.fail_reads_with = fail_reads_with
        self.version = 0

    def __getattr__(self, method: str):
        if not any(hasattr(api, method) for api in self.REAL):
            raise AttributeError(f"the Kubernetes client has no {method}")
        verb, kind = re.match(r"(read|create|replace)_namespaced_(\w+)$", method).groups()

        def call(*args):
            self.calls.append((method, *args))
            if verb == "read":
                name, namespace = args
                if self.fail_reads_with:
                    raise ApiException(status=self.fail_reads_with, reason="Forbidden")
                if (kind, namespace, name) not in self.objects:
                    raise ApiException(status=404, reason="Not Found")
                return self.objects[(kind, namespace, name)]
            if verb == "create":
                namespace, body = args
                name = body["metadata"]["name"]
            else:
                name, namespace, body = args
            self.version += 1
            stored = json.loads(json.dumps(body))
            stored["metadata"]["resourceVersion"] = str(self.version)
            if kind == "service":
                stored["spec"].setdefault("clusterIP", "10.96.0.10")
                stored["spec"].setdefault("clusterIPs", ["10.96.0.10"])
            self.objects[(kind, namespace, name)] = stored
            return stored

        return call


def test_apply_manifests_creates_then_replaces():
    manifests = sglang_manifests(**ENGINE, data_claim="crawl2serve-data")
    api = FakeKubernetesApi()
    assert apply_manifests(manifests, api_client=api) == [
        "deployment/crawl2serve/crawl2serve-sglang created",
        "service/crawl2serve/crawl2serve-sglang created",
    ]
    assert [c[0] for c in api.calls] == [
        "read_namespaced_deployment",
        "create_namespaced_deployment",
        "read_namespaced_service",
        "create_namespaced_service",
    ]
    api.calls.clear()
    again = sglang_manifests(**{**ENGINE, "image": "lmsysorg/sglang:v0.5.18"}, data_claim="crawl2serve-data")
    assert apply_manifests(again, api_client=api) == [
        "deployment/crawl2serve/crawl2serve-sglang replaced",
        "service/crawl2serve/crawl2serve-sglang replaced",
    ]
    replace_deployment = api.calls[1]
    assert replace_deployment[0] == "replace_namespaced_deployment"
    assert replace_deployment[1:3] == ("crawl2serve-sglang", "crawl2serve")
    assert replace_deployment[3]["metadata"]["resourceVersion"] == "1"  # carried over from the live object
    container = api.objects[("deployment", "crawl2serve", "crawl2serve-sglang")]["spec"]["template"]["spec"]
    assert container["containers"][0]["image"] == "lmsysorg/sglang:v0.5.18"
    replaced_service = api.calls[3][3]
    assert replaced_service["spec"]["clusterIP"] == "10.96.0.10"  # immutable: kept from the live Service
    assert "resourceVersion" not in again[0]["metadata"]  # the caller's manifests are not modified
    for body in (replace_deployment[3], replaced_service):
        validate(body)


def test_apply_manifests_errors():
    with pytest.raises(ApiException) as err:
        apply_manifests(sglang_manifests(**ENGINE), api_client=FakeKubernetesApi(fail_reads_with=403))
    assert err.value.status == 403
    with pytest.raises(ValueError, match="unsupported kind 'Job'"):
        apply_manifests([{"kind": "Job", "metadata": {"name": "x"}}], api_client=FakeKubernetesApi())


def test_apply_manifests_through_the_real_client(monkeypatch):
    """The real AppsV1Api/CoreV1Api accept the dict manifests (serialization, URLs, verbs), over a fake transport."""
    requests = []

    live = {}

    def request(
        method,
        url,
        query_params=None,
        headers=None,
        post_params=None,
        body=None,
        _preload_content=True,
        _request_timeout=None,
    ):
        requests.append((method, url))
        path = url.split("://", 1)[-1].split("/", 1)[1]
        if method == "GET":
            if path not in live:
                raise ApiException(http_resp=ApiResponse(404, {"kind": "Status", "code": 404}))
            return ApiResponse(200, live[path])
        stored = dict(body, metadata={**body["metadata"], "resourceVersion": "7"})
        live[path if method == "PUT" else f"{path}/{body['metadata']['name']}"] = stored
        return ApiResponse(201 if method == "POST" else 200, stored)

    monkeypatch.undo()  # this test drives the real client: only its transport is faked (no_cluster lifted)
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host="https://k8s.invalid"))
    monkeypatch.setattr(client.rest_client, "request", request)
    manifests = sglang_manifests(**ENGINE)
    assert apply_manifests(manifests, api_client=client)[0].endswith("created")
    assert apply_manifests(manifests, api_client=client)[0].endswith("replaced")
    assert ("POST", "https://k8s.invalid/apis/apps/v1/namespaces/crawl2serve/deployments") in requests
    assert ("PUT", "https://k8s.invalid/api/v1/namespaces/crawl2serve/services/crawl2serve-sglang") in requests


# -- the trainer pod (TrainingLauncher mode="k8s", PipesK8sClient) -----------------------------------------------------


def _trainer_pod(launcher) -> dict:
    """The pod PipesK8sClient creates from the launcher's base pod spec (dagster_k8s.pipes.build_pod_body)."""
    from dagster_k8s.pipes import build_pod_body

    body = build_pod_body(
        pod_name="dagster-pipes-check",
        image=launcher.image,
        command=launcher.command("/data/lora_adapter/_/run-x/train_config.json"),
        env_vars={"DAGSTER_PIPES_CONTEXT": "e30=", "DAGSTER_PIPES_MESSAGES": "e30="},
        base_pod_meta={"labels": {"app.kubernetes.io/part-of": "crawl2serve", "crawl2serve/stage": "training"}},
        base_pod_spec=launcher.pod_spec(),
    )
    return {"apiVersion": "v1", "kind": "Pod", **api_dict(body)}


@pytest.mark.parametrize(
    "config",
    [
        {},
        {
            "gpus": 8,
            "node_selector": {"pool": "h200"},
            "service_account": "trainer",
            "data_claim": "crawl2serve-data",
            "data_mount": "/data",
            "cpu": "32",
            "memory": "512Gi",
        },
    ],
    ids=["defaults", "eight-gpus-claim"],
)
def test_trainer_pod_validates(config):
    from crawl2serve.resources.training import TrainingLauncher

    launcher = TrainingLauncher(mode="k8s", **config)
    manifest = _trainer_pod(launcher)
    validate(manifest)
    (container,) = manifest["spec"]["containers"]
    gpus = str(config.get("gpus", 1))
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert container["command"][:3] == ["torchrun", "--standalone", f"--nproc-per-node={gpus}"]
    assert manifest["spec"]["restartPolicy"] == "Never"
    if config.get("data_claim"):
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]


def test_production_trainer_pod(production_env):
    from crawl2serve.resources import build_resources

    launcher = build_resources("production")["training_launcher"]
    assert (launcher.mode, launcher.image) == ("k8s", production_env["CRAWL2SERVE_TRAINER_IMAGE"])
    manifest = _trainer_pod(launcher)
    validate(manifest)
    (container,) = manifest["spec"]["containers"]
    assert {"name": "data", "mountPath": production_env["CRAWL2SERVE_DATA_ROOT"]} in container["volumeMounts"]
    assert manifest["spec"]["serviceAccountName"] == production_env["CRAWL2SERVE_SERVICE_ACCOUNT"]
    assert manifest["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


# -- per-step Kubernetes settings (pipelines/k8s.py) -------------------------------------------------------------------


def _step_configs():
    from crawl2serve.pipelines import k8s

    config = k8s.k8s_executor_config(trainer_in_step_pod=True, gpus=2, gpu_node_selector={"pool": "h100"})
    cases = {
        "run-pod": k8s.RUN_POD_TAGS[k8s.K8S_CONFIG_TAG],
        "cpu-tags": k8s.CPU_POD_TAGS[k8s.K8S_CONFIG_TAG],
        "gpu-tags": k8s.GPU_POD_TAGS[k8s.K8S_CONFIG_TAG],
        "step-default": config["step_k8s_config"],
    }
    cases.update({f"step-{op}": c for op, c in config["per_step_k8s_config"].items()})
    return config, cases


@pytest.mark.parametrize("case", list(_step_configs()[1]))
def test_step_pod_configs_build_valid_jobs(case, helm):
    """Each dagster-k8s/config, merged over the executor's default as K8sStepHandler merges it, makes a valid Job."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    config, cases = _step_configs()
    merged = K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config["step_k8s_config"])).merge(
        K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(cases[case]))
    )
    job = _dagster_job(merged.run_k8s_config.to_dict(), helm)
    validate(job)
    pod_spec = job["spec"]["template"]["spec"]
    resources = pod_spec["containers"][0]["resources"]
    gpu = case in ("gpu-tags", "step-model_evaluation", "step-lora_adapter")
    assert ("nvidia.com/gpu" in resources["limits"]) is gpu
    if gpu:
        assert any(t["key"] == "nvidia.com/gpu" for t in pod_spec["tolerations"])
    assert {"name": "data", "mountPath": "/data"} in pod_spec["containers"][0]["volumeMounts"]


def test_step_pods_cover_every_op():
    from crawl2serve.definitions import defs as loaded
    from crawl2serve.pipelines.k8s import POD_CONFIGS, STEP_PODS, k8s_executor_config

    ops = {a.op.name for a in loaded.assets}
    assert set(STEP_PODS) == ops
    assert set(STEP_PODS.values()) <= set(POD_CONFIGS)
    default = k8s_executor_config()["per_step_k8s_config"]
    assert "nvidia.com/gpu" not in default["lora_adapter"]["container_config"]["resources"]["limits"]
    assert default["model_evaluation"]["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"


# -- the production environment ------------------------------------------------------------------------------------


def test_production_resources(production_env):
    from crawl2serve.resources import build_resources
    from crawl2serve.resources.crawl_target import CrawlTarget

    local, prod = build_resources("local"), build_resources("production")
    assert prod.keys() == local.keys()
    assert {k: type(v) for k, v in prod.items()} == {k: type(v) for k, v in local.items()}
    assert prod["data_root"].url == "/data"
    target: CrawlTarget = prod["crawl_target"]
    assert (target.mode, target.seeds, target.allowed_hosts, target.per_host_delay_s) == (
        "seeds",
        ["https://docs.python.org/3/"],
        ["docs.python.org"],
        1.0,
    )
    assert (prod["feast_store"].yaml_file, prod["feast_store"].redis) == (
        "feature_store.redis.yaml",
        production_env["CRAWL2SERVE_REDIS"],
    )
    assert prod["mlflow_tracking"].uri == production_env["MLFLOW_TRACKING_URI"]
    launcher = prod["training_launcher"]
    assert (launcher.mode, launcher.gpus, launcher.namespace, launcher.data_claim, launcher.data_mount) == (
        "k8s",
        1,
        "crawl2serve",
        "crawl2serve-data",
        "/data",
    )
    engine = prod["serving_engine"]
    assert (engine.data_claim, engine.data_mount, engine.gpus) == ("crawl2serve-data", "/data", 1)
    # `local` is untouched
    assert (local["crawl_target"].mode, local["training_launcher"].mode) == ("pydoc", "local")


def test_production_resources_from_env_var_and_object_store(production_env, monkeypatch):
    from crawl2serve.resources import build_resources

    monkeypatch.setenv("CRAWL2SERVE_ENV", "production")
    monkeypatch.setenv("CRAWL2SERVE_DATA_ROOT", "memory://crawl2serve")  # any fsspec URL with a driver installed
    monkeypatch.delenv("CRAWL2SERVE_DATA_CLAIM")
    monkeypatch.delenv("CRAWL2SERVE_GATEWAY_REDIS_URL")
    monkeypatch.setenv("CRAWL2SERVE_SEEDS", "https://a.example/, https://b.example/docs")
    res = build_resources()
    assert res["data_root"].url == "memory://crawl2serve" and not res["data_root"].is_local
    assert res["crawl_target"].seeds == ["https://a.example/", "https://b.example/docs"]
    assert res["training_launcher"].data_claim is None
    assert res["serving_engine"].redis_url == "redis://redis.crawl2serve.svc.cluster.local:6379/1"


REQUIRED = [name for name, (required, _) in PRODUCTION_ENV.items() if required]


@pytest.mark.parametrize("name", REQUIRED)
def test_production_missing_variable_is_named(name, production_env, monkeypatch):
    from crawl2serve.resources import MissingEnvironment, build_resources

    monkeypatch.delenv(name)
    with pytest.raises(MissingEnvironment, match=re.escape(name)) as err:
        build_resources("production")
    others = [n for n in REQUIRED if n != name]
    assert not any(f"{n} (" in str(err.value) for n in others)  # only what is missing


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("CRAWL2SERVE_TRAINER_GPUS", "two", "not an integer"),
        ("CRAWL2SERVE_TRAINER_NODES", "0", "at least 1"),
        ("CRAWL2SERVE_SGLANG_GPUS", "0", "at least 1"),
        ("CRAWL2SERVE_CRAWL_DELAY_S", "soon", "not a number"),
        ("CRAWL2SERVE_GPU_NODE_SELECTOR", "gpu", "key=value"),
        ("CRAWL2SERVE_DATA_ROOT", "data", "absolute path"),
        ("CRAWL2SERVE_DATA_ROOT", "s3://bucket/x", "absolute path"),  # a volume claim mounts at a path, not a URL
        ("CRAWL2SERVE_DATA_ROOT", "nosuchfs://bucket/x", "no filesystem"),
    ],
)
def test_production_malformed_variable_is_named(name, value, message, production_env, monkeypatch):
    from crawl2serve.resources import MissingEnvironment, build_resources

    if "://" in value and message == "no filesystem":
        monkeypatch.delenv("CRAWL2SERVE_DATA_CLAIM")
    monkeypatch.setenv(name, value)
    with pytest.raises(MissingEnvironment, match=re.escape(name)) as err:
        build_resources("production")
    assert message in str(err.value)


def test_production_definitions_load(production_env):
    """The production Definitions, with the per-stage k8s executor: every job resolves, the executor config is
    accepted by dagster-k8s's schema, and nothing contacts a cluster (see no_cluster)."""
    from crawl2serve.assets.release.assets import rollback_model
    from crawl2serve.definitions import defs as loaded
    from crawl2serve.pipelines.jobs import EMBEDDED_RUN_CONFIG, main_job
    from crawl2serve.pipelines.k8s import k8s_executor
    from crawl2serve.pipelines.schedules import schedules
    from crawl2serve.resources import build_resources

    defs = dg.Definitions(
        assets=loaded.assets,
        jobs=[main_job, rollback_model],
        schedules=schedules,
        resources=build_resources("production"),
        executor=k8s_executor(),
    )
    dg.Definitions.validate_loadable(defs)
    jobs = {j.name: j for j in defs.get_repository_def().get_all_jobs()}
    assert {"main", "rollback_model"} <= jobs.keys()
    assert all(j.executor_def.name == "k8s_per_stage" for j in jobs.values())
    # the executor's config goes through dagster-k8s's own config schema here
    assert dg.validate_run_config(jobs["main"], EMBEDDED_RUN_CONFIG)
    assert dg.validate_run_config(jobs["rollback_model"], {})


def test_code_location_module_loads_in_production():
    """What the image's CMD loads (`-m crawl2serve.definitions`), in a fresh interpreter with the ConfigMap's
    environment and CRAWL2SERVE_ENV=production: the module's `defs` is production's and loads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRAWL2SERVE_", "MLFLOW_TRACKING"))}
    env.update(configmap_env())
    code = (
        "import dagster as dg, crawl2serve.definitions as d; dg.Definitions.validate_loadable(d.defs); "
        "r = d.defs.resources; print(r['training_launcher'].mode, r['crawl_target'].mode, "
        "r['serving_engine'].mode)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-3:] == ["k8s", "seeds", "k8s"]


# -- the image (no docker daemon: the Dockerfile is read, not built) ---------------------------------------------------


def _dockerfile():
    lines, current = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").rstrip() + " " if raw.endswith("\\") else raw
        if not raw.endswith("\\"):
            if current.strip():
                lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_entry_point_and_pins():
    instructions = _dockerfile()
    assert [arg for op, arg in instructions if op == "FROM"] == ["python:3.11-slim"]
    (cmd,) = [arg for op, arg in instructions if op == "CMD"]
    cmd = json.loads(cmd)
    assert not [op for op, _ in instructions if op == "ENTRYPOINT"]  # the chart and launchers replace CMD
    assert cmd[:3] == ["dagster", "code-server", "start"] and cmd[cmd.index("-p") + 1] == "4000"
    module = cmd[cmd.index("-m") + 1]
    assert importlib.util.find_spec(module) is not None
    workdir = [arg for op, arg in instructions if op == "WORKDIR"][-1]
    assert cmd[cmd.index("-d") + 1] == workdir == "/app"
    (helm_deployment,) = yaml.safe_load(HELM_VALUES.read_text())["dagster-user-deployments"]["deployments"]
    args = helm_deployment["codeServerArgs"]
    assert args[args.index("-m") + 1] == module and args[args.index("-d") + 1] == workdir
    assert helm_deployment["port"] == int(cmd[cmd.index("-p") + 1])
    # torch: the pin of pyproject.toml, from the TORCH_INDEX build arg (CPU by default)
    pyproject = (REPO / "pyproject.toml").read_text()
    pin = re.search(r'"torch==([\d.]+)"', pyproject).group(1)
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert f'pip install torch=={pin} --index-url "${{TORCH_INDEX}}"' in runs
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in (DEPLOY / "Dockerfile").read_text()
    assert "pip install ." in runs
    env = " ".join(arg for op, arg in instructions if op == "ENV")
    for setting in (
        "DAGSTER_DISABLE_TELEMETRY=1",
        "DO_NOT_TRACK=true",
        "MLFLOW_DISABLE_TELEMETRY=true",
        "HF_HUB_OFFLINE=1",
        "CRAWL2SERVE_ENV=production",
    ):
        assert setting in env


def test_dockerfile_copies_what_the_code_needs():
    """Every COPY source exists and is not dropped by .dockerignore; the packages pyproject installs and the data
    files read from the source tree (feature_repo/, pipelines/embedded.yaml) are all copied."""
    ignored = [
        p.strip().rstrip("/")
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    for required in (".venv", "data", "dagster_home/*", ".gpu", "mlruns", ".git"):
        assert required in ignored
    sources = []
    for op, arg in _dockerfile():
        if op == "COPY":
            *srcs, _ = shlex.split(arg)
            sources += [s for s in srcs if not s.startswith("--")]
    for src in sources:
        assert (REPO / src).exists(), src
        assert not any(Path(src).match(p) or src == p for p in ignored), f"{src} is in .dockerignore"
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for folder in package_dirs.values():
        assert folder in sources
    assert {"feature_repo", "pyproject.toml", "README.md"} <= set(sources)


def test_deploy_readme():
    text = (DEPLOY / "README.md").read_text()
    assert text.startswith("# ") and "## Outgrowing one machine" in text
    for command in (
        "docker build",
        "docker push",
        "helm upgrade --install",
        "kubectl apply -f deploy/k8s/",
        "deploy/helm/dagster-values.yaml",
        "CRAWL2SERVE_SGLANG_GPUS",
    ):
        assert command in text
    for name in PRODUCTION_ENV:
        assert name in text, f"deploy/README.md does not document {name}"
    assert set(configmap_env()) - {
        "CRAWL2SERVE_ENV",
        "DAGSTER_DISABLE_TELEMETRY",
        "DO_NOT_TRACK",
        "MLFLOW_DISABLE_TELEMETRY",
        "HF_HUB_OFFLINE",
    } <= set(PRODUCTION_ENV)
    assert KUBERNETES_VERSIONS[0] in text
