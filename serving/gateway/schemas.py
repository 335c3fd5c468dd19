"""The OpenAI request bodies the gateway accepts: known fields only, bounded sizes, clear 400s."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=1, description="only 1 is supported")
    stream: bool = False
    stream_options: dict | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(None, max_length=256)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)

    def sampling(self) -> dict:
        """The fields passed on to the engine (unset ones are left to the engine's defaults)."""
        keep = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")
        return {k: getattr(self, k) for k in keep if getattr(self, k) is not None}


class CompletionRequest(_Request):
    prompt: str | list[str]
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
            return v[0]
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v):
        if v:
            raise ValueError("echo is not supported")
        return v

    def prompt_text(self) -> str:
        return self.prompt


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def prompt_text(self) -> str:
        return "\n".join(m.text() for m in self.messages)

    def engine_messages(self) -> list[dict]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


def describe(error: ValidationError) -> tuple[str, str | None]:
    """One readable message and the offending parameter for a 400."""
    first = error.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return f"unknown field {param!r}", param
    if first["type"] == "missing":
        return f"missing required field {param!r}", param
    return f"invalid value for {param!r}: {first['msg']}", param
