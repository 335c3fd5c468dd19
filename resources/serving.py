"""The serving stage's environment: which engine runs where, and the gateway in front of it.

Embedded default: ``backend="auto"`` picks SGLang when a GPU is visible and the CPU engine
(``transformers serve``) otherwise; engines and the gateway run as local processes on loopback, their state
under ``{data_root}/sglang_deployment/_``. A GPU host sets ``sglang_python`` to SGLang's own environment
(SGLang pins its own torch). On a cluster ``mode="k8s"`` renders the engine as a Deployment + Service with GPU
requests (see :mod:`serving.k8s`).
"""

import os
import sys

import dagster as dg
from pydantic import Field

from crawl2serve.serving.alerts import WEBHOOK_VAR
from crawl2serve.serving.backoff import RestartPolicy
from crawl2serve.serving.deploy import Deployment, EngineConfig
from crawl2serve.serving.engines import BACKENDS, engine_class, engine_for, resolve_backend
from crawl2serve.serving.gateway.budgets import BudgetSettings
from crawl2serve.serving.gateway.rag import RagSettings
from crawl2serve.serving.gateway.settings import (
    CacheSettings,
    ExperimentSettings,
    FeastSettings,
    GatewaySettings,
    GuardrailSettings,
    ShadowSettings,
    parse_arms,
    parse_rules,
)
from crawl2serve.serving.k8s import GPU_TOLERATIONS

from .feast_store import FeastStore
from .storage import DataRoot

STATE_ASSET = "sglang_deployment"
K8S_SERVED_NAME = "crawl2serve"  # the served model name (serving.deploy.Deployment's model_name)
FALLBACK_BACKEND = "cpu"  # what fallback_cpu_port runs


