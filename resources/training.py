"""How the trainer is launched: torchrun in a local subprocess, or a GPU pod through dagster-k8s (Pipes both ways)."""

import sys
from typing import Literal

import dagster as dg
from pydantic import Field

from crawl2serve.serving.k8s import GPU_TOLERATIONS

TRAINER_MODULE = "crawl2serve.assets.training.trainer"


class TrainingLauncher(dg.ConfigurableResource):
    """``mode="local"``: ``torchrun --nproc-per-node N -m crawl2serve.assets.training.trainer`` through
    ``PipesSubprocessClient`` (gloo on CPU, NCCL on GPUs). ``mode="k8s"``: the same command in a pod through
    ``PipesK8sClient``, with GPU requests, node selector and tolerations from this config; the data root
    must then be shared storage, mounted in the pod at the same path (``data_claim``)."""

    mode: Literal["local", "k8s"] = Field(default="local", description="local subprocess or Kubernetes pod")
    nproc_per_node: int = Field(default=1, description="Processes (ranks) per node; >1 trains with FSDP")
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

    def command(self, config_path: str) -> list[str]:
        ranks = self.gpus if self.mode == "k8s" else self.nproc_per_node
        launcher = ["torchrun"] if self.mode == "k8s" else [sys.executable, "-m", "torch.distributed.run"]
        return [*launcher, "--standalone", f"--nproc-per-node={ranks}", "-m", TRAINER_MODULE, "--config", config_path]

    def pod_spec(self) -> dict:
        """The base pod spec PipesK8sClient merges its container (image, command, Pipes env) into."""
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
        return spec

    def run(self, context: dg.AssetExecutionContext, config_path: str, env: dict[str, str]):
        command = self.command(config_path)
        if self.mode == "local":
            return dg.PipesSubprocessClient().run(context=context, command=command, env=env)
        from dagster_k8s import PipesK8sClient

        return PipesK8sClient().run(
            context=context,
            image=self.image,
            command=command,
            namespace=self.namespace,
            env=env,
            base_pod_spec=self.pod_spec(),
            base_pod_meta={"labels": {"app.kubernetes.io/part-of": "crawl2serve", "crawl2serve/stage": "training"}},
        )
