"""How the trainer starts: torchrun on one node, or on N nodes that meet in a c10d rendezvous, and on Kubernetes
the objects that carry such a rendezvous (framework-free: plain dicts in the API's camelCase, and the
``kubernetes`` client to create and delete them).

One node is ``torchrun --standalone --nproc-per-node G``. N nodes are N torchrun agents, each with G ranks, that
meet in torchrun's dynamic c10d rendezvous (:class:`Rendezvous`) hosted by node 0, the *head*: one FSDP world of
N x G ranks, checkpoints written by global rank 0 on the shared volume. ``--max-restarts`` lets an agent restart
its ranks when one fails; the dynamic rendezvous lets a replaced node join again (a static rendezvous,
``--node-rank``, cannot take a node whose agent is new), and every rank then resumes from the newest checkpoint.

On Kubernetes (``TrainingLauncher(mode="k8s", nnodes=N)``, :class:`NodeNames` names it all from one DNS label):

- the head is the pod ``PipesK8sClient`` runs, exactly as for one node (Dagster Pipes context in, metrics and the
  result out of its log), with hostname ``<name>-head`` in the subdomain ``<name>``;
- nodes 1..N-1 are an Indexed Job ``<name>-worker`` (``completionMode: Indexed``, completions = parallelism =
  N-1: pods ``<name>-worker-<index>``) with the same pod spec and a worker's command (:func:`worker_job`);
- a headless Service ``<name>`` (``publishNotReadyAddresses``) gives each pod the DNS name ``<host>.<name>``: the
  rendezvous endpoint is ``<name>-head.<name>:29400`` (:func:`rendezvous_service`).

Why not one Indexed Job of N pods: PipesK8sClient (dagster-k8s 0.29 / Dagster 1.13) launches a pod, not a Job,
and the ``k8s_job_op`` that launches Jobs has no Pipes (no metrics, no result, only printed logs); so Pipes runs
node 0, the Job the others. The head's address sorts before every worker's and torch's rendezvous hands out node
ranks in the order of the nodes' addresses (``--local-addr``), so global rank 0 — the rank that reports to
Dagster and writes checkpoints — is always on the head.

Losing a node: a worker pod that fails (its node lost, preempted, drained: ``DisruptionTarget``, not counted
against ``backoffLimit`` by the pod failure policy; other failures counted) is replaced by the Job under the same
hostname; the surviving agents restart their ranks (``--max-restarts``, or because a node waits to join) and the
new pod joins the next rendezvous round. Losing the head fails the Dagster step (as losing the one pod of a
one-node run does); materializing again resumes from the newest checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

TRAINER_MODULE = "crawl2serve.assets.training.trainer"
RENDEZVOUS_PORT = 29400
RUN_LABEL = "crawl2serve/training-run"  # every pod of one launch; the Service selects it
NODE_LABEL = "crawl2serve/training-node"  # head | worker
NODE_INDEX_ENV = "NODE_INDEX"  # a worker's completion index (0..N-2), from the downward API
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
# The agents' shared TCPStore (torch >= 2.5) breaks the rendezvous after a node is replaced: the surviving rank 0
# keeps the previous round's store address and never publishes it to the new round, whose new node waits for it
# until it times out (measured here: 60 s, then the run fails; pytorch/pytorch#135712). Off, each round has its own.
MULTINODE_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


@dataclass(frozen=True)
class Rendezvous:
    """torchrun's dynamic c10d rendezvous of ``nnodes`` nodes: ``endpoint`` (host:port) is node 0's store.

    ``timeout_s`` bounds how long a node waits for the others to join (image pulls, a GPU node scaling up) and
    for the store to answer (a worker may start before the head's store listens); ``keep_alive_s``: how often a
    node tells the store it is alive (a node silent for 3 of them is dead, and the next round goes on without
    waiting for it)."""

    run_id: str
    endpoint: str
    nnodes: int
    timeout_s: int = 1800
    keep_alive_s: int = 5

    def __post_init__(self) -> None:
        if self.nnodes < 2:
            raise ValueError(f"rendezvous {self.run_id!r}: nnodes must be at least 2, got {self.nnodes}")

    def args(self, *, host: bool, local_addr: str) -> list[str]:
        """torchrun's arguments for one node: ``host`` for node 0 (it serves the store); ``local_addr``: the name
        the others reach this node by (rank 0's is their ``MASTER_ADDR``), which also orders the node ranks."""
        conf = (
            f"is_host={int(host)},join_timeout={self.timeout_s},read_timeout={self.timeout_s},"
            f"keep_alive_interval={self.keep_alive_s}"
        )
        return [
            f"--nnodes={self.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={self.endpoint}",
            f"--rdzv-id={self.run_id}",
            f"--rdzv-conf={conf}",
            f"--local-addr={local_addr}",
        ]


def torchrun_command(
    launcher: Sequence[str],
    nproc_per_node: int,
    config_path: str,
    rendezvous: Rendezvous | None = None,
    *,
    host: bool = True,
    local_addr: str | None = None,
    max_restarts: int = 0,
) -> list[str]:
    """The trainer under torchrun: ``launcher`` (``["torchrun"]`` or ``[python, "-m", "torch.distributed.run"]``),
    one node (``--standalone``) without ``rendezvous``, else one node of it (see :meth:`Rendezvous.args`)."""
    if rendezvous is None:
        nodes = ["--standalone"]
    else:
        if not local_addr:
            raise ValueError("torchrun_command: a node of a rendezvous needs local_addr")
        nodes = [*rendezvous.args(host=host, local_addr=local_addr), f"--max-restarts={max_restarts}"]
    return [*launcher, *nodes, f"--nproc-per-node={nproc_per_node}", "-m", TRAINER_MODULE, "--config", config_path]


# -- Kubernetes ------------------------------------------------------------------------------------------------------

MAX_NAME = 40  # <name>-worker-<index> is a pod hostname: a DNS label of at most 63 characters


@dataclass(frozen=True)
class NodeNames:
    """The names of one multi-node launch, from one DNS label ``name``: the Service, the head's hostname, the
    worker Job, the addresses the nodes know each other by, and the rendezvous endpoint."""

    name: str
    port: int = RENDEZVOUS_PORT

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", self.name) or len(self.name) > MAX_NAME:
            raise ValueError(f"training launch name {self.name!r}: a lowercase DNS label of at most {MAX_NAME} chars")

    @classmethod
    def for_step(cls, run_id: str, step: str, retry: int = 0) -> NodeNames:
        """Names for one Dagster step's launch: readable (``trainer-<step>-<run id>``), unique per run, step and
        retry (a hash keeps long step names within the limit)."""
        slug = re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-")[:22].strip("-") or "step"
        digest = hashlib.sha256(f"{run_id}/{step}/{retry}".encode()).hexdigest()[:8]
        return cls(f"trainer-{slug}-{digest}")

    @property
    def service(self) -> str:
        return self.name

    @property
    def head_host(self) -> str:
        return f"{self.name}-head"

    @property
    def job(self) -> str:
        return f"{self.name}-worker"

    @property
    def head_addr(self) -> str:
        """The head's DNS name in the pods' namespace (the Service is its subdomain)."""
        return f"{self.head_host}.{self.service}"

    @property
    def worker_addr(self) -> str:
        """A worker's DNS name, ``$(NODE_INDEX)`` expanded by Kubernetes in each pod's command."""
        return f"{self.job}-$({NODE_INDEX_ENV}).{self.service}"

    @property
    def endpoint(self) -> str:
        return f"{self.head_addr}:{self.port}"

    def rendezvous(self, nnodes: int, timeout_s: int) -> Rendezvous:
        return Rendezvous(run_id=self.name, endpoint=self.endpoint, nnodes=nnodes, timeout_s=timeout_s)


def rendezvous_service(names: NodeNames, namespace: str, labels: Mapping[str, str]) -> dict:
    """The headless Service that gives every pod of the launch its DNS name, also before it is ready (a node's
    name must resolve while the others wait for it in the rendezvous)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": names.service, "namespace": namespace, "labels": {**labels, RUN_LABEL: names.name}},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {RUN_LABEL: names.name},
            "ports": [{"name": "rendezvous", "port": names.port, "targetPort": names.port}],
        },
    }


def worker_job(
    names: NodeNames,
    namespace: str,
    pod: Mapping[str, Any],
    *,
    nnodes: int,
    backoff_limit: int,
    ttl_s: int = 3600,
) -> dict:
    """The Indexed Job of nodes 1..N-1 around ``pod`` (an API Pod: ``metadata.labels`` and ``spec``, whose first
    container runs a worker's command; it gets its completion index as ``NODE_INDEX``). Pods are never restarted in place (the Job replaces a failed pod, same
    hostname); a pod its node took down is replaced without counting against ``backoff_limit``."""
    if nnodes < 2:
        raise ValueError(f"worker_job: nnodes must be at least 2, got {nnodes}")
    spec = copy.deepcopy(dict(pod["spec"]))
    spec.pop("hostname", None)  # the Job controller names each pod <job>-<index>
    spec["subdomain"] = names.service
    spec["restartPolicy"] = "Never"  # podFailurePolicy requires it
    container = spec["containers"][0]  # $(NODE_INDEX) in its command: Kubernetes expands declared variables only
    container["env"] = [
        *(e for e in container.get("env", []) if e["name"] != NODE_INDEX_ENV),
        {"name": NODE_INDEX_ENV, "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX}}},
    ]
    labels = {**(pod.get("metadata") or {}).get("labels", {}), RUN_LABEL: names.name, NODE_LABEL: "worker"}
    workers = nnodes - 1
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": names.job, "namespace": namespace, "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": workers,
            "parallelism": workers,
            "backoffLimit": backoff_limit,
            "podFailurePolicy": {
                "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
            },
            "ttlSecondsAfterFinished": ttl_s,
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


_APIS = {"Service": ("core", "service"), "Job": ("batch", "job")}


@contextmanager
def node_objects(manifests: Iterable[Mapping[str, Any]], api_client=None) -> Iterator[list[str]]:
    """Create the launch's Service and worker Job for the duration of the block, then delete them, also when
    the block fails (a Job's pods with it). A leftover of the same name (a step killed before it cleaned up)
    is deleted first. Yields one line per object created.

    ``api_client``: a ``kubernetes.client.ApiClient`` (default: in-cluster config, else the kubeconfig), or an
    object with the CoreV1Api/BatchV1Api methods used here, which is how the tests pass a double of the API."""
    manifests = list(manifests)
    for m in manifests:
        if m.get("kind") not in _APIS:
            raise ValueError(f"node_objects: unsupported kind {m.get('kind')!r} (known: {', '.join(_APIS)})")
    apis = _apis(api_client)
    created: list[Mapping[str, Any]] = []
    try:
        for manifest in manifests:
            _delete(apis, manifest)
            group, suffix = _APIS[manifest["kind"]]
            getattr(apis[group], f"create_namespaced_{suffix}")(manifest["metadata"]["namespace"], manifest)
            created.append(manifest)
        yield [f"{m['kind'].lower()}/{m['metadata']['namespace']}/{m['metadata']['name']} created" for m in created]
    finally:
        for manifest in reversed(created):
            _delete(apis, manifest)


def _delete(apis: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    group, suffix = _APIS[manifest["kind"]]
    try:  # Background: the Job's pods go too, without waiting for them here
        getattr(apis[group], f"delete_namespaced_{suffix}")(
            manifest["metadata"]["name"], manifest["metadata"]["namespace"], propagation_policy="Background"
        )
    except ApiException as exc:
        if exc.status != 404:
            raise


def _apis(api_client) -> dict[str, Any]:
    if api_client is not None and hasattr(api_client, "create_namespaced_job"):
        return {"core": api_client, "batch": api_client}
    import kubernetes

    from crawl2serve.serving.k8s import default_api_client

    client = api_client if api_client is not None else default_api_client()
    return {"core": kubernetes.client.CoreV1Api(client), "batch": kubernetes.client.BatchV1Api(client)}
