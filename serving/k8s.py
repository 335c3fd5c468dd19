"""SGLang on Kubernetes: the engine as a Deployment + Service, applied through the ``kubernetes`` client
(framework-free; the Dagster resource :class:`resources.serving.ServingEngine` fills the arguments).

The container runs exactly the command a local engine runs (:func:`serving.engines.sglang_command`), bound
to ``0.0.0.0`` inside the pod, with the GPUs as ``nvidia.com/gpu`` limits, shared memory for NCCL/torch as a
memory-backed ``emptyDir`` at ``/dev/shm``, and the data root (models, adapters) as a volume claim mounted at
``data_mount``: the same path the serving asset writes the merged anchor and adapters to, so every path in
the command means the same thing in the pod and in the Dagster step that rendered it.

Manifests are plain dicts in the Kubernetes API's own (camelCase) spelling, ready for ``kubectl apply -f``
or :func:`apply_manifests`.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from .engines import OFFLINE_ENV, SGLangEngine, sglang_command

PART_OF = "crawl2serve"
# The one home of the GPU pods' tolerations (the engine here, the trainer pod, the GPU step pods of
# pipelines/k8s.py; static manifests are checked against it, tests/deploy/test_tolerations.py): GPU node pools
# carry this taint (GKE and AKS set it, the GPU operator documents it), so that only pods asking for it land there.
GPU_TOLERATIONS: tuple[dict[str, str], ...] = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/component": "inference-engine",
    }


def service_url(name: str, namespace: str, port: int) -> str:
    """The Service's in-cluster address: ``http://<name>.<namespace>.svc.cluster.local:<port>``."""
    return f"http://{name}.{namespace}.svc.cluster.local:{port}"


