"""The trainer across N pods (``TrainingLauncher(mode="k8s", nnodes=N)``, assets/training/multinode.py), validated
offline: the head pod PipesK8sClient builds, the workers' Indexed Job and the headless Service, and the objects'
lifetime around the launch. No cluster is contacted: the Kubernetes API is a double (or the real client over a
fake transport), and the tests fail if anything tries to load a kubeconfig or call an API server."""

import json
import re

import kubernetes
import pytest
from k8s_checks import ApiResponse, api_dict, validate
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from crawl2serve.assets.training.multinode import (
    MAX_NAME,
    NODE_INDEX_ENV,
    RUN_LABEL,
    NodeNames,
    Rendezvous,
    node_objects,
    rendezvous_service,
    torchrun_command,
    worker_job,
)
from crawl2serve.resources.training import TrainingLauncher

LAUNCHER = dict(
    mode="k8s",
    image="registry.local/crawl2serve-trainer:1.0",
    gpus=8,
    cpu="32",
    memory="512Gi",
    node_selector={"pool": "h200"},
    service_account="trainer",
    data_claim="crawl2serve-data",
)
CONFIG = "/data/lora_adapter/_/run-x/train_config.json"
PIPES_ENV = {"DAGSTER_PIPES_CONTEXT": "e30=", "DAGSTER_PIPES_MESSAGES": "e30="}
TRAINER_ENV = {"HF_HUB_OFFLINE": "1", "MLFLOW_RUN_ID": "0f3c", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
RUN_ID = "6f0c2d1e-9a4b-4c55-8e0e-2b7d1c9a0f11"


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
    from k8s_checks import refuse_clusters

    refuse_clusters(monkeypatch)


def launch(nnodes: int, **config):
    """(launcher, names, head pod, Service, Job) of one launch, the head as PipesK8sClient builds it."""
    from dagster_k8s.pipes import build_pod_body

    launcher = TrainingLauncher(**{**LAUNCHER, **config}, nnodes=nnodes)
    names = NodeNames.for_step(RUN_ID, "lora_adapter")
    head = build_pod_body(
        pod_name="dagster-pipes-check",
        image=launcher.image,
        command=launcher.command(CONFIG, names),
        env_vars={**PIPES_ENV, **TRAINER_ENV},
        base_pod_meta=launcher.pod_meta(names),
        base_pod_spec=launcher.pod_spec(names),
    )
    service, job = launcher.node_manifests(names, CONFIG, TRAINER_ENV)
    return launcher, names, {"apiVersion": "v1", "kind": "Pod", **api_dict(head)}, service, job


def flags(command: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in command if a.startswith("--") and "=" in a)


def rdzv_conf(command: list[str]) -> dict[str, str]:
    return dict(kv.split("=") for kv in flags(command)["rdzv-conf"].split(","))


def worker_pod(job: dict, index: int) -> dict:
    """A pod of the Indexed Job as the Job controller makes it: hostname <job>-<index>, the index annotated."""
    template = json.loads(json.dumps(job["spec"]["template"]))
    template["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": str(index)}
    template["spec"]["hostname"] = f"{job['metadata']['name']}-{index}"
    return {"apiVersion": "v1", "kind": "Pod", **template}


def expanded(command: list[str], pod: dict) -> list[str]:
    """``command`` with ``$(VAR)`` expanded from the container's env, as the kubelet does (downward API too)."""
    env = {}
    for e in pod["spec"]["containers"][0]["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            key = re.fullmatch(r"metadata\.annotations\['(.+)'\]", path).group(1)
            env[e["name"]] = pod["metadata"]["annotations"][key]
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in command]


@pytest.mark.parametrize("nnodes", [2, 4])
def test_node_manifests_validate(nnodes):
    launcher, names, head, service, job = launch(nnodes)
    for manifest in (head, service, job, worker_pod(job, nnodes - 2)):
        validate(manifest)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == nnodes - 1  # nodes 1..N-1; node 0 is the head pod
    assert spec["template"]["spec"]["restartPolicy"] == head["spec"]["restartPolicy"] == "Never"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert {m["metadata"]["namespace"] for m in (service, job)} == {launcher.namespace}


def test_every_node_has_a_dns_name_and_the_head_is_rank_0():
    """The Service selects the head and every worker and is their subdomain; the rendezvous endpoint is the
    head's name; each worker's --local-addr is its own name; the head's sorts first (node rank 0)."""
    nnodes = 12  # workers 0..10: "-10" sorts before "-2", and still after the head
    _, names, head, service, job = launch(nnodes)
    selector = service["spec"]["selector"].items()
    assert selector <= head["metadata"]["labels"].items()
    assert selector <= job["spec"]["template"]["metadata"]["labels"].items()
    subdomain = service["metadata"]["name"]
    head_dns = f"{head['spec']['hostname']}.{head['spec']['subdomain']}"
    assert head["spec"]["subdomain"] == job["spec"]["template"]["spec"]["subdomain"] == subdomain
    head_command = head["spec"]["containers"][0]["command"]
    assert flags(head_command)["rdzv-endpoint"] == f"{head_dns}:{service['spec']['ports'][0]['port']}"
    assert flags(head_command)["local-addr"] == head_dns
    assert head["spec"]["containers"][0]["ports"][0]["containerPort"] == service["spec"]["ports"][0]["targetPort"]
    addresses = []
    for index in range(nnodes - 1):
        pod = worker_pod(job, index)
        command = expanded(pod["spec"]["containers"][0]["command"], pod)
        assert flags(command)["local-addr"] == f"{pod['spec']['hostname']}.{subdomain}"
        assert flags(command)["rdzv-endpoint"] == flags(head_command)["rdzv-endpoint"]
        addresses.append(flags(command)["local-addr"])
    assert len(set(addresses)) == nnodes - 1
    assert sorted([*addresses, head_dns])[0] == head_dns  # torch's rendezvous numbers nodes in address order
    assert (rdzv_conf(head_command)["is_host"], rdzv_conf(command)["is_host"]) == ("1", "0")  # the head's store


def test_head_and_workers_run_the_same_pod_but_for_their_role():
    launcher, names, head, service, job = launch(3)
    h, w = head["spec"], job["spec"]["template"]["spec"]
    for key in ("volumes", "nodeSelector", "tolerations", "serviceAccountName", "subdomain"):
        assert h[key] == w[key], key
    hc, wc = h["containers"][0], w["containers"][0]
    for key in ("image", "resources", "volumeMounts", "ports"):
        assert hc[key] == wc[key], key
    assert {e["name"]: e.get("value") for e in hc["env"]} == {
        **{e["name"]: e.get("value") for e in wc["env"] if e["name"] != NODE_INDEX_ENV},
        **PIPES_ENV,  # Pipes talks to the head alone: only global rank 0 reports
    }
    assert {"name": "TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "value": "1"} in wc["env"]
    assert {"name": "data", "mountPath": "/data"} in wc["volumeMounts"]
    assert wc["resources"]["limits"]["nvidia.com/gpu"] == "8"
    head_flags, worker_flags = flags(hc["command"]), flags(wc["command"])
    assert {k: v for k, v in head_flags.items() if k not in ("local-addr", "rdzv-conf")} == {
        k: v for k, v in worker_flags.items() if k not in ("local-addr", "rdzv-conf")
    }
    assert (head_flags["nnodes"], head_flags["nproc-per-node"]) == ("3", "8")  # 24 ranks, one FSDP world
    assert hc["command"][-4:] == ["-m", "crawl2serve.assets.training.trainer", "--config", CONFIG]
    assert rdzv_conf(hc["command"])["join_timeout"] == str(launcher.rendezvous_timeout_s)


def test_a_lost_node_is_replaced_and_the_ranks_restart():
    launcher, _, head, _, job = launch(2, max_restarts=5, node_loss_timeout_s=30)
    (rule,) = job["spec"]["podFailurePolicy"]["rules"]
    assert rule == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert job["spec"]["backoffLimit"] == 5
    for spec in (head["spec"], job["spec"]["template"]["spec"]):
        assert flags(spec["containers"][0]["command"])["max-restarts"] == "5"
        lost = {t["key"]: t["tolerationSeconds"] for t in spec["tolerations"] if t.get("effect") == "NoExecute"}
        assert lost == {"node.kubernetes.io/unreachable": 30, "node.kubernetes.io/not-ready": 30}
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])


