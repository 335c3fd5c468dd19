"""The OpenAI request bodies the gateway accepts: known fields only, bounded values, clear 400s.

Everything an engine would reject (or crash on) is rejected here, with the field named, so that one tenant's
malformed request never reaches an engine: empty prompts, sampling parameters out of range, seeds beyond a signed
64-bit integer, NaN/Infinity, strings that are not valid Unicode (lone surrogates), stop sequences in any format
but a non-empty string or a short list of them. The models run in pydantic's strict mode: ``"5"`` is not a number
and ``"yes"`` is not a boolean. They are also the request schemas of the OpenAPI document (``/openapi.json``).
Chat requests may ask for structured output and tools (``response_format``, ``tools``, ``tool_choice``, tool calls
and results in ``messages``): their shape is checked here, their JSON Schemas and which engines honour them in
:mod:`serving.gateway.structured`.
"""

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

MAX_SEED = 2**63 - 1  # engines keep seeds in a signed 64-bit integer (torch.manual_seed, SGLang's sampler)
MAX_STOP = 4  # OpenAI's limit on stop sequences
MAX_STOP_CHARS = 256
MAX_TOOLS = 128  # OpenAI's limit on function definitions
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # OpenAI's rule for function and schema names


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StreamOptions(_Strict):
    include_usage: bool = False


class _Request(_Strict):
    model: str = Field(min_length=1, max_length=200, description="crawl2serve, or crawl2serve@<version>")
    max_tokens: int | None = Field(None, ge=1, description="at most the gateway's limits.max_tokens")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=1, description="only 1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, description=f"a non-empty string or up to {MAX_STOP} of them")
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    user: str | None = Field(None, max_length=256)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    # engine sampling extensions (SGLang/vLLM/transformers); forwarded when limits.passthrough_fields names them
    ignore_eos: bool | None = None
    top_k: int | None = Field(None, ge=-1, le=100_000, description="-1: no limit")
    min_p: float | None = Field(None, ge=0, le=1)
    min_tokens: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0, le=10)

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        stops = [v] if isinstance(v, str) else v
        if stops is not None:
            if len(stops) > MAX_STOP:
                raise ValueError(f"at most {MAX_STOP} stop sequences")
            if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
                raise ValueError(f"stop sequences must be 1 to {MAX_STOP_CHARS} characters")
        return v

    def sampling(self, passthrough: list[str]) -> dict:
        """The fields passed on to the engine (unset ones are left to the engine's defaults)."""
        keep = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", *passthrough)
        return {k: getattr(self, k) for k in keep if getattr(self, k, None) is not None}

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


EXTENSIONS = ("ignore_eos", "top_k", "min_p", "min_tokens", "repetition_penalty")


class CompletionRequest(_Request):
    prompt: str | list[str] = Field(description="one non-empty prompt (a list of exactly one is accepted)")
    echo: bool = False
    best_of: int | None = Field(None, ge=1, le=1, description="only 1 is supported")
    suffix: None = None
    logprobs: None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("exactly one prompt per request is supported")
            v = v[0]
        if not v:
            raise ValueError("the prompt is empty")
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v):
        if v:
            raise ValueError("echo is not supported")
        return v

    def prompt_text(self) -> str:
        return self.prompt


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class FunctionCall(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    arguments: str = Field(max_length=100_000, description="the arguments: a JSON object, as a string")

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, v):
        # engines parse it back (transformers serve's json.loads answers a 500 to anything else)
        try:
            parsed = json.loads(v)
        except (ValueError, RecursionError):
            raise ValueError("arguments must be a JSON object encoded as a string") from None
        if not isinstance(parsed, dict):
            raise ValueError("arguments must be a JSON object encoded as a string")
        return v


class ToolCall(_Strict):
    """A tool call of an earlier assistant turn, sent back in the conversation."""

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"]
    function: FunctionCall


