"""The gateway's OpenAPI document: every endpoint's request body (the pydantic schemas, with this gateway's
configured limits as maxima) and every answer it can give (200, and the OpenAI-shaped 4xx/5xx errors), so that
clients and API fuzzers (schemathesis, in the tests) can exercise it.

The request bodies are read by the gateway itself (as bytes arrive, to enforce the size limit), not by FastAPI,
so they are declared here rather than inferred from handler signatures.
"""

import copy

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .feedback import FeedbackRequest
from .schemas import ChatRequest, CompletionRequest, ErrorResponse
from .settings import GatewaySettings

REF = "#/components/schemas/{model}"
ERRORS = {
    "400": "Invalid request: the field is named in error.param",
    "401": "Missing or invalid API key",
    "404": "Unknown model",
    "413": "Request body over the size limit",
    "429": "Rate limit exceeded, or a budget spent (error.code budget_exceeded: the budget, the spend and its "
    "reset); see the Retry-After header",
    "502": "The engine failed on this request, or its answer does not match the requested response_format "
    "(error.code output_schema_invalid)",
    "503": "No engine available, or the request could not be recorded in the inference log (error.code "
    "log_unavailable); see the Retry-After header",
}
AUTH_ERRORS = {k: ERRORS[k] for k in ("401",)}


def _schema(model, limits) -> tuple[dict, dict]:
    schema = model.model_json_schema(ref_template=REF)
    defs = schema.pop("$defs", {})
    props = schema["properties"]
    for name in ("max_tokens", "max_completion_tokens"):
        if name in props:
            for option in props[name].get("anyOf", [props[name]]):
                if option.get("type") == "integer":
                    option["maximum"] = limits.max_tokens
    if "prompt" in props:
        for option in props["prompt"].get("anyOf", [props["prompt"]]):
            if option.get("type") == "string":
                option.update(minLength=1, maxLength=limits.max_prompt_chars)
            elif option.get("type") == "array":
                option.update(minItems=1, maxItems=1)
                option["items"].update(minLength=1, maxLength=limits.max_prompt_chars)
    if "messages" in props:
        props["messages"]["maxItems"] = limits.max_messages
    return schema, defs


def _responses(codes: dict[str, str], ok: dict) -> dict:
    error = {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}
    return {"200": ok, **{code: {"description": text, "content": copy.deepcopy(error)} for code, text in codes.items()}}


def document(app: FastAPI, settings: GatewaySettings) -> dict:
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        routes=app.routes,
        description="OpenAI-compatible gateway of crawl2serve (bearer API keys).",
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema(ref_template=REF)
    schemas.update(schemas["ErrorResponse"].pop("$defs", {}))
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, model in (("/v1/completions", CompletionRequest), ("/v1/chat/completions", ChatRequest)):
        schema, defs = _schema(model, settings.limits)
        schemas[model.__name__] = schema
        schemas.update(defs)
        op = doc["paths"][path]["post"]
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
        op["security"] = [{"bearer": []}]
        op["responses"] = _responses(
            ERRORS,
            {
                "description": "The completion (JSON), or an SSE stream when stream is true",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
        )
    schemas["FeedbackRequest"] = FeedbackRequest.model_json_schema(ref_template=REF)
    feedback = doc["paths"]["/v1/feedback"]["post"]
    feedback["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="FeedbackRequest")}}},
    }
    feedback["security"] = [{"bearer": []}]
    feedback["responses"] = _responses(
        {k: ERRORS[k] for k in ("400", "401", "413")}
        | {"503": "The feedback could not be recorded in the inference log (log_unavailable)"},
        {"description": "The recorded rating", "content": {"application/json": {"schema": {"type": "object"}}}},
    )
    models = doc["paths"]["/v1/models"]["get"]
    models["security"] = [{"bearer": []}]
    models["responses"] = _responses(
        AUTH_ERRORS,
        {"description": "The public model names", "content": {"application/json": {"schema": {"type": "object"}}}},
    )
    doc["paths"]["/ready"]["get"]["responses"]["503"] = {
        "description": "Not ready (no route, every engine's breaker open, or the log failing)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    app.openapi_schema = doc
    return doc
