"""How the trainer is launched: torchrun in a local subprocess, or on Kubernetes through dagster-k8s (Pipes both
ways): one GPU pod, or N pods in a c10d rendezvous (assets/training/multinode.py)."""

import sys
from contextlib import nullcontext
from typing import Literal

import dagster as dg
from pydantic import Field, model_validator

from crawl2serve.assets.training.multinode import (
    MULTINODE_ENV,
    NODE_LABEL,
    RENDEZVOUS_PORT,
    RUN_LABEL,
    NodeNames,
    node_objects,
    rendezvous_service,
    torchrun_command,
    worker_job,
)
from crawl2serve.serving.k8s import GPU_TOLERATIONS

from .pipes_messages import WholeLineTempFileMessageReader

POD_LABELS = {"app.kubernetes.io/part-of": "crawl2serve", "crawl2serve/stage": "training"}
NODE_LOSS_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")


class TrainingLauncher(dg.ConfigurableResource):
    """``mode="local"``: ``torchrun --nproc-per-node N -m crawl2serve.assets.training.trainer`` through
    ``PipesSubprocessClient`` (gloo on CPU, NCCL on GPUs). ``mode="k8s"``: the same command in a pod through
    ``PipesK8sClient``, with GPU requests, node selector and tolerations from this config; the data root
    must then be shared storage, mounted in the pod at the same path (``data_claim``).

    ``nnodes > 1`` (``mode="k8s"``): that pod is node 0 of a c10d rendezvous, and an Indexed Job runs nodes
    1..N-1 with the same pod spec; a headless Service names them (:meth:`node_manifests`; the design, rank order
    and what happens when a node is lost: assets/training/multinode.py). FSDP shards over all ``nnodes x gpus``
    ranks; checkpoints go to the run's folder on the shared volume and a restarted rank resumes from the newest."""

    mode: Literal["local", "k8s"] = Field(default="local", description="local subprocess or Kubernetes pod")
    nproc_per_node: int = Field(default=1, description="Processes (ranks) per node; >1 trains with FSDP")
    nnodes: int = Field(
        default=1,
        ge=1,
        description="k8s: nodes (pods) of one training, gpus ranks each; >1: a c10d rendezvous (node 0 through "
        "Pipes, nodes 1..N-1 as an Indexed Job)",
    )
    max_restarts: int = Field(
        default=3,
        ge=0,
        description="k8s, nnodes > 1: times each node's torchrun restarts its ranks after a failure (a lost node), "
        "resuming from the newest checkpoint; also the worker Job's backoffLimit",
    )
    rendezvous_timeout_s: int = Field(
        default=1800,
        ge=60,
        description="k8s, nnodes > 1: how long nodes wait for each other to join (image pulls, GPU nodes scaling up)",
    )
    node_loss_timeout_s: int = Field(
        default=60,
        ge=0,
        description="k8s, nnodes > 1: seconds a pod stays on an unreachable or not-ready node before Kubernetes "
        "evicts it and the Job replaces it (Kubernetes' default: 300)",
    )
    image: str = Field(default="crawl2serve-trainer:latest", description="k8s: trainer image")
    namespace: str = Field(default="crawl2serve", description="k8s: namespace of the training pod")
    gpus: int = Field(default=1, description="k8s: nvidia.com/gpu requested (and processes per node)")
    cpu: str = Field(default="8", description="k8s: CPU request")
    memory: str = Field(default="64Gi", description="k8s: memory request")
    node_selector: dict[str, str] = Field(default_factory=dict, description="k8s: node selector")
    tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [dict(t) for t in GPU_TOLERATIONS],
        description="k8s: tolerations of the GPU pod (default: serving.k8s.GPU_TOLERATIONS)",
    )
    service_account: str | None = Field(default=None, description="k8s: service account of the pod")
    data_claim: str | None = Field(default=None, description="k8s: PersistentVolumeClaim holding the data root")
    data_mount: str = Field(default="/data", description="k8s: where the data root is mounted in the pod")

    @model_validator(mode="after")
    def _nodes_need_kubernetes(self):
        if self.nnodes > 1 and self.mode != "k8s":
            raise ValueError(
                f"TrainingLauncher field 'nnodes' is {self.nnodes}: more than one node runs on Kubernetes "
                "(mode='k8s'); on one machine, nproc_per_node sets the ranks"
            )
        return self

    def describe(self) -> str:
        """``local x2``, ``k8s x1``, ``k8s 2 nodes x 8``: how the trainer runs (an MLflow tag)."""
        if self.nnodes > 1:
            return f"{self.mode} {self.nnodes} nodes x {self.gpus}"
        return f"{self.mode} x{self.gpus if self.mode == 'k8s' else self.nproc_per_node}"

    def command(self, config_path: str, names: NodeNames | None = None, head: bool = True) -> list[str]:
        """The trainer's command line; ``nnodes > 1``: the head's (``head``) or a worker's, in the rendezvous
        ``names`` names."""
        if self.mode == "local":
            return torchrun_command([sys.executable, "-m", "torch.distributed.run"], self.nproc_per_node, config_path)
        if self.nnodes == 1:
            return torchrun_command(["torchrun"], self.gpus, config_path)
        if names is None:
            raise ValueError(f"TrainingLauncher.command: nnodes={self.nnodes} needs the launch's NodeNames")
        return torchrun_command(
            ["torchrun"],
            self.gpus,
            config_path,
            names.rendezvous(self.nnodes, self.rendezvous_timeout_s),
            host=head,
            local_addr=names.head_addr if head else names.worker_addr,
            max_restarts=self.max_restarts,
        )

    def pod_spec(self, names: NodeNames | None = None, head: bool = True) -> dict:
        """The base pod spec PipesK8sClient merges its container (image, command, Pipes env) into; with
        ``names``, that of a node of the launch (the head's: its hostname in the Service's subdomain), tolerating
        a lost node only ``node_loss_timeout_s``."""
        resources = {
            "requests": {"cpu": self.cpu, "memory": self.memory, "nvidia.com/gpu": str(self.gpus)},
            "limits": {"nvidia.com/gpu": str(self.gpus)},
        }
        container = {
            "resources": resources,
            "env": [{"name": "NCCL_DEBUG", "value": "WARN"}, {"name": "HF_HUB_OFFLINE", "value": "1"}],
            "volume_mounts": [{"name": "dshm", "mount_path": "/dev/shm"}],
        }
        volumes = [{"name": "dshm", "empty_dir": {"medium": "Memory"}}]
        if self.data_claim:
            container["volume_mounts"].append({"name": "data", "mount_path": self.data_mount})
            volumes.append({"name": "data", "persistent_volume_claim": {"claim_name": self.data_claim}})
        spec = {
            "containers": [container],
            "volumes": volumes,
            "restart_policy": "Never",
            "node_selector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
        }
        if self.service_account:
            spec["service_account_name"] = self.service_account
        if names is not None:
            container["env"] += [{"name": k, "value": v} for k, v in MULTINODE_ENV.items()]
            container["ports"] = [{"name": "rendezvous", "container_port": RENDEZVOUS_PORT}]
            spec["subdomain"] = names.service
            if head:
                spec["hostname"] = names.head_host
            spec["tolerations"] += [
                {"key": t, "operator": "Exists", "effect": "NoExecute", "toleration_seconds": self.node_loss_timeout_s}
                for t in NODE_LOSS_TAINTS
            ]
        return spec

    def pod_meta(self, names: NodeNames | None = None, head: bool = True) -> dict:
        labels = dict(POD_LABELS)
        if names is not None:
            labels.update({RUN_LABEL: names.name, NODE_LABEL: "head" if head else "worker"})
        return {"labels": labels}

    def node_manifests(self, names: NodeNames, config_path: str, env: dict[str, str]) -> list[dict]:
        """``nnodes > 1``: the headless Service and the worker Indexed Job (API dicts); each worker pod is the pod
        PipesK8sClient would build for the head (dagster-k8s' own ``build_pod_body``), with a worker's command and
        no Pipes context: only global rank 0, on the head, talks to Dagster."""
        from dagster_k8s.pipes import build_pod_body
        from kubernetes.client import ApiClient

        pod = build_pod_body(
            pod_name=names.job,
            image=self.image,
            command=self.command(config_path, names, head=False),
            env_vars=env,
            base_pod_meta=self.pod_meta(names, head=False),
            base_pod_spec=self.pod_spec(names, head=False),
        )
        pod = ApiClient().sanitize_for_serialization(pod)
        return [
            rendezvous_service(names, self.namespace, POD_LABELS),
            worker_job(names, self.namespace, pod, nnodes=self.nnodes, backoff_limit=self.max_restarts),
        ]

    def run(self, context: dg.AssetExecutionContext, config_path: str, env: dict[str, str]):
        if self.mode == "local":
            client = dg.PipesSubprocessClient(message_reader=WholeLineTempFileMessageReader())
            return client.run(context=context, command=self.command(config_path), env=env)
        from dagster_k8s import PipesK8sClient

        names = (
            NodeNames.for_step(context.run.run_id, context.op.name, context.retry_number) if self.nnodes > 1 else None
        )
        objects = node_objects(self.node_manifests(names, config_path, env)) if names else nullcontext([])
        with objects as created:  # nodes 1..N-1 and their Service, while node 0 runs
            if created:
                context.log.info(f"training on {self.nnodes} nodes x {self.gpus} GPUs: {', '.join(created)}")
            return PipesK8sClient().run(
                context=context,
                image=self.image,
                command=self.command(config_path, names),
                namespace=self.namespace,
                env=env,
                base_pod_spec=self.pod_spec(names),
                base_pod_meta=self.pod_meta(names),
            )
