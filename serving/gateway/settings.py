"""Gateway configuration: one YAML file (written by the serving asset, or by hand), validated on load."""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..atomic import write_text
from .rag import RagSettings
from .schemas import EXTENSIONS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EngineSettings(_Strict):
    """One upstream engine; ``engines`` are tried in order (the first healthy one serves, later ones are fallbacks)."""

    name: str
    url: str
    timeout_s: float = Field(
        120.0, description="Whole-request timeout (non-streaming) / time to first byte (streaming)"
    )
    connect_timeout_s: float = 2.0
    read_timeout_s: float = Field(30.0, description="Streaming: the longest wait between two chunks")


class BreakerSettings(_Strict):
    """When an engine counts as down (see serving.gateway.upstream): consecutive failures, how long the breaker
    stays open, and the background health probe (``health_interval_s`` 0: no probing)."""

    failure_threshold: int = Field(3, ge=1)
    reset_timeout_s: float = Field(10.0, ge=0)
    health_interval_s: float = Field(2.0, ge=0)
    health_timeout_s: float = Field(2.0, gt=0)


class RetrySettings(_Strict):
    attempts: int = 2
    base_delay_s: float = 0.05
    max_delay_s: float = 1.0


class LimitSettings(_Strict):
    """Request validation limits (4xx beyond them)."""

    max_body_bytes: int = 1_000_000
    max_prompt_chars: int = 32_000
    max_tokens: int = 1024
    max_messages: int = 64
    default_max_tokens: int = 64
    passthrough_fields: list[str] = Field(
        default_factory=lambda: list(EXTENSIONS),
        description="Engine sampling extensions (SGLang/vLLM) accepted and passed on as they are",
    )


class GuardrailSettings(_Strict):
    blocked_patterns: list[str] = Field(default_factory=list)
    injection_threshold: float = 0.5
    max_output_chars: int = 20_000


class TierSettings(_Strict):
    """Limits of a tier (overrides or adds to ``serving.gateway.ratelimit.DEFAULT_TIERS``)."""

    requests_per_minute: float
    tokens_per_minute: float
    burst_requests: float | None = None
    burst_tokens: float | None = None

    def tier(self, name: str):
        from .ratelimit import Tier

        return Tier(
            name,
            self.requests_per_minute,
            self.tokens_per_minute,
            self.burst_requests or self.requests_per_minute,
            self.burst_tokens or self.tokens_per_minute,
        )


class FeastSettings(_Strict):
    """Where tenant tiers are read and usage is pushed: the project's Feast repo with the data root's store."""

    repo_path: str
    feast_dir: str
    yaml_file: str = "feature_store.yaml"
    redis: str = "127.0.0.1:6379"
    push_source: str = "tenant_stats_push"
    feature_view: str = "tenant_stats"
    push_interval_s: float = 15.0
    cache_ttl_s: float = 30.0


class ShadowSettings(_Strict):
    """Shadow traffic (:mod:`serving.gateway.shadow`): ``share`` of answered requests mirrored to ``version``."""

    version: str | None = Field(None, description="The challenger's version label in routing.json; None: off")
    share: float = Field(0.0, ge=0, le=1, description="Share of answered requests mirrored (by request id hash)")
    queue_size: int = Field(64, ge=1, description="Mirrored requests waiting at most; more are shed (counted)")
    concurrency: int = Field(1, ge=1, description="Mirrored requests in flight to the engines at once")
    timeout_s: float = Field(60.0, gt=0, description="A mirrored request's whole engine call")


class ArmSettings(_Strict):
    version: str = Field(description="The version label in routing.json this arm is served by")
    weight: float = Field(gt=0, description="Relative share of the assignment units")


class ExperimentSettings(_Strict):
    """An A/B test (:mod:`serving.gateway.experiments`): unpinned requests go to the arm their unit hashes to."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    unit: Literal["tenant", "request"] = Field("tenant", description="What is assigned: a tenant or each request")
    arms: dict[str, ArmSettings] = Field(
        min_length=2, description="Arm name -> version and weight; the first is control"
    )


def parse_arms(entries: list[str]) -> dict[str, ArmSettings]:
    """``["control=3:1", "treatment=4:1"]`` (``arm=version:weight``, weight 1 when left out) as arms, in order."""
    arms = {}
    for entry in entries:
        name, eq, rest = entry.partition("=")
        version, _, weight = rest.partition(":")
        if not eq or not name or not version:
            raise ValueError(f"experiment arm {entry!r}: expected 'arm=version[:weight]'")
        try:
            arms[name] = ArmSettings(version=version, weight=float(weight or 1))
        except ValueError as exc:
            raise ValueError(f"experiment arm {entry!r}: {exc}") from exc
    return arms


class GatewaySettings(_Strict):
    host: str = "127.0.0.1"
    port: int = 8700
    model_name: str = "crawl2serve"
    routing_file: str
    keys_file: str
    log_dir: str
    reports_dir: str | None = Field(
        None,
        description="Folder of the hourly drift reports ({reports_dir}/<hour>/report.html), served read-only "
        "at /reports/drift/<hour>; None: no reports route",
    )
    redis_url: str | None = Field(None, description="Shared rate-limit state between replicas; None: in memory")
    engines: list[EngineSettings]
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings)
    feast: FeastSettings | None = None
    tiers: dict[str, TierSettings] = Field(default_factory=dict)
    log_flush_interval_s: float = 0.05
    log_commit_before_answer: bool = Field(
        True,
        description="Answer a request only once its log row is fsync'ed "
        "(off: a crash can lose the rows of answered requests; for comparison)",
    )
    log_commit_timeout_s: float = Field(
        10.0,
        ge=0,
        description="How long a request waits for its row to be "
        "committed while the disk fails, before a 503 log_unavailable",
    )
    workers: int = Field(1, ge=1, description="Gateway processes on the port (uvicorn workers); >1 wants redis_url")
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    experiment: ExperimentSettings | None = None
    rag: RagSettings | None = Field(None, description="The retrieval-augmented model (serving.gateway.rag); None: off")

    @classmethod
    def load(cls, path: str) -> "GatewaySettings":
        data = yaml.safe_load(Path(path).read_text()) or {}
        return cls.model_validate(data)

    def dump(self, path: str) -> None:
        """Write as YAML atomically."""
        write_text(path, yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))
