"""One row of the inference log: :class:`LogRow`, the log's single schema.

The gateway fills one :class:`LogRow` per request, answered or rejected, and the inference log
(:mod:`serving.gateway.logstore`) writes it as one JSON object per line, its fields in declaration order.
Everything else is derived from the class: :data:`LOG_FIELDS` (name -> type) and :func:`validate_row` for
the writer, and the typed frame monitoring reads (``assets.monitoring.logs.LOG_SCHEMA``: ``str`` -> String,
``int`` -> Int64, ``float`` -> Float64, ``bool`` -> Boolean, ``X | None`` nullable, :data:`TIMESTAMP_FIELDS`
-> Datetime(us, UTC)). A field added here is written, validated and read without another edit.

Values: ints are accepted where a float is declared (JSON does not tell 12 from 12.0), a bool is never
taken for an int, floats must be finite (JSON has no NaN).
"""

import dataclasses
import json
import math
from dataclasses import dataclass
from types import UnionType
from typing import Any


@dataclass(slots=True)
class LogRow:
    """The inference-log row of one request (defaults: what a request rejected before routing leaves)."""

    request_id: str = ""
    """The gateway's id of the request, ``req-<32 hex>``: the response's ``id`` and ``X-Request-Id``."""
    ts: str = ""
    """When the request arrived: ISO-8601, UTC, microseconds (``logstore.utc_now_iso()``); its UTC hour is
    the spool folder the row is filed under."""
    tenant: str = ""
    """The tenant of the API key ("" when the key was missing or invalid)."""
    key_id: str = ""
    """The id of the API key (never the key itself)."""
    endpoint: str = ""
    """``"chat.completions"`` or ``"completions"``."""
    model: str = ""
    """The model name the client asked for (``crawl2serve``, ``crawl2serve@3``)."""
    served_model: str = ""
    """The model name the serving engine was called with (the route's model on that engine)."""
    model_version: str = ""
    """The registered model version routed to."""
    adapter: str = ""
    """The adapter (or merged folder) the engine was asked for."""
    engine: str = ""
    """The engine that served the request ("" when none was called)."""
    route: str = ""
    """``"stable"``, ``"canary"``, ``"pinned"``, ``"experiment"`` (an A/B arm), ``"shadow"`` (a mirrored answer), ``"rule"`` (a request-routing rule, see ``routing_rule``) or ``"fallback"`` (a later engine than the route's first served)."""
    stream: bool = False
    """Whether the client asked for a stream (SSE)."""
    status: int = 200
    """The HTTP status the client got (499: the client left mid-stream)."""
    error: str | None = None
    """The error kind (``rate_limit_requests``, ``engine_unavailable``, ``log_unavailable``, ...); None on
    success."""
    prompt: str = ""
    """The prompt text (chat messages rendered as the gateway screens them)."""
    output: str = ""
    """The output text as sent to the client ("" when blocked by the output guardrail)."""
    prompt_tokens: int = 0
    """Prompt tokens, as the engine counted them (an estimate when it did not say)."""
    completion_tokens: int = 0
    """Completion tokens, as the engine counted them (an estimate when it did not say)."""
    cost_usd: float = 0.0
    """What the request cost in USD: its prompt and completion tokens at the served version's price
    (:mod:`serving.gateway.costs`: per 1k tokens, or a self-hosted engine's GPU-hour cost over its measured
    throughput); 0 for a request no engine answered. Added to the tenant's spend (:mod:`serving.gateway.budgets`)."""
    latency_ms: float = 0.0
    """From the request's arrival to its row being finished, in milliseconds."""
    ttft_ms: float | None = None
    """Time to the first streamed token, in milliseconds; None for non-streamed requests."""
    input_verdict: str = "allow"
    """The prompt guardrail's verdict: ``"allow"``, ``"flag"`` or ``"block"``."""
    output_verdict: str = "allow"
    """The output guardrail's verdict: ``"allow"``, ``"flag"`` or ``"block"``."""
    verdict_reasons: str = ""
    """The guardrails' reasons, ``";"``-joined."""
    finish_reason: str | None = None
    """The engine's finish reason (``stop``, ``length``, ``content_filter``, ``error``, ``cancelled``)."""
    role: str = "primary"
    """``"primary"`` (the answer the client got), ``"shadow"`` (the challenger's answer to the same request,
    mirrored, same ``request_id``; never sent) or ``"feedback"`` (a client's rating of ``request_id``)."""
    experiment: str = ""
    """The A/B test the request was assigned in ("" when none)."""
    arm: str = ""
    """The arm of ``experiment`` that served the request ("" when none)."""
    rating: int | None = None
    """Feedback rows: the client's rating of ``request_id`` (1 good, 0 neutral, -1 bad); None otherwise."""
    response_format: str = ""
    """Chat: the ``response_format`` asked for (``text``, ``json_object``, ``json_schema``; "" when none)."""
    tool_calls: str = ""
    """The answer's tool calls as sent to the client, a JSON array (``[{id, type, function}]``); "" when none."""
    cache: str = ""
    """The response cache (:mod:`serving.gateway.cache`): ``"hit"`` (answered from it, no engine called),
    ``"miss"`` (looked up, served by an engine, then stored), ``"bypass"`` (not deterministic: neither
    temperature 0 nor a seed) or "" (cache off, or the request ended before the lookup)."""
    routing_rule: str = ""
    """The request-routing rule that chose the serving version or engines (:mod:`serving.gateway.request_router`;
    the row's ``route`` is then ``"rule"``); "" when none matched."""
    batch_id: str = ""
    """The Batch API batch (``batch_<hex>``) the request was a line of ("" for a request of its own)."""
    retrieval_version: str = ""
    """The retrieval index version searched for a ``crawl2serve-rag`` request ("" for other models)."""
    retrieval_ms: float | None = None
    """Retrieval latency (search, fusion, reranking) in milliseconds; None when nothing was retrieved for."""
    retrieval_hits: int | None = None
    """Chunks put in the context (0: the retrieval came back empty); None for other models."""
    retrieval_top_score: float | None = None
    """The best dense (cosine) score among the context's chunks; None when none came from the dense list."""
    retrieval_urls: str = ""
    """The context's source URLs, space-separated, in citation order ([1] first)."""
    semantic_cache_similarity: float | None = None
    """RAG: the cosine of the closest cached question (a hit at or above the threshold: route
    ``semantic_cache``); None when the cache was not asked."""

    def update(self, **values: Any) -> None:
        """Set several fields at once (an unknown name raises AttributeError)."""
        for name, value in values.items():
            setattr(self, name, value)

    def validate(self) -> None:
        """Raise ValueError naming the first field whose value does not have the field's type."""
        for name, expected in LOG_FIELDS.items():
            _check(name, getattr(self, name), expected)

    def to_json(self) -> dict[str, Any]:
        """The row as the JSON object written to the log (fields in declaration order)."""
        return {name: getattr(self, name) for name in LOG_FIELDS}

    def json_line(self) -> bytes:
        """The row as one line of the log: compact UTF-8 JSON and a newline (validated first)."""
        self.validate()
        return json.dumps(self.to_json(), ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "LogRow":
        """The row a log line's JSON object holds; ValueError naming the first missing, unknown or mistyped
        field."""
        validate_row(obj)
        return cls(**obj)


#: The row schema, derived from :class:`LogRow`: every row has exactly these fields, of these types.
LOG_FIELDS: dict[str, type | UnionType] = {f.name: f.type for f in dataclasses.fields(LogRow)}

#: Fields holding an ISO-8601 timestamp (a string in JSON; monitoring types them as datetimes).
TIMESTAMP_FIELDS: tuple[str, ...] = ("ts",)


def validate_row(row: dict[str, Any]) -> None:
    """Raise ValueError naming the first missing, unknown or mistyped field of a row given as a dict."""
    if not isinstance(row, dict):
        raise ValueError(f"an inference log row is a JSON object, got {type(row).__name__}")
    for name in row:
        if name not in LOG_FIELDS:
            raise ValueError(f"unknown inference log field {name!r}")
    for name, expected in LOG_FIELDS.items():
        if name not in row:
            raise ValueError(f"inference log row lacks field {name!r}")
        _check(name, row[name], expected)


def base_type(expected: type | UnionType) -> type:
    """The type a field holds when it is not None (``str | None`` -> ``str``)."""
    if isinstance(expected, UnionType):
        (t,) = [a for a in expected.__args__ if a is not type(None)]
        return t
    return expected


def nullable(expected: type | UnionType) -> bool:
    return isinstance(expected, UnionType) and type(None) in expected.__args__


def _check(name: str, value: Any, expected: type | UnionType) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"inference log field {name!r} must be finite, got {value!r}")
    if not _is_instance(value, expected):
        raise ValueError(f"inference log field {name!r} must be {_type_name(expected)}, got {type(value).__name__}")


def _is_instance(value: Any, expected: type | UnionType) -> bool:
    if isinstance(value, bool):  # bool is an int subclass: only a bool field takes one
        return _accepts(expected, bool)
    if isinstance(value, int) and _accepts(expected, float):
        return True
    return isinstance(value, expected)


def _type_name(expected: type | UnionType) -> str:
    return expected.__name__ if isinstance(expected, type) else str(expected).replace("NoneType", "None")


def _accepts(expected: type | UnionType, t: type) -> bool:
    return expected is t or (isinstance(expected, UnionType) and t in expected.__args__)
