"""``POST /v1/feedback``: a client's rating of an answer, recorded durably in the inference log.

Body: ``{"request_id": "req-<32 hex>", "rating": 1 | 0 | -1}`` (good, neutral, bad). The rating becomes one
inference-log row (``role="feedback"``, the rated ``request_id``, the rater's ``tenant`` and ``key_id``,
``rating``), committed (fsync'ed) before the 200 answer, like every request's row. Whether the id names an
answer of the same tenant is checked where the rows are joined (``ab_report``), not here: the gateway keeps no
index of past requests. A rejected feedback (bad key, bad body) is answered and not logged.
"""

from typing import Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .call import Call
from .errors import ApiError
from .logstore import InferenceLog, LogUnavailable
from .metrics import GatewayMetrics
from .schemas import validated
from .settings import LimitSettings
from .steps import ReadBody

REQUEST_ID = r"^req-[0-9a-f]{32}$"


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(pattern=REQUEST_ID, description="The id of the rated answer (its X-Request-Id)")
    rating: Literal[-1, 0, 1] = Field(description="1 good, 0 neutral, -1 bad")


class Feedback:
    def __init__(self, inference_log: InferenceLog, metrics: GatewayMetrics):
        self.log, self.metrics = inference_log, metrics
        self.read = ReadBody(LimitSettings(max_body_bytes=4096))

    async def handle(self, request: Request, authenticate) -> JSONResponse:
        call = Call(request, "feedback")
        try:
            await authenticate(call)
            await self.read(call)
            body = validated(FeedbackRequest, call.body)
            call.row.update(
                request_id=body.request_id,
                role="feedback",
                rating=body.rating,
                latency_ms=round(call.elapsed_ms(), 3),
            )
            try:
                await self.log.commit(call.row)
            except LogUnavailable as exc:
                raise ApiError(
                    503,
                    "the feedback could not be recorded; retry later",
                    kind="server_error",
                    code="log_unavailable",
                    headers={"Retry-After": "5"},
                ) from exc
        except ApiError as err:
            return err.response()
        self.metrics.feedback.labels(str(body.rating)).inc()
        return JSONResponse({"object": "feedback", "request_id": body.request_id, "rating": body.rating})
