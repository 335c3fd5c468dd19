"""Offline validation of everything crawl2serve sends to Kubernetes (no cluster, no network, no docker).

Kubernetes objects are validated with ``kubernetes-validate`` (the API's OpenAPI schemas as JSON Schema, shipped
in the wheel) in strict mode: an unknown field fails, not only a wrong type. Objects are checked against the
oldest Kubernetes release we claim to support and the newest the package ships. Quantities (``cpu: 500m``,
``memory: 2Gi``) are parsed with the client's own parser: the schemas accept any string there.

The Dagster Helm chart's ``values.schema.json`` is not available offline; ``CHART_KEYS`` is the key tree of its
values for chart 1.13 (transcribed from the chart's schema models in dagster-io/dagster, helm/dagster/schema:
values.py, subschema/{webserver,daemon,run_launcher,postgresql,global_,service_account,telemetry,scheduler,
retention}.py and dagster_user_deployments/subschema/user_deployments.py). Kubernetes objects inside the values
(resources, volumes, probes, ...) are marked ``K8S`` and validated against the Kubernetes schemas instead.
"""

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate
import yaml
from kubernetes.utils import parse_quantity

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S_DIR = DEPLOY / "k8s"
HELM_VALUES = DEPLOY / "helm" / "dagster-values.yaml"

OLDEST_KUBERNETES = "1.30"  # the oldest release still commonly in support (EKS/GKE/AKS extended support)
KUBERNETES_VERSIONS = (OLDEST_KUBERNETES, kubernetes_validate.latest_version())


# -- Kubernetes objects --------------------------------------------------------------------------------------------


def validate(obj: Mapping[str, Any]) -> None:
    """Strict validation of one API object against every version in KUBERNETES_VERSIONS, and its quantities."""
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(dict(obj), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            raise AssertionError(
                f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} invalid for "
                f"Kubernetes {version} at {where or '<root>'}: {exc.message}"
            ) from None
    check_quantities(obj)


QUANTITY_KEYS = {"requests", "limits"}


def check_quantities(obj: Any, path: str = "") -> None:
    """Every value under a ``requests``/``limits`` map, and every ``sizeLimit``/``storage``, parses as a quantity."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            here = f"{path}/{key}"
            if key in QUANTITY_KEYS and isinstance(value, Mapping):
                for name, quantity in value.items():
                    _quantity(quantity, f"{here}/{name}")
            elif key in ("sizeLimit", "size_limit", "storage") and not isinstance(value, Mapping):
                _quantity(value, here)
            else:
                check_quantities(value, here)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            check_quantities(value, f"{path}/{i}")


def _quantity(value: Any, where: str) -> None:
    try:
        parse_quantity(value)
    except ValueError as exc:
        raise AssertionError(f"{where}: {value!r} is not a Kubernetes quantity ({exc})") from None


def refuse_clusters(monkeypatch) -> None:
    """Make any attempt to reach a cluster (a kubeconfig, the in-cluster config, an API call) fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to contact a Kubernetes cluster")

    monkeypatch.setattr(kubernetes.config, "load_incluster_config", refuse)
    monkeypatch.setattr(kubernetes.config, "load_kube_config", refuse)
    monkeypatch.setattr(kubernetes.client.ApiClient, "call_api", refuse)


class ApiResponse:
    """A Kubernetes API response as the real client's transport returns it: for tests that drive the real
    ``kubernetes`` client and fake only its transport (no cluster exists here)."""

    def __init__(self, status: int, body: Any):
        self.status, self.reason = status, "OK"
        self.data = body.encode() if isinstance(body, str) else json.dumps(body).encode()

    def getheaders(self) -> dict[str, str]:
        return {"content-type": "application/json"}

    def getheader(self, name: str, default=None):
        return self.getheaders().get(name.lower(), default)


def api_dict(model) -> dict:
    """A ``kubernetes.client`` model as the API's JSON (camelCase, no nulls)."""
    return kubernetes.client.ApiClient().sanitize_for_serialization(model)


