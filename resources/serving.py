"""The serving stage's environment: which engine runs where, and the gateway in front of it.

Embedded default: ``backend="auto"`` picks SGLang when a GPU is visible and the CPU engine
(``transformers serve``) otherwise; engines and the gateway run as local processes on loopback, their state
under ``{data_root}/sglang_deployment/_``. A GPU host sets ``sglang_python`` to SGLang's own environment
(SGLang pins its own torch). On a cluster ``mode="k8s"`` renders the engine as a Deployment + Service with GPU
requests (see :mod:`serving.k8s`).
"""

import os
import shutil
import subprocess
import sys

import dagster as dg
from pydantic import Field

from serving.deploy import Deployment, EngineConfig
from serving.gateway.settings import FeastSettings, GatewaySettings, GuardrailSettings

from .feast_store import FeastStore
from .storage import DataRoot

STATE_ASSET = "sglang_deployment"


def gpu_visible() -> bool:
    """True when ``nvidia-smi -L`` lists a GPU (no CUDA initialization in the Dagster process)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


class ServingEngine(dg.ConfigurableResource):
    """Engines (SGLang on GPUs, a CPU engine elsewhere) and the gateway the ``sglang_deployment`` asset runs."""

    data_root: dg.ResourceDependency[DataRoot]
    feast_store: dg.ResourceDependency[FeastStore]
    backend: str = Field("auto", description="auto | sglang | cpu. auto: sglang when a GPU is visible")
    mode: str = Field("local", description="local: engine processes on this host; k8s: a Deployment + Service")
    host: str = Field("127.0.0.1", description="Address the engines and the gateway bind to")
    engine_port: int = Field(30000, description="Port of the primary engine")
    sglang_python: str = Field("python3", description="Interpreter of SGLang's own environment (venv or image)")
    sglang_args: list[str] = Field(default_factory=list, description="Extra launch_server arguments, e.g. "
                                   "['--mem-fraction-static', '0.8', '--attention-backend', 'triton']")
    cpu_args: list[str] = Field(default_factory=list, description="Extra `transformers serve` arguments")
    fallback_cpu_port: int | None = Field(None, description="Also run a CPU engine on this port as the fallback "
                                          "(with backend sglang)")
    startup_timeout_s: float = 900.0
    max_lora_rank: int = Field(64, description="SGLang LoRA slots; deltas need the sum of two adapters' ranks")
    gateway_port: int = 8700
    redis_url: str | None = Field(None, description="Shared gateway state (rate limits) between replicas")
    blocked_patterns: list[str] = Field(default_factory=list, description="Regexes blocked in prompts and outputs")
    feast_tiers: bool = Field(True, description="Read tenant tiers from Feast and push usage back")
    usage_push_interval_s: float = Field(15.0, description="Seconds between the gateway's usage pushes to Feast")

    def resolved_backend(self) -> str:
        if self.backend not in ("auto", "sglang", "cpu"):
            raise ValueError(f"serving_engine.backend={self.backend!r}: expected auto, sglang or cpu")
        if self.backend == "auto":
            return "sglang" if gpu_visible() else "cpu"
        return self.backend

    def state_dir(self) -> str:
        return str(self.data_root.local_path(self.data_root.path(STATE_ASSET)))

    def deployment(self, log=print) -> Deployment:
        return Deployment(self.state_dir(), log=log)

    def engine_configs(self) -> list[EngineConfig]:
        backend = self.resolved_backend()
        primary = EngineConfig(name="primary", backend=backend, host=self.host, port=self.engine_port,
                               python=self.sglang_python if backend == "sglang" else sys.executable,
                               extra_args=self.sglang_args if backend == "sglang" else self.cpu_args,
                               startup_timeout_s=self.startup_timeout_s, max_lora_rank=self.max_lora_rank)
        configs = [primary]
        if backend == "sglang" and self.fallback_cpu_port:
            configs.append(EngineConfig(name="fallback", backend="cpu", host=self.host, port=self.fallback_cpu_port,
                                        extra_args=self.cpu_args, startup_timeout_s=self.startup_timeout_s))
        return configs

    def gateway_settings(self) -> GatewaySettings:
        from serving.gateway.settings import EngineSettings

        state = self.state_dir()
        feast = None
        if self.feast_tiers:
            yaml_file = self.feast_store.yaml_file
            feast = FeastSettings(repo_path=self.feast_store.repo_path, feast_dir=str(self.feast_store.feast_dir),
                                  yaml_file=yaml_file, redis=self.feast_store.redis,
                                  push_interval_s=self.usage_push_interval_s)
        return GatewaySettings(
            host=self.host, port=self.gateway_port, routing_file=f"{state}/routing.json",
            keys_file=f"{state}/api_keys.json",
            log_dir=str(self.data_root.local_path(self.data_root.path("inference_log", None, "spool"))),
            redis_url=self.redis_url,
            engines=[EngineSettings(name=c.name, url=c.url) for c in self.engine_configs()],
            guardrails=GuardrailSettings(blocked_patterns=self.blocked_patterns), feast=feast)