def sglang_manifests(
    *,
    name: str,
    namespace: str,
    image: str,
    model_path: str,
    served_name: str = "crawl2serve",
    port: int = 30000,
    gpus: int = 1,
    adapters: Mapping[str, str] | None = None,
    extra_args: Iterable[str] | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Iterable[Mapping[str, Any]] | None = GPU_TOLERATIONS,
    data_claim: str | None = None,
    data_mount: str = "/data",
    max_lora_rank: int = 64,
    lora: bool = True,
    python: str = "python3",
    shm_size: str | None = "16Gi",
    replicas: int = 1,
    startup_timeout_s: int = 1800,
) -> list[dict]:
    """An ``apps/v1`` Deployment and a ``v1`` Service running SGLang's ``launch_server`` on ``gpus`` GPUs.

    ``model_path`` and the ``adapters`` paths are paths inside the pod: under ``data_mount`` when the data root
    comes from the ``data_claim`` volume, or baked into ``image``. ``gpus > 1`` adds ``--tp-size gpus`` (tensor
    parallel over the pod's GPUs) unless ``extra_args`` already sets it. ``lora=False``: plain weights only (the
    LoRA-free champion engine; ``adapters`` must then be empty). The Deployment uses the ``Recreate``
    strategy: a rolling update would need a second set of free GPUs before the old pod lets go of its own.
    """
    if gpus < 1:
        raise ValueError(f"gpus={gpus}: SGLang needs at least one GPU")
    if adapters and not lora:
        raise ValueError("adapters need lora=True (an engine without LoRA slots cannot load them)")
    if not name or len(name) > 63:
        raise ValueError(f"name={name!r}: a Kubernetes name of 1-63 characters is needed")
    mount = data_mount.rstrip("/") or "/"
    if data_claim:
        outside = [p for p in [model_path, *(adapters or {}).values()] if not _under(p, mount)]
        if outside:
            raise ValueError(
                f"{outside[0]} is not under data_mount {data_mount}: the pod would not see it "
                f"(paths must be inside the volume claim {data_claim!r})"
            )
    args = list(extra_args or [])
    if gpus > 1 and not {"--tp-size", "--tp"} & set(args):
        args += ["--tp-size", str(gpus)]
    command = sglang_command(
        python=python,
        model_path=model_path,
        host="0.0.0.0",
        port=port,
        served_name=served_name,
        adapters=dict(adapters) if adapters else None,
        max_lora_rank=max_lora_rank,
        lora=lora,
        extra_args=args,
    )
    gpu = str(gpus)
    probe = {"httpGet": {"path": SGLangEngine.health_path, "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
    container = {
        "name": "sglang",
        "image": image,
        "command": command,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in OFFLINE_ENV.items()],
        "resources": {"requests": {"nvidia.com/gpu": gpu}, "limits": {"nvidia.com/gpu": gpu}},
        # Loading weights (and CUDA graph capture) takes minutes: the startup probe holds the others off.
        "startupProbe": {**probe, "failureThreshold": max(1, startup_timeout_s // 10)},
        "readinessProbe": {**probe, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 5},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    shm: dict[str, Any] = {"medium": "Memory"}
    if shm_size:
        shm["sizeLimit"] = shm_size
    volumes: list[dict] = [{"name": "dshm", "emptyDir": shm}]
    if data_claim:
        container["volumeMounts"].append({"name": "data", "mountPath": data_mount})
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": data_claim}})
    # The kubelet restarts a dead or unresponsive engine (liveness probe) with its own backoff: the local
    # supervisor's job (serving/supervisor.py) on a cluster. Always is a Deployment's only policy; said here.
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 60,
    }
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = [dict(t) for t in tolerations]
    meta = {"name": name, "namespace": namespace, "labels": labels(name)}
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": labels(name)}, "spec": pod_spec},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": dict(meta, labels=labels(name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def _under(path: str, mount: str) -> bool:
    return mount == "/" or path == mount or path.startswith(mount + "/")


# -- applying ---------------------------------------------------------------------------------------------------

_KINDS = {  # kind -> (API: "apps" | "core", method suffix)
    "Deployment": ("apps", "deployment"),
    "Service": ("core", "service"),
    "ConfigMap": ("core", "config_map"),
}


def default_api_client():
    """A ``kubernetes.client.ApiClient`` from the in-cluster service account, else from the kubeconfig."""
    import kubernetes

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


def apply_manifests(manifests: Iterable[Mapping[str, Any]], api_client=None) -> list[str]:
    """Create each manifest, or replace it where it exists (read → replace; a 404 → create). Returns one line
    per object, e.g. ``"deployment/crawl2serve/sglang replaced"``.

    ``api_client``: a ``kubernetes.client.ApiClient`` (default: in-cluster config, else the kubeconfig), or any
    object with the ``AppsV1Api``/``CoreV1Api`` methods used here (``read_namespaced_deployment``,
    ``create_namespaced_service``, ...), which is how the tests pass a double of the API.
    """
    from kubernetes.client.exceptions import ApiException

    manifests = list(manifests)
    for m in manifests:
        if m.get("kind") not in _KINDS:
            raise ValueError(f"apply_manifests: unsupported kind {m.get('kind')!r} (known: {', '.join(_KINDS)})")
    apis = _apis(api_client)
    done = []
    for manifest in manifests:
        group, suffix = _KINDS[manifest["kind"]]
        api = apis[group]
        name, namespace = manifest["metadata"]["name"], manifest["metadata"].get("namespace", "default")
        try:
            current = getattr(api, f"read_namespaced_{suffix}")(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            getattr(api, f"create_namespaced_{suffix}")(namespace, manifest)
            action = "created"
        else:
            getattr(api, f"replace_namespaced_{suffix}")(name, namespace, _for_replace(manifest, current))
            action = "replaced"
        done.append(f"{manifest['kind'].lower()}/{namespace}/{name} {action}")
    return done


def _apis(api_client) -> dict[str, Any]:
    client = api_client if api_client is not None else default_api_client()
    if hasattr(client, "read_namespaced_deployment"):
        return {"apps": client, "core": client}
    import kubernetes

    return {"apps": kubernetes.client.AppsV1Api(client), "core": kubernetes.client.CoreV1Api(client)}


def _for_replace(manifest: Mapping[str, Any], current: Any) -> dict:
    """The body of a replace (PUT): the manifest, plus what the server owns and a PUT must carry over: the
    ``resourceVersion`` (optimistic concurrency) and, for a Service, its allocated ``clusterIP(s)``."""
    body = {**manifest, "metadata": dict(manifest["metadata"])}
    version = _field(current, "metadata", "resource_version", "resourceVersion")
    if version:
        body["metadata"]["resourceVersion"] = version
    if manifest["kind"] == "Service":
        spec = dict(body.get("spec", {}))
        for snake, camel in (("cluster_ip", "clusterIP"), ("cluster_ips", "clusterIPs")):
            value = _field(current, "spec", snake, camel)
            if value and camel not in spec:
                spec[camel] = value
        body["spec"] = spec
    return body


def _field(obj: Any, section: str, snake: str, camel: str):
    """``obj.<section>.<snake>`` on a client model, or ``obj[section][camel]`` on a plain dict."""
    part = obj.get(section) if isinstance(obj, Mapping) else getattr(obj, section, None)
    if part is None:
        return None
    if isinstance(part, Mapping):
        return part.get(camel, part.get(snake))
    return getattr(part, snake, None)