def pod(spec: Mapping[str, Any], name: str = "check", labels: Mapping[str, str] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": dict(spec),
    }


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_docs() -> list[tuple[str, dict]]:
    """Every YAML document under deploy/k8s/, as (file:kind/name, doc)."""
    out = []
    for path in sorted(K8S_DIR.glob("*.y*ml")):
        for doc in load_docs(path):
            out.append((f"{path.name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}", doc))
    return out


def pod_specs(doc: Mapping[str, Any]) -> Iterable[dict]:
    """The pod spec(s) of a workload object."""
    kind = doc.get("kind")
    if kind == "Pod":
        yield doc["spec"]
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield doc["spec"]["template"]["spec"]
    elif kind == "CronJob":
        yield doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


# -- the production environment ------------------------------------------------------------------------------------


def configmap_env() -> dict[str, str]:
    """The production environment exactly as deploy/k8s/10-config.yaml sets it."""
    for doc in load_docs(K8S_DIR / "10-config.yaml"):
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "crawl2serve-env":
            return {k: str(v) for k, v in doc["data"].items()}
    raise AssertionError("deploy/k8s/10-config.yaml has no ConfigMap crawl2serve-env")


# -- the Dagster Helm chart's values (chart 1.13) -------------------------------------------------------------------

K8S = "k8s"  # a Kubernetes object or list of them: validated against the Kubernetes schema, not here
ANY = "any"  # free-form in the chart's schema (Dict[str, Any]) or a scalar
PULL_POLICIES = {"Always", "IfNotPresent", "Never"}

