"""Structured output and tools at the gateway: what a chat request asks beyond plain text, which engines honour
it, and whether an answer matches the JSON Schema it asked for.

A request's ``response_format`` (``json_object``, ``json_schema``) and ``tools`` / ``tool_choice`` name
**features** (:data:`serving.engines.base.FEATURES`). Each engine of the gateway's configuration lists the ones it
honours (``EngineSettings.features``, written by the serving resource from the engine class: SGLang constrains
decoding to a JSON Schema with its grammar backend and parses tool calls with ``--tool-call-parser``;
``transformers serve`` renders ``tools`` through the chat template and ignores ``response_format``). A request is
sent only to the engines of its route that have every feature it needs; when none has, it is a 400
``unsupported_parameter`` naming the field and the engines. A request with ``tools`` for a version whose chat
template never reads ``tools`` is a 400 as well: the model would never see them.

The JSON Schemas a request carries (``response_format.json_schema.schema``, each tool's ``parameters``) are checked
against their metaschema (``jsonschema``) before anything is sent: a 400 naming the field. The answer to a
``json_object`` / ``json_schema`` request is checked by :class:`OutputContract` before it is returned: a whole
answer that is not a JSON object / does not match the schema is a 502 ``output_schema_invalid`` naming the first
mismatch (an engine's constrained decoding makes this rare; a ``max_tokens`` cut-off mid-object is the usual
cause); a stream is relayed as it arrives and checked once it ends: a mismatch ends it with an error event of the
same code instead of its last chunk (the openai client raises ``APIError``). Either way the log row says
``output_schema_invalid`` and keeps the text. Tool calls are checked the same way when a function is ``strict``
(:class:`ToolContract`: calls of the request's functions, a strict one's arguments matching its ``parameters``),
which needs an engine constraining them (``tools.strict``).
"""

import json
from dataclasses import dataclass

import jsonschema
from jsonschema.exceptions import SchemaError

from ..engines.base import JSON_OBJECT, JSON_SCHEMA, STRICT_TOOLS, TOOL_CHOICE, TOOLS
from .errors import ApiError
from .schemas import ChatRequest

OUTPUT_SCHEMA_INVALID = "output_schema_invalid"


@dataclass(frozen=True)
class Need:
    """A feature a request needs: the request field asking for it, and what it asks (for messages)."""

    param: str
    asks: str


def needed_features(req) -> dict[str, Need]:
    """The features a request needs (none for a completion, or a chat request for plain text)."""
    if not isinstance(req, ChatRequest):
        return {}
    needs = {}
    kind = req.response_format.type if req.response_format is not None else "text"
    if kind == "json_object":
        needs[JSON_OBJECT] = Need("response_format", "response_format json_object")
    elif kind == "json_schema":
        needs[JSON_SCHEMA] = Need("response_format", "response_format json_schema")
    if req.tools:
        needs[TOOLS] = Need("tools", "tools")
        strict = [t.function.name for t in req.tools if t.function.strict]
        if strict:
            needs[STRICT_TOOLS] = Need("tools", f"strict function {strict[0]!r}")
    if req.tool_choice is not None and req.tool_choice != "auto":
        choice = req.tool_choice if isinstance(req.tool_choice, str) else f"function {req.tool_choice.function.name}"
        needs[TOOL_CHOICE] = Need("tool_choice", f"tool_choice {choice!r}")
    return needs


def _check_schema(schema: dict, param: str) -> None:
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        at = "/".join(str(p) for p in exc.path)
        raise ApiError(
            400,
            f"invalid value for {param!r}: not a valid JSON Schema ({exc.message}{f' at {at}' if at else ''})",
            param=param,
            code="invalid_json_schema",
        ) from exc


def check_schemas(req) -> None:
    """Every JSON Schema of the request against its metaschema (draft from ``$schema``, else 2020-12)."""
    if not isinstance(req, ChatRequest):
        return
    if req.response_format is not None and req.response_format.type == "json_schema":
        _check_schema(req.response_format.json_schema.schema_, "response_format.json_schema.schema")
    for i, tool in enumerate(req.tools or []):
        if tool.function.parameters is not None:
            _check_schema(tool.function.parameters, f"tools.{i}.function.parameters")