def test_one_node_keeps_its_standalone_pod():
    launcher = TrainingLauncher(**LAUNCHER)
    assert launcher.command(CONFIG)[:3] == ["torchrun", "--standalone", "--nproc-per-node=8"]
    assert not {"hostname", "subdomain"} & set(launcher.pod_spec()) and launcher.describe() == "k8s x8"
    assert TrainingLauncher(**LAUNCHER, nnodes=2).describe() == "k8s 2 nodes x 8"
    with pytest.raises(ValueError, match="NodeNames"):
        TrainingLauncher(**LAUNCHER, nnodes=2).command(CONFIG)


def test_more_than_one_node_needs_kubernetes():
    with pytest.raises(ValidationError, match="'nnodes' is 2: more than one node runs on Kubernetes"):
        TrainingLauncher(mode="local", nnodes=2)
    with pytest.raises(ValidationError, match="nnodes"):
        TrainingLauncher(mode="k8s", nnodes=0)


def test_a_rendezvous_refuses_what_cannot_run():
    with pytest.raises(ValueError, match="nnodes must be at least 2, got 1"):
        Rendezvous(run_id="r", endpoint="h:1", nnodes=1)
    with pytest.raises(ValueError, match="needs local_addr"):
        torchrun_command(["torchrun"], 1, CONFIG, Rendezvous(run_id="r", endpoint="h:1", nnodes=2))
    with pytest.raises(ValueError, match="nnodes must be at least 2"):
        worker_job(NodeNames("trainer-x"), "ns", {"spec": {"containers": [{}]}}, nnodes=1, backoff_limit=0)


