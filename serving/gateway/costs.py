"""What a request costs: a price per model version (USD per 1k prompt and per 1k completion tokens), and the
one formula that prices a self-hosted engine from its hourly accelerator cost and its measured throughput.

Two kinds of price behind one interface (:class:`Price`: ``per_1k() -> (input, output)``):

- :class:`TokenPrice`: a list price, as a hosted API charges it (``input_per_1k_usd``, ``output_per_1k_usd``).
- :class:`GpuHourPrice`: a self-hosted engine. It is paid by the hour whether busy or not; a request holds it
  for the share of that hour its tokens take at the engine's measured throughput (tokens per second at its
  serving concurrency, ``bench/bench_cpu_engine.py`` / ``bench_serving.py``)::

      usd_per_second  = gpu_hour_usd × gpus / 3600
      input_per_1k    = 1000 × usd_per_second / prompt_tokens_per_s
      output_per_1k   = 1000 × usd_per_second / completion_tokens_per_s

  so ``cost = usd_per_second × (prompt_tokens / prompt_tokens_per_s + completion_tokens / completion_tokens_per_s)``:
  the engine-seconds the request used, at the hour's price. An engine kept busier than the bench (or idler)
  costs less (more) per token than this says; the price is as good as the throughput figure it is given.
  Without a measured prefill throughput, prompt tokens are priced like completion tokens (an overestimate:
  prefill is faster than decoding).

A :class:`PriceBook` picks a request's price: the served version's label first, then the engine's name, then
``default`` (the embedded default: the CPU engine on a 2-core host, :data:`DEFAULT_PRICES`); every request
cost = ``prompt_tokens / 1000 × input_per_1k + completion_tokens / 1000 × output_per_1k``, in the log row's
``cost_usd`` (:class:`serving.gateway.logrow.LogRow`).
"""

from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

SECONDS_PER_HOUR = 3600.0


class Price(Protocol):
    """USD per 1,000 prompt tokens and per 1,000 completion tokens."""

    def per_1k(self) -> tuple[float, float]: ...


@dataclass(frozen=True)
class TokenPrice:
    """A list price per 1k tokens (a hosted model, or a price set by hand)."""

    input_per_1k_usd: float
    output_per_1k_usd: float

    def __post_init__(self) -> None:
        for name in ("input_per_1k_usd", "output_per_1k_usd"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def per_1k(self) -> tuple[float, float]:
        return self.input_per_1k_usd, self.output_per_1k_usd


@dataclass(frozen=True)
class GpuHourPrice:
    """A self-hosted engine priced from what its accelerators cost per hour and the tokens per second it was
    measured to serve (the module docstring's formula: the one place it is written)."""

    gpu_hour_usd: float
    completion_tokens_per_s: float
    prompt_tokens_per_s: float | None = None  # None: priced like completion tokens
    gpus: int = 1

    def __post_init__(self) -> None:
        if self.gpu_hour_usd < 0:
            raise ValueError(f"gpu_hour_usd must be >= 0, got {self.gpu_hour_usd!r}")
        if self.gpus < 1:
            raise ValueError(f"gpus must be >= 1, got {self.gpus!r}")
        for name in ("completion_tokens_per_s", "prompt_tokens_per_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (a measured throughput), got {value!r}")

    def per_1k(self) -> tuple[float, float]:
        usd_per_s = self.gpu_hour_usd * self.gpus / SECONDS_PER_HOUR
        prompt_tps = self.prompt_tokens_per_s or self.completion_tokens_per_s
        return 1000 * usd_per_s / prompt_tps, 1000 * usd_per_s / self.completion_tokens_per_s


def cost_usd(price: Price, prompt_tokens: int, completion_tokens: int) -> float:
    """What ``prompt_tokens`` in and ``completion_tokens`` out cost at ``price``, in USD."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got {prompt_tokens} and {completion_tokens}")
    input_per_1k, output_per_1k = price.per_1k()
    return prompt_tokens / 1000 * input_per_1k + completion_tokens / 1000 * output_per_1k


class PriceSettings(BaseModel):
    """One price in the gateway's settings: either a list price (``input_per_1k_usd`` and ``output_per_1k_usd``)
    or a self-hosted engine's (``gpu_hour_usd`` and ``completion_tokens_per_s``, optionally
    ``prompt_tokens_per_s`` and ``gpus``), never a mix."""

    model_config = ConfigDict(extra="forbid")

    input_per_1k_usd: float | None = Field(None, ge=0)
    output_per_1k_usd: float | None = Field(None, ge=0)
    gpu_hour_usd: float | None = Field(None, ge=0, description="The engine's accelerators' cost per hour, each")
    gpus: int = Field(1, ge=1)
    completion_tokens_per_s: float | None = Field(None, gt=0, description="Measured decode throughput")
    prompt_tokens_per_s: float | None = Field(None, gt=0, description="Measured prefill throughput")

    @model_validator(mode="after")
    def _one_kind(self) -> "PriceSettings":
        listed = self.input_per_1k_usd is not None or self.output_per_1k_usd is not None
        hosted = self.gpu_hour_usd is not None or self.completion_tokens_per_s is not None
        if listed and hosted:
            raise ValueError("a price is either per 1k tokens or per GPU-hour, not both")
        if listed and (self.input_per_1k_usd is None or self.output_per_1k_usd is None):
            raise ValueError("a per-1k price needs both input_per_1k_usd and output_per_1k_usd")
        if not listed and (self.gpu_hour_usd is None or self.completion_tokens_per_s is None):
            raise ValueError("a GPU-hour price needs gpu_hour_usd and completion_tokens_per_s")
        return self

    def price(self) -> Price:
        if self.input_per_1k_usd is not None:
            return TokenPrice(self.input_per_1k_usd, self.output_per_1k_usd)
        return GpuHourPrice(self.gpu_hour_usd, self.completion_tokens_per_s, self.prompt_tokens_per_s, self.gpus)


#: The embedded default: the CPU engine (``transformers serve``) on a 2-core host at USD 0.10 an hour, at the
#: 682 completion tokens/s that bench/bench_cpu_engine_memory.py measured at 16 streams (README, Serving).
DEFAULT_PRICES: dict[str, PriceSettings] = {
    "default": PriceSettings(gpu_hour_usd=0.10, completion_tokens_per_s=682.0),
}


class PriceBook:
    """The price of each served request: ``prices`` keyed by version label, engine name, or ``default``
    (looked up in that order); a request no key matches costs nothing."""

    def __init__(self, prices: dict[str, PriceSettings]):
        self.prices: dict[str, Price] = {key: p.price() for key, p in prices.items()}

    def price(self, version: str, engine: str) -> Price | None:
        for key in (version, engine, "default"):
            if key and key in self.prices:
                return self.prices[key]
        return None

    def cost(self, version: str, engine: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD of one request served by ``version`` on ``engine``."""
        price = self.price(version, engine)
        return 0.0 if price is None else cost_usd(price, prompt_tokens, completion_tokens)