IMAGE = {"repository": ANY, "tag": ANY, "pullPolicy": ANY}
POD_KNOBS = {
    "annotations": ANY,
    "nodeSelector": ANY,
    "affinity": K8S,
    "tolerations": K8S,
    "podSecurityContext": K8S,
    "securityContext": K8S,
    "resources": K8S,
    "livenessProbe": K8S,
    "readinessProbe": K8S,
    "startupProbe": K8S,
    "labels": ANY,
    "volumeMounts": K8S,
    "volumes": K8S,
    "schedulerName": ANY,
}
USER_DEPLOYMENT = {
    "name": ANY,
    "image": IMAGE,
    "dagsterApiGrpcArgs": ANY,
    "codeServerArgs": ANY,
    "includeConfigInLaunchedRuns": {"enabled": ANY},
    "port": ANY,
    "env": ANY,
    "envConfigMaps": K8S,
    "envSecrets": K8S,
    **POD_KNOBS,
}
TICK_RETENTION = {"purgeAfterDays": ANY}  # an int, or {skipped, success, failure, started}
CHART_KEYS: dict = {
    "global": {
        "postgresqlSecretName": ANY,
        "dagsterHome": ANY,
        "serviceAccountName": ANY,
        "celeryConfigSecretName": ANY,
        "dagsterInstanceConfigMap": ANY,
    },
    "serviceAccount": {"create": ANY, "name": ANY, "annotations": ANY},
    "telemetry": {"enabled": ANY},
    "dagsterWebserver": {
        "replicaCount": ANY,
        "image": IMAGE,
        "nameOverride": ANY,
        "pathPrefix": ANY,
        "service": ANY,
        "workspace": ANY,
        "env": ANY,
        "envConfigMaps": K8S,
        "envSecrets": K8S,
        "deploymentLabels": ANY,
        "enableReadOnly": ANY,
        "dbStatementTimeout": ANY,
        "dbPoolRecycle": ANY,
        "logLevel": ANY,
        **POD_KNOBS,
    },
    "dagster-user-deployments": {
        "enabled": ANY,
        "enableSubchart": ANY,
        "imagePullSecrets": K8S,
        "deployments": [USER_DEPLOYMENT],
    },
    "runLauncher": {
        "type": ANY,
        "config": {
            "k8sRunLauncher": {
                "image": IMAGE,
                "imagePullPolicy": ANY,
                "jobNamespace": ANY,
                "loadInclusterConfig": ANY,
                "kubeconfigFile": ANY,
                "envConfigMaps": K8S,
                "envSecrets": K8S,
                "envVars": ANY,
                "volumeMounts": K8S,
                "volumes": K8S,
                "labels": ANY,
                "failPodOnRunFailure": ANY,
                "resources": K8S,
                "schedulerName": ANY,
                "securityContext": K8S,
                "runK8sConfig": {
                    "containerConfig": K8S,
                    "podSpecConfig": K8S,
                    "podTemplateSpecMetadata": K8S,
                    "jobSpecConfig": K8S,
                    "jobMetadata": K8S,
                },
            },
            "celeryK8sRunLauncher": ANY,
            "customRunLauncher": ANY,
        },
    },
    "postgresql": {
        "image": ANY,
        "enabled": ANY,
        "postgresqlHost": ANY,
        "postgresqlUsername": ANY,
        "postgresqlPassword": ANY,
        "postgresqlDatabase": ANY,
        "postgresqlParams": ANY,
        "postgresqlScheme": ANY,
        "service": {"port": ANY},
    },
    "generatePostgresqlPasswordSecret": ANY,
    "generateCeleryConfigSecret": ANY,
    "scheduler": {"type": ANY, "config": {"customScheduler": ANY}},
    "dagsterDaemon": {
        "enabled": ANY,
        "image": IMAGE,
        "heartbeatTolerance": ANY,
        "env": ANY,
        "envConfigMaps": K8S,
        "envSecrets": K8S,
        "deploymentLabels": ANY,
        "runMonitoring": ANY,
        "runRetries": ANY,
        "sensors": {"useThreads": ANY, "numWorkers": ANY, "numSubmitWorkers": ANY},
        "schedules": {"useThreads": ANY, "numWorkers": ANY, "numSubmitWorkers": ANY},
        "runCoordinator": {
            "enabled": ANY,
            "type": ANY,
            "config": {
                "queuedRunCoordinator": {
                    "maxConcurrentRuns": ANY,
                    "dequeueIntervalSeconds": ANY,
                    "dequeueNumWorkers": ANY,
                    "dequeueUseThreads": ANY,
                    "tagConcurrencyLimits": [{"key": ANY, "limit": ANY, "value": ANY}],
                },
                "customRunCoordinator": ANY,
            },
        },
        **POD_KNOBS,
    },
    "retention": {
        "enabled": ANY,
        "sensor": TICK_RETENTION,
        "schedule": TICK_RETENTION,
        "autoMaterialize": TICK_RETENTION,
    },
    # further top-level sections of the chart, not used here
    "rabbitmq": ANY,
    "redis": ANY,
    "flower": ANY,
    "ingress": ANY,
    "imagePullSecrets": K8S,
    "computeLogManager": ANY,
    "pythonLogs": ANY,
    "busybox": ANY,
    "migrate": ANY,
    "additionalInstanceConfig": ANY,
}
CHART_ENUMS = {
    "runLauncher.type": {"K8sRunLauncher", "CeleryK8sRunLauncher", "CustomRunLauncher"},
    "scheduler.type": {"DagsterDaemonScheduler", "CustomScheduler"},
    "dagsterDaemon.runCoordinator.type": {"QueuedRunCoordinator", "CustomRunCoordinator"},
}


def unknown_chart_keys(values: Any, schema: Any = None, path: str = "") -> list[str]:
    """Key paths of ``values`` that the chart's schema does not have."""
    schema = CHART_KEYS if schema is None else schema
    if schema in (ANY, K8S):
        return []
    if isinstance(schema, list):
        if not isinstance(values, list):
            return [f"{path} (expected a list)"]
        return [bad for i, item in enumerate(values) for bad in unknown_chart_keys(item, schema[0], f"{path}[{i}]")]
    if not isinstance(values, Mapping):
        return [f"{path} (expected a mapping)"]
    bad = []
    for key, value in values.items():
        here = f"{path}.{key}" if path else key
        if key not in schema:
            bad.append(here)
        else:
            bad += unknown_chart_keys(value, schema[key], here)
    return bad


