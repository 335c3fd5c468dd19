"""One request on its way through the gateway's steps: what each step found out, and the request's log row."""

import time
import uuid

from fastapi import Request

from .logrow import LogRow
from .logstore import utc_now_iso


def new_row(endpoint: str) -> LogRow:
    """The inference-log row of a request that has just arrived (the other fields at their defaults)."""
    return LogRow(request_id=f"req-{uuid.uuid4().hex}", ts=utc_now_iso(), endpoint=endpoint)


class Call:
    """Filled in step by step (see :mod:`serving.gateway.steps`); the row is written once, when the call ends."""

    def __init__(self, request: Request | None, endpoint: str):
        self.request = request
        self.endpoint = endpoint
        self.start = time.perf_counter()
        self.row = new_row(endpoint)
        self.reasons: list[str] = []  # guardrail reasons, ";"-joined into the row
        self.headers: dict[str, str] = {"X-Request-Id": self.row.request_id}
        self.api_key = None  # auth.ApiKey
        self.body: dict | None = None  # the parsed JSON body
        self.req = None  # schemas.ChatRequest | schemas.CompletionRequest
        self.prompt = ""
        self.max_tokens = 0
        self.prompt_tokens = 0  # counted with the served version's tokenizer (steps.Limit)
        self.route = None  # routing.Route
        self.tier = None  # ratelimit.Tier
        self.reserved = 0  # tokens taken from the tenant's budget, settled when the call ends
        self.served = None  # upstream.Served
        self.engine_path = ""  # the engine endpoint and payload the call was sent with (what a shadow mirrors)
        self.engine_payload: dict | None = None
        self.contract = None  # structured.OutputContract: what the answer must be (response_format), if anything
        self.tool_contract = None  # structured.ToolContract: what its tool calls must be (strict functions)
        self.cache_key: str | None = None  # the response cache's key of a deterministic call (cache.ResponseCache)
        self.sources: list[str] = []  # RAG: the context's source URLs, cited at the answer's end (gateway.rag)
        self.semantic_hit: dict | None = None  # RAG: the semantic cache's answer (then no engine is called)
        self.semantic_key: str | None = None  # RAG: where this call's answer goes in the semantic cache, and its
        self.semantic_vector = None  # question's embedding
        self.ended = False

    @property
    def chat(self) -> bool:
        return self.endpoint == "chat.completions"

    @property
    def request_id(self) -> str:
        return self.row.request_id

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0