class ServingEngine(dg.ConfigurableResource):
    """Engines (SGLang on GPUs, a CPU engine elsewhere) and the gateway the ``sglang_deployment`` asset runs."""

    data_root: dg.ResourceDependency[DataRoot]
    feast_store: dg.ResourceDependency[FeastStore]
    backend: str = Field(
        "auto", description=f"auto | {' | '.join(BACKENDS)}. auto: sglang when a GPU is visible, else cpu"
    )
    mode: str = Field("local", description="local: engine processes on this host; k8s: a Deployment + Service")
    host: str = Field("127.0.0.1", description="Address the engines and the gateway bind to")
    engine_port: int = Field(30000, description="Port of the primary engine")
    sglang_python: str = Field("python3", description="Interpreter of SGLang's own environment (venv or image)")
    sglang_args: list[str] = Field(
        default_factory=list,
        description="Extra launch_server arguments, e.g. "
        "['--mem-fraction-static', '0.8', '--attention-backend', 'triton']",
    )
    cpu_args: list[str] = Field(
        default_factory=list,
        description="Extra `transformers serve` arguments. Default: none. "
        "`--continuous-batching` gave 3.0x the tokens/s at 8 concurrent streams of one "
        "version (bench/bench_cpu_engine.py), but transformers 5.24 rebuilds its batch "
        "manager whenever requests alternate between versions (a canary, a pinned "
        "crawl2serve@N, the base model): 22 of 48 such requests answered 503 and RSS "
        "reached 5.6 GB under a 2048 MB plan, against 48 of 48 at 463 MB without it. Any "
        "tenant can pin a version, so add it only to an engine that serves one version",
    )
    cpu_memory_budget_mb: int | None = Field(
        2048,
        description="Resident memory the CPU engine may use: its KV cache is sized for the model to fit "
        "(serving/engines/transformers_cpu.py) and its supervisor restarts it above 1.5x. The embedded model's "
        "engine, 16 streams for 60 s: 1.53 GB peak with 2048; 7.4 GB and over 8 GB with transformers' own "
        "sizing from the host (bench/bench_cpu_engine_memory.py). None: transformers' own sizing",
    )
    champion_engine_port: int | None = Field(
        None,
        description="sglang: also run a LoRA-free SGLang engine on "
        "this port serving the champion's merged weights at the bare model's "
        "speed; the LoRA engine then serves canaries and earlier versions",
    )
    fallback_cpu_port: int | None = Field(
        None, description="Also run a CPU engine on this port as the fallback (with backend sglang)"
    )
    startup_timeout_s: float = 900.0
    restart_base_delay_s: float = Field(
        1.0,
        description="Local engines: first delay before restarting a dead "
        "engine; doubles with each crash in a row, at most restart_max_delay_s",
    )
    restart_max_delay_s: float = Field(60.0, description="Local engines: the longest delay between restarts")
    restart_reset_after_s: float = Field(120.0, description="An engine up this long is forgiven its crashes")
    restart_max_fast_crashes: int = Field(
        5,
        description="Crashes in a row (each within restart_reset_after_s of "
        "its start) after which the supervisor gives up",
    )
    max_lora_rank: int = Field(64, description="SGLang LoRA slots; deltas need the sum of two adapters' ranks")
    gateway_port: int = 8700
    gateway_url: str | None = Field(None, description="k8s: the gateway Service's URL (deploy/k8s/50-gateway.yaml)")
    redis_url: str | None = Field(None, description="Shared gateway state (rate limits) between replicas")
    blocked_patterns: list[str] = Field(default_factory=list, description="Regexes blocked in prompts and outputs")
    feast_tiers: bool = Field(True, description="Read tenant tiers from Feast and push usage back")
    usage_push_interval_s: float = Field(15.0, description="Seconds between the gateway's usage pushes to Feast")
    shadow_version: str | None = Field(None, description="Shadow traffic: the challenger version mirrored to")
    shadow_share: float = Field(0.0, description="Shadow traffic: share of answered requests mirrored (0: off)")
    experiment_name: str | None = Field(None, description="A/B test: its name (None: no experiment)")
    experiment_unit: str = Field("tenant", description="A/B test: assign by 'tenant' or by 'request'")
    experiment_arms: list[str] = Field(
        default_factory=list, description="A/B test: arms as 'arm=version[:weight]', the first is the control"
    )
    tier_budgets: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Budgets per tier in USD, e.g. {'free': {'daily_usd': 1.0, 'monthly_usd': 20.0}} "
        "(serving.gateway.budgets)",
    )
    prices: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Prices per version label, engine name or 'default' (serving.gateway.costs); "
        "{}: the embedded default",
    )
    response_cache: bool = Field(
        True,
        description="Answer repeated deterministic requests (temperature 0 or a seed) from the gateway's cache: "
        "in memory, or in Redis when redis_url is set",
    )
    response_cache_ttl_s: float = Field(3600.0, description="Response cache: how long an answer is kept")
    routing_rules: list[str] = Field(
        default_factory=list,
        description="Request routing, first match wins: 'name=field:value,...' with fields version, engines, "
        "max_prompt_tokens, min_prompt_tokens, max_requested_tokens, tiers (lists '|'-separated)",
    )
    # -- mode="k8s": the engine as a Deployment + Service (serving/k8s.py) --------------------------------------
    k8s_name: str = Field("crawl2serve-sglang", description="k8s: name of the engine's Deployment and Service")
    namespace: str = Field("crawl2serve", description="k8s: namespace of the engine")
    image: str = Field("lmsysorg/sglang:latest", description="k8s: SGLang image (SGLang pins its own torch; pin a tag)")
    gpus: int = Field(1, description="k8s: nvidia.com/gpu per engine pod (>1: tensor parallel over them)")
    node_selector: dict[str, str] = Field(default_factory=dict, description="k8s: node selector of the engine pod")
    tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [dict(t) for t in GPU_TOLERATIONS],
        description="k8s: tolerations of the engine pod (default: serving.k8s.GPU_TOLERATIONS)",
    )
    data_claim: str | None = Field(
        None, description="k8s: PersistentVolumeClaim holding the data root (models, adapters), mounted at data_mount"
    )
    data_mount: str = Field(
        "/data",
        description="k8s: where the data root is mounted in the engine pod (the data "
        "root's own path, so paths mean the same in every pod)",
    )
    service_host: str | None = Field(
        None,
        description="k8s: host the engine Service is reached at; default its "
        "cluster DNS name <k8s_name>.<namespace>.svc.cluster.local",
    )

    def resolved_backend(self) -> str:
        if self.backend != "auto" and self.backend not in BACKENDS:
            raise ValueError(f"serving_engine.backend={self.backend!r}: expected auto, {', '.join(BACKENDS)}")
        return resolve_backend(self.backend)

    def state_dir(self) -> str:
        return str(self.data_root.local_path(self.data_root.path(STATE_ASSET)))

    def remote_launcher(self):
        """``mode="k8s"``: the launcher ``Deployment.ensure_engine`` uses to run an engine as a Kubernetes
        Deployment + Service (applied through the kubernetes client); ``None`` locally."""
        if self.mode == "local":
            return None
        if self.mode != "k8s":
            raise ValueError(f"serving_engine.mode={self.mode!r}: expected local or k8s")

        def launch(engine: str, model_path: str, adapters: dict[str, str]) -> str:
            from crawl2serve.serving.k8s import apply_manifests

            apply_manifests(self.k8s_manifests(model_path, adapters or None, engine=engine))
            return self.k8s_endpoint(engine)

        return launch

    def deployment(self, log=print) -> Deployment:
        policy = RestartPolicy(
            base_delay_s=self.restart_base_delay_s,
            max_delay_s=self.restart_max_delay_s,
            reset_after_s=self.restart_reset_after_s,
            max_fast_crashes=self.restart_max_fast_crashes,
        )
        return Deployment(self.state_dir(), log=log, restart_policy=policy)

    def _backend_options(self, backend: str) -> dict:
        """This resource's settings named after a backend (its interpreter, arguments, memory budget)."""
        options = {
            "sglang": dict(python=self.sglang_python, extra_args=self.sglang_args),
            "cpu": dict(python=sys.executable, extra_args=self.cpu_args, memory_budget_mb=self.cpu_memory_budget_mb),
        }
        return options.get(backend, {})

    def _engine_config(self, name: str, backend: str, port: int, **overrides) -> EngineConfig:
        return EngineConfig(
            name=name,
            backend=backend,
            host=self.host,
            port=port,
            startup_timeout_s=self.startup_timeout_s,
            max_lora_rank=self.max_lora_rank,
            **{**self._backend_options(backend), **overrides},
        )

    def engine_configs(self) -> list[EngineConfig]:
        """The primary engine; with a weight-swapping backend (SGLang) and ``champion_engine_port``, a LoRA-free
        champion engine first; with ``fallback_cpu_port`` (and another primary backend), a CPU fallback last."""
        backend = self.resolved_backend()
        configs = [self._engine_config("primary", backend, self.engine_port)]
        if self.champion_engine_port and engine_class(backend).swaps_weights:
            configs.insert(0, self._engine_config("champion", backend, self.champion_engine_port, lora=False))
        if self.fallback_cpu_port and backend != FALLBACK_BACKEND:
            configs.append(self._engine_config("fallback", FALLBACK_BACKEND, self.fallback_cpu_port))
        return configs

    def public_gateway_url(self) -> str:
        """Where clients (and links in asset metadata) reach the gateway: ``gateway_url`` when set (k8s: the
        Service), else the host and port it listens on."""
        return (self.gateway_url or f"http://{self.host}:{self.gateway_port}").rstrip("/")

    def gateway_settings(self) -> GatewaySettings:
        from crawl2serve.serving.gateway.settings import EngineSettings

        state = self.state_dir()
        feast = None
        if self.feast_tiers:
            yaml_file = self.feast_store.yaml_file
            feast = FeastSettings(
                repo_path=self.feast_store.repo_path,
                feast_dir=str(self.feast_store.feast_dir),
                yaml_file=yaml_file,
                redis=self.feast_store.redis,
                push_interval_s=self.usage_push_interval_s,
            )
        return GatewaySettings(
            host=self.host,
            port=self.gateway_port,
            routing_file=f"{state}/routing.json",
            keys_file=f"{state}/api_keys.json",
            log_dir=str(self.data_root.local_path(self.data_root.path("inference_log", None, "spool"))),
            reports_dir=str(self.data_root.local_path(f"{self.data_root.root}/drift_report")),
            redis_url=self.redis_url,
            engines=[
                EngineSettings(
                    name=c.name,
                    url=self.k8s_endpoint(c.name) if self.mode == "k8s" else c.url,
                    backend=c.backend,
                    features=sorted(engine_for(c).features()),
                )
                for c in self.engine_configs()
            ],
            guardrails=GuardrailSettings(blocked_patterns=self.blocked_patterns),
            feast=feast,
            shadow=ShadowSettings(version=self.shadow_version, share=self.shadow_share),
            **({"prices": self.prices} if self.prices else {}),
            budgets=BudgetSettings(
                tiers=self.tier_budgets,
                alerts_file=str(self.data_root.local_path(self.data_root.path("alerts", None, "alerts.jsonl"))),
                alert_webhook=os.environ.get(WEBHOOK_VAR),
            ),
            experiment=ExperimentSettings(
                name=self.experiment_name, unit=self.experiment_unit, arms=parse_arms(self.experiment_arms)
            )
            if self.experiment_name
            else None,
            cache=CacheSettings(enabled=self.response_cache, redis_url=self.redis_url, ttl_s=self.response_cache_ttl_s),
            routing_rules=parse_rules(self.routing_rules),
            # crawl2serve-rag answers from the version served_retrieval_index switched to (503 until there is one)
            rag=RagSettings(
                live_file=str(
                    self.data_root.local_path(self.data_root.path("served_retrieval_index", None, "live.json"))
                )
            ),
        )

    # -- mode="k8s" --------------------------------------------------------------------------------------------------
    def _k8s_engine(self, engine: str) -> tuple[str, int, bool]:
        """(Deployment/Service name, port, LoRA enabled) of an engine: ``primary`` (the LoRA engine) or
        ``champion`` (the LoRA-free engine of ``champion_engine_port``)."""
        if engine == "primary":
            return self.k8s_name, self.engine_port, True
        if engine == "champion":
            return f"{self.k8s_name}-champion", self.champion_engine_port or self.engine_port, False
        raise ValueError(f"engine={engine!r}: expected primary or champion")

    def k8s_manifests(
        self, model_path: str, adapters: dict[str, str] | None = None, *, engine: str = "primary"
    ) -> list[dict]:
        """The engine's Deployment + Service (``serving.k8s.sglang_manifests``) serving ``model_path`` (a path
        inside the pod: under ``data_mount``) with this resource's image, GPUs, placement and SGLang arguments."""
        from crawl2serve.serving.k8s import sglang_manifests

        name, port, lora = self._k8s_engine(engine)
        return sglang_manifests(
            name=name,
            namespace=self.namespace,
            image=self.image,
            model_path=model_path,
            served_name=K8S_SERVED_NAME,
            port=port,
            gpus=self.gpus,
            adapters=adapters,
            extra_args=self.sglang_args,
            node_selector=self.node_selector,
            tolerations=self.tolerations,
            data_claim=self.data_claim,
            data_mount=self.data_mount,
            max_lora_rank=self.max_lora_rank,
            lora=lora,
            startup_timeout_s=int(self.startup_timeout_s),
        )

    def k8s_endpoint(self, engine: str = "primary") -> str:
        """The engine's URL as the gateway and the Dagster steps reach it: the Service's cluster DNS name (or
        ``service_host``, primary engine only) and its port."""
        from crawl2serve.serving.k8s import service_url

        name, port, _ = self._k8s_engine(engine)
        if self.service_host and engine == "primary":
            return f"http://{self.service_host}:{port}"
        return service_url(name, self.namespace, port)
