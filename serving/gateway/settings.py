"""Gateway configuration: one YAML file (written by the serving asset, or by hand), validated on load."""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..atomic import write_text
from ..engines.base import FEATURES
from .budgets import BudgetSettings
from .costs import DEFAULT_PRICES, PriceSettings
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
    backend: str | None = Field(None, description="The engine's backend (cpu, sglang), named in error messages")
    features: list[Literal[FEATURES]] = Field(
        default_factory=list,
        description="What it honours beyond plain text (serving.engines.base.FEATURES: response_format.json_object, "
        "response_format.json_schema, tools, tool_choice); a request needing one goes only to engines listing it",
    )


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
    spend_push_source: str = "tenant_spend_push"
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


class CacheSettings(_Strict):
    """The response cache (:mod:`serving.gateway.cache`): exact-match answers of deterministic requests
    (temperature 0 or a fixed seed), per tenant, keyed by the routed version and the normalized request."""

    enabled: bool = Field(False, description="Answer repeated deterministic requests from the cache")
    redis_url: str | None = Field(
        None, description="Redis shared by every replica (redis://host:port/db); None: in this process's memory"
    )
    prefix: str = Field("c2s:cache:", description="Redis key prefix; a key is <prefix><tenant>:<sha256>")
    ttl_s: float = Field(3600.0, gt=0, description="How long an answer is kept")
    max_bytes: int = Field(64 * 2**20, ge=1, description="In memory: bytes held at most (least recently used out)")
    max_entry_bytes: int = Field(256 * 2**10, ge=1, description="Answers larger than this are not cached")
    timeout_s: float = Field(0.25, gt=0, description="Redis: a lookup or store's deadline (then a miss)")


class RoutingRuleSettings(_Strict):
    """One rule of the request router (:mod:`serving.gateway.request_router`): a request that meets every
    condition given (prompt tokens, requested max_tokens, tenant tier) is served by ``version`` and/or on
    ``engines`` instead of its routed version; the first matching rule wins."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    version: str | None = Field(None, description="The version label in routing.json to serve from; None: routed")
    engines: list[str] | None = Field(None, min_length=1, description="Only these engines (names); None: all")
    max_prompt_tokens: int | None = Field(None, ge=0, description="Matches prompts of at most this many tokens")
    min_prompt_tokens: int | None = Field(None, ge=0, description="Matches prompts of at least this many tokens")
    max_requested_tokens: int | None = Field(None, ge=1, description="Matches max_tokens of at most this")
    tiers: list[str] | None = Field(None, min_length=1, description="Matches tenants of these tiers")

    @model_validator(mode="after")
    def _sends_somewhere(self):
        if self.name == "none":
            raise ValueError("routing rule name 'none' is reserved (requests no rule matched)")
        if self.version is None and self.engines is None:
            raise ValueError(f"routing rule {self.name!r}: give a version, engines or both")
        return self


class BatchSettings(_Strict):
    """The OpenAI Batch API (:mod:`serving.gateway.batches`): where uploaded files and batches are kept, and
    how hard batches may push the engines beside interactive traffic."""

    dir: str | None = Field(
        None, description="Folder of uploaded files and batches; None: 'batches' beside routing_file"
    )
    concurrency: int = Field(8, ge=1, description="Batch lines in flight at once, all batches of this process")
    chunk_size: int = Field(16, ge=1, description="Lines per result chunk written to disk (a kill loses one)")
    max_open_per_tenant: int = Field(2, ge=1, description="Batches a tenant may have open (not finished) at once")
    max_file_bytes: int = Field(50_000_000, ge=1, description="Largest file upload")
    max_lines: int = Field(50_000, ge=1, description="Most request lines in one batch input file")


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


def parse_rules(entries: list[str]) -> list[RoutingRuleSettings]:
    """``["short-free=version:2,max_prompt_tokens:64,tiers:free|pro"]`` (``name=field:value,...``, a list's
    items ``|``-separated) as routing rules, in order (the form a Dagster launchpad list of strings takes)."""
    lists = {"engines", "tiers"}
    rules = []
    for entry in entries:
        name, eq, rest = entry.partition("=")
        fields: dict = {"name": name}
        for part in filter(None, rest.split(",")):
            key, colon, value = part.partition(":")
            if not colon or not key.strip():
                raise ValueError(f"routing rule {entry!r}: expected 'name=field:value,...', got {part!r}")
            key = key.strip()
            fields[key] = value.split("|") if key in lists else value.strip()
        if not eq or not name:
            raise ValueError(f"routing rule {entry!r}: expected 'name=field:value,...'")
        try:
            rules.append(RoutingRuleSettings.model_validate(fields))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"routing rule {entry!r}: {where + ': ' if where else ''}{first['msg']}") from exc
    return rules


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
    http: Literal["h11", "httptools"] = Field(
        "h11",
        description="uvicorn's HTTP/1.1 implementation. Measured within noise of each other in front of SGLang "
        "on one H200 (README, GPU figures); h11 by default, so the parser does not change with what else happens "
        "to be installed (uvicorn's own default takes httptools when it is)",
    )
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    experiment: ExperimentSettings | None = None
    prices: dict[str, PriceSettings] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description="Price per model version label, engine name or 'default' (serving.gateway.costs)",
    )
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    routing_rules: list[RoutingRuleSettings] = Field(
        default_factory=list, description="Request routing rules, first match wins (serving.gateway.request_router)"
    )
    batch: BatchSettings = Field(default_factory=BatchSettings)

    def batch_dir(self) -> str:
        return self.batch.dir or str(Path(self.routing_file).parent / "batches")

    rag: RagSettings | None = Field(None, description="The retrieval-augmented model (serving.gateway.rag); None: off")

    @classmethod
    def load(cls, path: str) -> "GatewaySettings":
        data = yaml.safe_load(Path(path).read_text()) or {}
        return cls.model_validate(data)

    def dump(self, path: str) -> None:
        """Write as YAML atomically."""
        write_text(path, yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))