def capable_engines(
    models: dict[str, str], features: dict[str, frozenset[str]], needs: dict[str, Need]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``(models of the engines having every needed feature, missing features per engine left out)``."""
    kept, missing = {}, {}
    for engine, model in models.items():
        lacking = [f for f in needs if f not in features.get(engine, frozenset())]
        if lacking:
            missing[engine] = lacking
        else:
            kept[engine] = model
    return kept, missing


def unsupported(
    needs: dict[str, Need], missing: dict[str, list[str]], backends: dict[str, str], model: str
) -> ApiError:
    """The 400 of a request that no engine of its route can serve as asked (names the first missing feature)."""
    feature = next(f for f in needs if any(f in lacking for lacking in missing.values()))
    need = needs[feature]
    engines = ", ".join(
        name + (f" ({backends[name]})" if backends.get(name) else "")
        for name, lacking in missing.items()
        if feature in lacking
    )
    return ApiError(
        400,
        f"{need.asks} is not supported by the engine serving {model}: {engines} "
        f"(an engine that honours it lists {feature!r} in its features)",
        param=need.param,
        code="unsupported_parameter",
    )


def _not_json(name: str):
    raise ValueError(f"{name} is not a JSON number")


@dataclass(frozen=True)
class OutputContract:
    """What an answer's text must be: a JSON object (``json_object``), or JSON matching ``schema``."""

    kind: str  # "json_object" | "json_schema"
    schema: dict | None = None

    @classmethod
    def of(cls, req) -> "OutputContract | None":
        if not isinstance(req, ChatRequest) or req.response_format is None or req.response_format.type == "text":
            return None
        if req.response_format.type == "json_object":
            return cls("json_object")
        return cls("json_schema", req.response_format.json_schema.schema_)

    def problem(self, text: str) -> str | None:
        """Why ``text`` breaks the contract (the first mismatch, with its JSON path), or None when it holds."""
        return _problem(text, None if self.kind == "json_object" else self.schema, "the answer")


@dataclass(frozen=True)
class ToolContract:
    """What an answer's tool calls must be when some function is ``strict``: calls of the request's functions,
    the strict ones' arguments a JSON object matching their ``parameters`` (any object without)."""

    functions: dict[str, dict | None]  # every function of the request -> its parameters if strict, else None
    strict: frozenset[str]
    kind = "strict_tools"

    @classmethod
    def of(cls, req) -> "ToolContract | None":
        if not isinstance(req, ChatRequest) or not any(t.function.strict for t in req.tools or []):
            return None
        return cls(
            {t.function.name: t.function.parameters for t in req.tools},
            frozenset(t.function.name for t in req.tools if t.function.strict),
        )

    def problem(self, calls: list[dict]) -> str | None:
        for call in calls:
            function = call.get("function") or {}
            name = function.get("name")
            if name not in self.functions:
                return f"the answer calls {name!r}, which is not one of the request's functions"
            if name in self.strict:
                found = _problem(function.get("arguments") or "", self.functions[name], f"the arguments of {name!r}")
                if found:
                    return found
        return None


def _problem(text: str, schema: dict | None, what: str) -> str | None:
    """Why ``text`` is not JSON matching ``schema`` (None: any JSON object), or None when it is."""
    try:
        value = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:
        return f"{what} is not JSON ({exc})"
    if schema is None:
        return None if isinstance(value, dict) else f"{what} is JSON but not an object ({type(value).__name__})"
    validator = jsonschema.validators.validator_for(schema)(schema)
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except Exception as exc:  # the client's schema, applied: an unresolvable $ref, a regex Python rejects
        return f"the schema could not be applied ({type(exc).__name__}: {exc})"
    if error is None:
        return None
    return f"{what} does not match the schema at {error.json_path}: {error.message}"


def tool_calls_text(calls: list[dict] | None) -> str:
    """The text of an answer's tool calls (names and arguments) for the output guardrail, "" when none."""
    if not calls:
        return ""
    return "".join(
        f"\n{(c.get('function') or {}).get('name') or ''}({(c.get('function') or {}).get('arguments') or ''})"
        for c in calls
    )


class ToolCallDeltas:
    """A stream's tool calls, put together from its deltas (OpenAI's shape: each delta has an ``index``; the
    first of a call carries ``id``, ``type`` and ``function.name``, later ones pieces of ``function.arguments``)."""

    def __init__(self):
        self._calls: dict[int, dict] = {}

    def add(self, deltas: list[dict]) -> None:
        for position, delta in enumerate(deltas):
            index = delta.get("index", position)
            call = self._calls.setdefault(
                index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if delta.get("id"):
                call["id"] = delta["id"]
            if delta.get("type"):
                call["type"] = delta["type"]
            function = delta.get("function") or {}
            if function.get("name"):
                call["function"]["name"] += function["name"]
            if function.get("arguments"):
                call["function"]["arguments"] += function["arguments"]

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[dict] | None:
        return [self._calls[i] for i in sorted(self._calls)] or None

    def json(self) -> str:
        return json.dumps(self.calls()) if self._calls else ""