def test_launch_names_are_dns_labels_unique_per_step_and_retry():
    long = NodeNames.for_step(RUN_ID, "a_very_long_asset_name_that_goes_on_and_on")
    assert len(long.name) <= MAX_NAME and long.name.startswith("trainer-a-very-long-asset-name-")
    assert len(f"{long.job}-999") <= 63  # a worker's hostname
    names = {
        NodeNames.for_step(RUN_ID, step, retry).name for step in ("lora_adapter", "base_model") for retry in (0, 1)
    }
    assert len(names) == 4
    for bad in ("Trainer", "9trainer", "trainer_x", "t" * (MAX_NAME + 1)):
        with pytest.raises(ValueError, match="DNS label"):
            NodeNames(bad)


def test_production_nodes(production_env, monkeypatch):
    from crawl2serve.resources import build_resources

    assert build_resources("production")["training_launcher"].nnodes == 1
    monkeypatch.setenv("CRAWL2SERVE_TRAINER_NODES", "4")
    launcher = build_resources("production")["training_launcher"]
    assert (launcher.nnodes, launcher.data_claim) == (4, production_env["CRAWL2SERVE_DATA_CLAIM"])
    service, job = launcher.node_manifests(NodeNames.for_step(RUN_ID, "base_model"), CONFIG, TRAINER_ENV)
    validate(service)
    validate(job)
    claim = {"name": "data", "persistentVolumeClaim": {"claimName": production_env["CRAWL2SERVE_DATA_CLAIM"]}}
    assert claim in job["spec"]["template"]["spec"]["volumes"]  # checkpoints and data on the shared volume


