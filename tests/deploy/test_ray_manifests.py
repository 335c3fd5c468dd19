"""The KubeRay manifests of deploy/ray/ (the Ray cluster the corpus stages run on, and a one-off backfill RayJob),
validated offline: their fields against KubeRay's ray.io/v1 key trees (k8s_checks.py), every pod they make against
the Kubernetes schemas, and their references (volume, ConfigMap, Secret, service account, image) against the rest
of the deployment."""

import importlib.metadata
import shlex
import tomllib
from datetime import datetime

import pytest
import yaml
from k8s_checks import (
    HELM_VALUES,
    RAY_ENUMS,
    RAYCLUSTER_SPEC,
    RAYJOB_SPEC,
    REPO,
    configmap_env,
    k8s_docs,
    pod,
    ray_cluster_specs,
    ray_docs,
    ray_pod_templates,
    unknown_chart_keys,
    validate,
)

DOCS = ray_docs()
HELM = yaml.safe_load(HELM_VALUES.read_text())
CODE_LOCATION = HELM["dagster-user-deployments"]["deployments"][0]


def by_kind(kind: str) -> dict:
    (doc,) = [d for _, d in DOCS if d["kind"] == kind]
    return doc


def test_the_manifests_are_a_raycluster_and_a_rayjob():
    assert sorted(d["kind"] for _, d in DOCS) == ["RayCluster", "RayJob"]
    for _, doc in DOCS:
        assert doc["apiVersion"] == "ray.io/v1"
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
        assert doc["metadata"]["namespace"] == "crawl2serve"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "crawl2serve"


@pytest.mark.parametrize("name,doc", DOCS, ids=[n for n, _ in DOCS])
def test_only_kuberay_fields(name, doc):
    schema = RAYCLUSTER_SPEC if doc["kind"] == "RayCluster" else RAYJOB_SPEC
    assert unknown_chart_keys(doc["spec"], schema) == []
    if doc["kind"] == "RayJob":
        assert doc["spec"]["submissionMode"] in RAY_ENUMS["submissionMode"]
    for spec in ray_cluster_specs(doc):
        mode = spec.get("autoscalerOptions", {}).get("upscalingMode")
        assert mode is None or mode in RAY_ENUMS["upscalingMode"]
        assert "template" in spec["headGroupSpec"] and "rayStartParams" in spec["headGroupSpec"]
        for group in spec["workerGroupSpecs"]:  # required before KubeRay 1.3 (no omitempty)
            assert {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(group)
            assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]


def test_the_key_trees_catch_a_misspelled_field():
    spec = yaml.safe_load(yaml.safe_dump(by_kind("RayCluster")["spec"]))
    spec["workerGroupSpecs"][0]["maxReplica"] = 3
    spec["enableInTreeAutoscalling"] = True
    assert unknown_chart_keys(spec, RAYCLUSTER_SPEC) == ["workerGroupSpecs[0].maxReplica", "enableInTreeAutoscalling"]


@pytest.mark.parametrize("name,doc", DOCS, ids=[n for n, _ in DOCS])
def test_every_pod_validates_against_kubernetes(name, doc):
    for where, template in ray_pod_templates(doc):
        labels = template.get("metadata", {}).get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "crawl2serve", where
        validate(pod(template["spec"], name=where.replace(" ", "-"), labels=labels))
    for spec in ray_cluster_specs(doc):
        autoscaler = spec["autoscalerOptions"]["resources"]
        validate(pod({"containers": [{"name": "autoscaler", "image": "i", "resources": autoscaler}]}))


@pytest.mark.parametrize("name,doc", DOCS, ids=[n for n, _ in DOCS])
def test_references_resolve_and_versions_match(name, doc):
    claims = {d["metadata"]["name"] for _, d in k8s_docs() if d["kind"] == "PersistentVolumeClaim"}
    configmaps = {d["metadata"]["name"] for _, d in k8s_docs() if d["kind"] == "ConfigMap"}
    image = f"{CODE_LOCATION['image']['repository']}:{CODE_LOCATION['image']['tag']}"
    pin = next(
        d
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("ray==")
    )
    for spec in ray_cluster_specs(doc):
        assert spec["rayVersion"] == pin.split("==")[1] == importlib.metadata.version("ray")
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # shards run on workers only
        for group in spec["workerGroupSpecs"]:
            (container,) = group["template"]["spec"]["containers"]
            cpus = group["rayStartParams"]["num-cpus"]
            assert cpus == container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"]
    for where, template in ray_pod_templates(doc):
        spec = template["spec"]
        assert spec["serviceAccountName"] == HELM["serviceAccount"]["name"], where
        for container in spec["containers"]:
            assert container["image"] == image, f"{where}: Ray Client needs the step pods' image (Ray, Python, code)"
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps
            for env in container.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}):
                    assert env["valueFrom"]["secretKeyRef"]["name"] == HELM["global"]["postgresqlSecretName"]
            mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
            if where != "submitter":
                assert mounts["data"] == configmap_env()["CRAWL2SERVE_DATA_ROOT"], f"{where}: the data root as a path"
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_the_configmap_points_the_corpus_executor_at_the_clusters_head(production_env):
    from crawl2serve.resources import build_resources

    cluster = by_kind("RayCluster")["metadata"]
    address = f"ray://{cluster['name']}-head-svc.{cluster['namespace']}.svc.cluster.local:10001"
    assert production_env["CRAWL2SERVE_RAY_ADDRESS"] == address
    executor = build_resources("production")["corpus_executor"]
    assert (executor.backend, executor.address, executor.max_retries) == ("ray", address, 3)
    head = by_kind("RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert 10001 in {p["containerPort"] for p in head["ports"]}


def test_the_rayjob_materializes_the_corpus_stages_of_the_definitions():
    from crawl2serve.assets.partitions import DAY_FORMAT, START
    from crawl2serve.definitions import defs

    job = by_kind("RayJob")
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:5] == ["dagster", "asset", "materialize", "-m", "crawl2serve.definitions"]
    selected = set(args[args.index("--select") + 1].split(","))
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert selected <= keys and {"extracted_pages", "clean_documents", "document_rejections"} <= selected
    day = datetime.strptime(args[args.index("--partition") + 1], DAY_FORMAT)  # a crawl day of the partitions
    assert day.date() >= START.date()
    (head,) = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in head["env"]}
    assert env["CRAWL2SERVE_RAY_ADDRESS"] == "auto"  # the job's own cluster, overriding the ConfigMap's address
    assert job["spec"]["shutdownAfterJobFinishes"] is True