# -- KubeRay objects (ray.io/v1) ----------------------------------------------------------------------------------
# The CRDs' schemas are not available offline: these are the key trees of RayCluster and RayJob specs, transcribed
# from KubeRay's Go types (ray-project/kuberay, ray-operator/apis/ray/v1: raycluster_types.go, rayjob_types.go; json
# tags of the fields that ray.io/v1 has had since KubeRay 1.1). Pod templates, Services and resource requirements
# inside them are marked ``K8S`` and validated against the Kubernetes schemas.

RAY_DIR = DEPLOY / "ray"
RAY_START_PARAMS = ANY  # map[string]string of `ray start` flags
HEAD_GROUP = {
    "serviceType": ANY,
    "headService": K8S,
    "enableIngress": ANY,
    "rayStartParams": RAY_START_PARAMS,
    "template": K8S,
}
WORKER_GROUP = {
    "groupName": ANY,
    "replicas": ANY,
    "minReplicas": ANY,
    "maxReplicas": ANY,
    "numOfHosts": ANY,
    "rayStartParams": RAY_START_PARAMS,
    "template": K8S,
    "scaleStrategy": {"workersToDelete": ANY},
}
RAYCLUSTER_SPEC = {
    "headGroupSpec": HEAD_GROUP,
    "workerGroupSpecs": [WORKER_GROUP],
    "rayVersion": ANY,
    "enableInTreeAutoscaling": ANY,
    "autoscalerOptions": {
        "resources": K8S,
        "image": ANY,
        "imagePullPolicy": ANY,
        "env": K8S,
        "envFrom": K8S,
        "volumeMounts": K8S,
        "securityContext": K8S,
        "idleTimeoutSeconds": ANY,
        "upscalingMode": ANY,
    },
    "headServiceAnnotations": ANY,
    "suspend": ANY,
}
RAYJOB_SPEC = {
    "activeDeadlineSeconds": ANY,
    "backoffLimit": ANY,
    "rayClusterSpec": RAYCLUSTER_SPEC,
    "submitterPodTemplate": K8S,
    "metadata": ANY,
    "clusterSelector": ANY,
    "submitterConfig": {"backoffLimit": ANY},
    "managedBy": ANY,
    "entrypoint": ANY,
    "runtimeEnvYAML": ANY,
    "jobId": ANY,
    "submissionMode": ANY,
    "entrypointResources": ANY,
    "entrypointNumCpus": ANY,
    "entrypointNumGpus": ANY,
    "ttlSecondsAfterFinished": ANY,
    "shutdownAfterJobFinishes": ANY,
    "suspend": ANY,
}
RAY_ENUMS = {
    "submissionMode": {"K8sJobMode", "HTTPMode", "InteractiveMode"},
    "upscalingMode": {"Default", "Aggressive", "Conservative"},
}


def ray_docs() -> list[tuple[str, dict]]:
    """Every YAML document under deploy/ray/, as (file:kind/name, doc)."""
    return [
        (f"{path.name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}", doc)
        for path in sorted(RAY_DIR.glob("*.y*ml"))
        for doc in load_docs(path)
    ]


def ray_cluster_specs(doc: Mapping[str, Any]) -> Iterable[dict]:
    """The RayCluster spec(s) of a KubeRay object: a RayCluster's own, a RayJob's cluster template."""
    if doc["kind"] == "RayCluster":
        yield doc["spec"]
    elif doc["kind"] == "RayJob" and "rayClusterSpec" in doc["spec"]:
        yield doc["spec"]["rayClusterSpec"]


def ray_pod_templates(doc: Mapping[str, Any]) -> Iterable[tuple[str, dict]]:
    """(where, pod template) of every pod a KubeRay object makes: head, each worker group, the job submitter."""
    for spec in ray_cluster_specs(doc):
        yield "head", spec["headGroupSpec"]["template"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"worker group {group['groupName']}", group["template"]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        yield "submitter", doc["spec"]["submitterPodTemplate"]