# -- the objects' lifetime (node_objects) ------------------------------------------------------------------------------


class FakeNodeApi:
    """A double of CoreV1Api + BatchV1Api: objects in a dict; deleting an unknown one raises a 404 ApiException.
    Only methods that exist on the real APIs can be called."""

    REAL = (kubernetes.client.CoreV1Api, kubernetes.client.BatchV1Api)

    def __init__(self, fail_deletes_with: int | None = None):
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.calls: list[tuple] = []
        self.fail_deletes_with = fail_deletes_with

    def __getattr__(self, method: str):
        if not any(hasattr(api, method) for api in self.REAL):
            raise AttributeError(f"the Kubernetes client has no {method}")
        verb, kind = re.match(r"(create|delete)_namespaced_(\w+)$", method).groups()

        def call(*args, **kwargs):
            if verb == "create":
                namespace, body = args
                self.calls.append((method, body["metadata"]["name"]))
                self.objects[(kind, namespace, body["metadata"]["name"])] = json.loads(json.dumps(body))
                return body
            name, namespace = args
            self.calls.append((method, name, kwargs))
            if self.fail_deletes_with:
                raise ApiException(status=self.fail_deletes_with, reason="Forbidden")
            if self.objects.pop((kind, namespace, name), None) is None:
                raise ApiException(status=404, reason="Not Found")

        return call


def test_node_objects_live_as_long_as_the_launch():
    launcher, names, _, service, job = launch(3)
    api = FakeNodeApi()
    api.objects[("job", "crawl2serve", names.job)] = {"leftover": True}  # a step killed before it cleaned up
    with pytest.raises(RuntimeError, match="the head pod failed"), node_objects([service, job], api_client=api) as made:
        assert made == [f"service/crawl2serve/{names.service} created", f"job/crawl2serve/{names.job} created"]
        assert api.objects[("job", "crawl2serve", names.job)] == job
        raise RuntimeError("the head pod failed")
    assert api.objects == {}  # deleted, also after a failure
    background = {"propagation_policy": "Background"}  # the Job's pods go with it
    assert api.calls == [
        ("delete_namespaced_service", names.service, background),  # 404: nothing left over
        ("create_namespaced_service", names.service),
        ("delete_namespaced_job", names.job, background),  # the leftover
        ("create_namespaced_job", names.job),
        ("delete_namespaced_job", names.job, background),
        ("delete_namespaced_service", names.service, background),
    ]


def test_node_objects_errors():
    names = NodeNames("trainer-x")
    service = rendezvous_service(names, "crawl2serve", {})
    with pytest.raises(ApiException) as err, node_objects([service], api_client=FakeNodeApi(fail_deletes_with=403)):
        pass
    assert err.value.status == 403
    deployment = {"kind": "Deployment", "metadata": {"name": "x"}}
    with pytest.raises(ValueError, match="unsupported kind 'Deployment'"), node_objects([deployment], FakeNodeApi()):
        pass


def test_node_objects_through_the_real_client(monkeypatch):
    """The real CoreV1Api/BatchV1Api accept the dict manifests (serialization, URLs, verbs), over a fake transport."""
    _, names, _, service, job = launch(2)
    requests = []

    def request(method, url, query_params=None, headers=None, post_params=None, body=None, **_):
        path = url.split("://", 1)[-1].split("/", 1)[1]
        requests.append((method, path, body if method == "POST" else dict(query_params or [])))
        if method == "DELETE" and len([r for r in requests if r[1] == path]) == 1:
            raise ApiException(http_resp=ApiResponse(404, {"kind": "Status", "code": 404}))
        return ApiResponse(200 if method == "DELETE" else 201, body if method == "POST" else {"kind": "Status"})

    monkeypatch.undo()  # this test drives the real client: only its transport is faked (no_cluster lifted)
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host="https://k8s.invalid"))
    monkeypatch.setattr(client.rest_client, "request", request)
    with node_objects([service, job], api_client=client):
        pass
    base = "api/v1/namespaces/crawl2serve/services", "apis/batch/v1/namespaces/crawl2serve/jobs"
    assert [(m, p) for m, p, _ in requests] == [
        ("DELETE", f"{base[0]}/{names.service}"),
        ("POST", base[0]),
        ("DELETE", f"{base[1]}/{names.job}"),
        ("POST", base[1]),
        ("DELETE", f"{base[1]}/{names.job}"),
        ("DELETE", f"{base[0]}/{names.service}"),
    ]
    posted_job = requests[3][2]
    assert posted_job["spec"]["completionMode"] == "Indexed" and posted_job["metadata"]["name"] == names.job
    assert requests[-2][2] == {"propagationPolicy": "Background"}  # the Job's pods go with it


