"""The OpenAI request bodies the gateway accepts: known fields only, bounded values, clear 400s.

Everything an engine would reject (or crash on) is rejected here, with the field named, so that one tenant's
malformed request never reaches an engine: empty prompts, sampling parameters out of range, seeds beyond a signed
64-bit integer, NaN/Infinity, strings that are not valid Unicode (lone surrogates), stop sequences in any format
but a non-empty string or a short list of them. The models run in pydantic's strict mode: ``"5"`` is not a number
and ``"yes"`` is not a boolean. They are also the request schemas of the OpenAPI document (``/openapi.json``).
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_SEED = 2**63 - 1  # engines keep seeds in a signed 64-bit integer (torch.manual_seed, SGLang's sampler)
MAX_STOP = 4  # OpenAI's limit on stop sequences
MAX_STOP_CHARS = 256


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


class Message(_Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]
    name: str | None = Field(None, max_length=64)

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @field_validator("messages")
    @classmethod
    def _some_text(cls, v):
        if not any(m.text() for m in v):
            raise ValueError("every message is empty")
        return v

    def prompt_text(self) -> str:
        return "\n".join(m.text() for m in self.messages)

    def engine_messages(self) -> list[dict]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]

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


def describe(error: ValidationError) -> tuple[str, str | None]:
    """One readable message and the offending parameter for a 400."""
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    # a union's member name (``str``, ``list[str]``, ``function-after[...]``) is not part of the field's path
    loc = [p for p in loc if not (p in ("str", "int", "list[str]", "list[TextPart]") or p.startswith("function-"))]
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