class Message(_Strict):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = Field(None, description="null only in an assistant turn with tool_calls")
    name: str | None = Field(None, max_length=64)
    tool_calls: list[ToolCall] | None = Field(None, min_length=1, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(None, min_length=1, max_length=256, description="a tool result's call")

    @model_validator(mode="after")
    def _roles(self):
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message, and only a tool message, has a tool_call_id")
        if self.content is None and self.tool_calls is None:
            raise ValueError("content is required (null only in an assistant message with tool_calls)")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    def engine_message(self) -> dict:
        """The message as the engine gets it: its text, and the tool calls or the call answered."""
        out: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.tool_calls is not None:
            out["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


JsonSchemaDocument = dict[str, Any]  # a JSON Schema; checked against its metaschema (serving.gateway.structured)


class FunctionDefinition(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=4096)
    parameters: JsonSchemaDocument | None = Field(None, description="a JSON Schema of the arguments")
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str = Field(pattern=NAME_PATTERN)


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=4096)
    schema_: JsonSchemaDocument = Field(alias="schema", description="the JSON Schema the answer must match")
    strict: bool | None = None


class TextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")]


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(None, min_length=1, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None

    @field_validator("tools")
    @classmethod
    def _unique_names(cls, v):
        names = [t.function.name for t in v or []]
        if len(set(names)) != len(names):
            raise ValueError("function names must be unique")
        return v

    @field_validator("tool_choice")
    @classmethod
    def _chosen_tool_exists(cls, v, info: ValidationInfo):
        names = [t.function.name for t in info.data.get("tools") or []]
        if isinstance(v, NamedToolChoice) and v.function.name not in names:
            raise ValueError(f"function {v.function.name!r} is not in tools")
        if v == "required" and not names:
            raise ValueError("'required' needs tools")
        return v

    @field_validator("messages")
    @classmethod
    def _some_text(cls, v):
        if not any(m.text() for m in v):
            raise ValueError("every message is empty")
        return v

    def prompt_text(self) -> str:
        return "\n".join(m.text() for m in self.messages)

    def engine_messages(self) -> list[dict]:
        return [m.engine_message() for m in self.messages]

    def engine_tools(self) -> list[dict] | None:
        return [t.model_dump(exclude_none=True) for t in self.tools] if self.tools else None

    def structured(self) -> dict:
        """``response_format``, ``tools`` and ``tool_choice`` as the engine gets them (``text``, the default
        format, is left out)."""
        out: dict[str, Any] = {}
        if self.response_format is not None and self.response_format.type != "text":
            out["response_format"] = self.response_format.model_dump(by_alias=True, exclude_none=True)
        if self.tools:
            out["tools"] = self.engine_tools()
        if self.tool_choice is not None:
            out["tool_choice"] = (
                self.tool_choice if isinstance(self.tool_choice, str) else self.tool_choice.model_dump()
            )
        return out

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx the gateway answers has this body (OpenAI's error shape)."""

    error: ErrorDetail


def validated(model: type[BaseModel], body: Any) -> Any:
    """``body`` as ``model``, or the 400 ``invalid_request`` that names the field and the problem."""
    from .errors import ApiError

    try:
        return model.model_validate(body)
    except ValidationError as exc:
        message, param = describe(exc)
        raise ApiError(400, message, param=param, code="invalid_request") from exc


def describe(error: ValidationError) -> tuple[str, str | None]:
    """One readable message and the offending parameter for a 400."""
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    # a union's member name (``str``, ``list[str]``, ``function-after[...]``) is not part of the field's path
    members = ("str", "int", "list[str]", "list[TextPart]", "NamedToolChoice")
    loc = [p for p in loc if not (p in members or p.startswith(("function-", "literal[")))]
    if loc[:1] == ["response_format"] and len(loc) > 1:  # the tag of the discriminated union is not a field
        del loc[1]
    param = ".".join(loc) or None
    if first["type"] == "extra_forbidden":
        return f"unknown field {param!r}", param
    if first["type"] == "missing":
        return f"missing required field {param!r}", param
    return f"invalid value for {param!r}: {first['msg']}", param


def invalid_unicode(value: Any, path: str = "") -> str | None:
    """The path of the first string (key or value) in a parsed JSON document that is not valid Unicode
    (a lone surrogate such as ``"\\udcff"``, which JSON can escape but UTF-8 cannot encode), else None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if invalid_unicode(k) is not None:
                return f"{path}.{k!r}" if path else "body"
            found = invalid_unicode(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = invalid_unicode(v, f"{path}.{i}")
            if found:
                return found
    return None


def printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode replaced (for the log row of a rejected request)."""
    return text.encode("utf-8", "replace").decode("utf-8")