# -- a whole launch: TrainingLauncher.run through the real PipesK8sClient, against a double of the API server ---------

HEAD = """
import sys
from crawl2serve.assets.training.trainer import Reporter

reporter = Reporter(rank=0)
reporter.metrics({"step": 1, "loss": 2.5})
reporter.result({"steps": 1, "world_size": 24})
reporter.close()
sys.exit(int(sys.argv[1]))
"""


class FakeApiServer:
    """A double of the Kubernetes API server behind the ``kubernetes`` client's HTTP transport: pods, Services
    and Jobs in a dict. Creating a pod "runs" its container: a stand-in for the trainer's rank 0 (the Reporter,
    with the pod's environment: Pipes' context and message channel), whose output becomes the pod's log; the pod
    shows running and ready until its log is read, then terminated with ``exit_code``."""

    def __init__(self, exit_code: int = 0):
        self.exit_code = exit_code
        self.objects: dict[tuple[str, str], dict] = {}
        self.created: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.logs: dict[str, list[bytes]] = {}
        self.log_read = False

    def request(self, method, url, query_params=None, headers=None, post_params=None, body=None, **kw):
        path = "/" + url.split("://", 1)[-1].split("/", 1)[1].split("?", 1)[0]
        ns, kind, name, log = re.fullmatch(
            r"/api(?:s/batch)?/v1/namespaces/([^/]+)/(pods|services|jobs)(?:/([^/]+))?(/log)?", path
        ).groups()
        self.requests.append((method, kind if name is None or method == "POST" else f"{kind}/{name}"))
        if method == "POST":
            self.objects[(kind, body["metadata"]["name"])] = self.created[kind] = body
            if kind == "pods":
                self._run(body)
            return ApiResponse(201, body)
        if method == "DELETE":
            if self.objects.pop((kind, name), None) is None:
                raise ApiException(http_resp=ApiResponse(404, {"kind": "Status", "code": 404}))
            return ApiResponse(200, {"kind": "Status", "status": "Success"})
        if log:
            self.log_read = True
            return iter(self.logs[name]) if kw.get("_preload_content") is False else ApiResponse(200, "")
        pods = [self._with_status(o) for (k, _), o in self.objects.items() if k == "pods"]
        return ApiResponse(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods})

    def _run(self, pod: dict) -> None:
        import subprocess
        import sys

        from k8s_checks import REPO

        container = pod["spec"]["containers"][0]
        env = {**{e["name"]: e["value"] for e in container["env"] if "value" in e}, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-c", HEAD, str(self.exit_code)], env=env, capture_output=True, text=True
        )
        lines = (done.stdout + done.stderr).splitlines()
        self.logs[pod["metadata"]["name"]] = [
            f"2026-12-01T00:00:{i:02d}.000000Z {ln}\n".encode() for i, ln in enumerate(lines)
        ]

    def _with_status(self, pod: dict) -> dict:
        state = {"terminated": {"exitCode": self.exit_code}} if self.log_read else {"running": {}}
        name = pod["spec"]["containers"][0]["name"]
        status = {"name": name, "image": "i", "imageID": "", "restartCount": 0, "ready": True, "state": state}
        return {**pod, "status": {"phase": "Running", "containerStatuses": [status]}}


