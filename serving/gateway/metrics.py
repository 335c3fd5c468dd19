"""Prometheus metrics of the gateway (its own registry, served at ``/metrics``).

With several worker processes (``workers > 1``), prometheus_client's multiprocess mode is on: ``python -m
serving gateway`` makes a folder and names it in ``PROMETHEUS_MULTIPROC_DIR`` before the workers start (the one
place that sets it), every worker writes its samples to files there and ``/metrics`` sums them; gauges say how
(in-flight requests summed over live workers, circuit state per worker pid). Which of the two ``/metrics``
serves is decided by configuration (``metrics_dir``), never by reading the environment at request time:
``import feast`` sets that same variable process-wide, and a gateway that followed it served empty scrapes.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


class GatewayMetrics:
    def __init__(self, multiprocess_dir: str | None = None):
        self.multiprocess_dir = multiprocess_dir
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "c2s_gateway_requests", "Requests by endpoint and HTTP status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "c2s_gateway_request_seconds",
            "Request latency (whole response)",
            ["endpoint", "route", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "c2s_gateway_time_to_first_token_seconds",
            "Streaming: time to the first content chunk",
            ["endpoint", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "c2s_gateway_tokens", "Tokens in (prompt) and out (completion)", ["direction", "model_version"], registry=r
        )
        self.errors = Counter("c2s_gateway_errors", "Errors by kind", ["kind"], registry=r)
        self.rate_limited = Counter(
            "c2s_gateway_rate_limited", "Requests rejected by the rate limiter", ["limit", "tier"], registry=r
        )
        self.circuit = Gauge(
            "c2s_gateway_circuit_state",
            "Circuit breaker per engine: 0 closed, 1 half-open, 2 open",
            ["engine"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.upstream = Counter(
            "c2s_gateway_upstream_requests", "Engine calls by engine and outcome", ["engine", "outcome"], registry=r
        )
        self.batch_lines = Counter(
            "c2s_gateway_batch_lines",
            "Batch API lines by outcome (rate_limited: refused by the tenant's limit, sent again)",
            ["outcome"],
            registry=r,
        )
        self.verdicts = Counter("c2s_gateway_guardrail_verdicts", "Guardrail verdicts", ["stage", "action"], registry=r)
        self.inflight = Gauge(
            "c2s_gateway_inflight_requests", "Requests being served", registry=r, multiprocess_mode="livesum"
        )
        self.health = Gauge(
            "c2s_gateway_engine_healthy",
            "Last health probe per engine: 1 healthy, 0 not",
            ["engine"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.log_pending = Gauge(
            "c2s_gateway_log_pending_rows",
            "Inference-log rows not yet on disk",
            registry=r,
            multiprocess_mode="livesum",
        )

        self.shadow = Counter(
            "c2s_gateway_shadow_requests",
            "Mirrored (shadow) requests by outcome: queued, shed (queue full), ok, failed",
            ["outcome"],
            registry=r,
        )
        self.shadow_queue = Gauge(
            "c2s_gateway_shadow_queue", "Mirrored requests waiting", registry=r, multiprocess_mode="livesum"
        )
        self.feedback = Counter("c2s_gateway_feedback", "Feedback ratings recorded", ["rating"], registry=r)
        self.structured = Counter(
            "c2s_gateway_structured_outputs",
            "Answers to json_object / json_schema requests checked against their format: valid, invalid",
            ["format", "outcome"],
            registry=r,
        )
        # cost and budgets (serving.gateway.costs, serving.gateway.budgets)
        self.cost = Counter(
            "c2s_gateway_cost_usd",
            "Cost of requests in USD by tenant and model version",
            ["tenant", "model_version"],
            registry=r,
        )
        self.spend = Gauge(
            "c2s_gateway_tenant_spend_usd",
            "A tenant's spend in USD in the current UTC hour, day and month",
            ["tenant", "period"],
            registry=r,
            multiprocess_mode="max",  # every worker reads the same shared (Redis) spend: the freshest is the max
        )
        self.budget_rejected = Counter(
            "c2s_gateway_budget_rejected", "Requests refused because a budget was spent", ["budget"], registry=r
        )
        self.budget_alerts = Counter(
            "c2s_gateway_budget_alerts", "Alerts sent at alert_share of a budget", ["budget"], registry=r
        )
        self.retrieval_seconds = Histogram(
            "c2s_gateway_retrieval_seconds",
            "RAG: retrieval latency (search, fusion, reranking)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.retrieval_hits = Histogram(
            "c2s_gateway_retrieval_hits",
            "RAG: chunks in a request's context (0: empty retrieval)",
            buckets=(0, 1, 2, 4, 8, 16),
            registry=r,
        )
        self.semantic_cache = Counter(
            "c2s_gateway_semantic_cache", "RAG: semantic cache lookups by outcome (hit, miss)", ["outcome"], registry=r
        )
        # every outcome exported from the start (at 0), so that rates and panels exist before the first event
        for outcome in ("ok", "failed", "rate_limited"):
            self.batch_lines.labels(outcome)
        for outcome in ("hit", "miss"):
            self.semantic_cache.labels(outcome)

    def exposition(self) -> bytes:
        """The text format of all samples: this process's, or every worker's in multiprocess mode."""
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def circuit_changed(self, engine: str, old: str, new: str) -> None:
        self.circuit.labels(engine).set(CIRCUIT_STATES[new])