def launched(monkeypatch, exit_code: int = 0, nnodes: int = 3):
    """Materialize an asset whose trainer TrainingLauncher(nnodes=...) runs: (result, the API server double)."""
    import dagster as dg

    server = FakeApiServer(exit_code)
    monkeypatch.undo()  # the kubernetes client runs for real, up to its transport (no_cluster lifted)
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda *a, **k: None)
    monkeypatch.setattr(kubernetes.config, "load_kube_config", lambda *a, **k: None)
    monkeypatch.setattr(
        kubernetes.client.rest.RESTClientObject, "request", lambda self, *a, **k: server.request(*a, **k)
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    launcher = TrainingLauncher(**LAUNCHER, nnodes=nnodes)

    @dg.asset
    def trained(context: dg.AssetExecutionContext):
        invocation = launcher.run(context, CONFIG, env={"HF_HUB_OFFLINE": "1"})  # no MLflow server here
        assert [m["step"] for m in invocation.get_custom_messages()] == [1]
        return invocation.get_materialize_result()

    return dg.materialize([trained], raise_on_error=False), server


def test_a_launch_runs_the_head_through_pipes_while_its_service_and_workers_exist(monkeypatch):
    result, server = launched(monkeypatch)
    assert result.success
    assert result.asset_materializations_for_node("trained")[0].metadata["world_size"].value == 24
    names = NodeNames.for_step(result.run_id, "trained")
    verbs = [r for r in server.requests if not (r[0] == "GET" and r[1] == "pods")]  # less the polling
    head = server.created["pods"]["metadata"]["name"]
    assert verbs == [
        ("DELETE", f"services/{names.service}"),  # a leftover of the same name: none (404)
        ("POST", "services"),
        ("DELETE", f"jobs/{names.job}"),
        ("POST", "jobs"),
        ("POST", "pods"),  # the head, by PipesK8sClient
        ("GET", f"pods/{head}"),  # its log: Pipes' messages
        ("DELETE", f"pods/{head}"),
        ("DELETE", f"jobs/{names.job}"),
        ("DELETE", f"services/{names.service}"),
    ]
    assert server.objects == {}
    pod, job = server.created["pods"], server.created["jobs"]
    validate({"apiVersion": "v1", "kind": "Pod", **pod})
    validate(job)
    assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == (names.head_host, names.service)
    assert flags(pod["spec"]["containers"][0]["command"])["rdzv-endpoint"] == names.endpoint
    assert flags(job["spec"]["template"]["spec"]["containers"][0]["command"])["rdzv-endpoint"] == names.endpoint
    assert pod["metadata"]["labels"][RUN_LABEL] == job["spec"]["template"]["metadata"]["labels"][RUN_LABEL]
    assert "DAGSTER_PIPES_CONTEXT" in {e["name"] for e in pod["spec"]["containers"][0]["env"]}


def test_a_failed_head_still_removes_the_workers_and_their_service(monkeypatch):
    result, server = launched(monkeypatch, exit_code=1)
    assert not result.success
    assert server.objects == {}  # the Job (with its pods) and the Service deleted, the head pod too
    assert [r for r in server.requests if r[0] == "DELETE"][-2:] == [
        ("DELETE", f"jobs/{server.created['jobs']['metadata']['name']}"),
        ("DELETE", f"services/{server.created['services']['metadata']['name']}"),
    ]


def test_one_node_is_one_pod_as_before(monkeypatch):
    result, server = launched(monkeypatch, nnodes=1)
    assert result.success and set(server.created) == {"pods"} and server.objects == {}
    pod = server.created["pods"]
    assert pod["spec"]["containers"][0]["command"][:2] == ["torchrun", "--standalone"]
    assert not {"hostname", "subdomain"} & set(pod["spec"])
