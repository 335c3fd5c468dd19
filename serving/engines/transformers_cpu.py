"""The CPU engine: ``transformers serve`` (Hugging Face's maintained OpenAI-compatible server), for machines
without a GPU. It loads any local model folder named in a request's ``model`` field, so each version is served
from its merged folder (``serving.bundle.build_merged``) and nothing is loaded into the running process.

Memory. With ``--continuous-batching``, ``transformers serve`` sizes its paged KV cache from the host: 60% of
the RAM not yet used (``PagedAttentionMemoryHandler``), and most of it goes to an attention mask of
``max_batch_tokens x (cache tokens + max_batch_tokens)`` (8192 batch tokens by default) that fills as traffic
grows. On a 24 GiB host the embedded model's engine held 5 GB after its first request and 7.4 GB, then over
8 GB, under 16 streams (one was reported at 14.5 GB, ended by the OOM killer). Here the cache is sized from a
memory budget instead (:func:`cache_plan`): the model's shape gives the bytes per cache token (keys and values
of every layer, the keys and values read back, the mask's row, the logits of the requests the cache can
hold), the budget less the process's own memory and the weights gives the tokens, and ``--cb-num-blocks`` /
``--cb-max-batch-tokens`` say so to transformers. With 2048 MB the same load peaked at 1.53 GB.

transformers 5.24 runs one continuous-batching model at a time: requests alternating between two versions
make it tear down and rebuild its batch manager, fail some requests (503) and keep replaced caches alive.
``bench/bench_cpu_engine_memory.py --alternate-models --plain`` (16 streams, 30 s, two folders): with the flag and
a 2048 MB plan 4.6 GB and over 6 GB (killed), 43 tok/s, 16 of 19 requests failed in one run; without it
481 MB, 682 tok/s, no errors. Every CPU deployment serves several versions (the champion, the base model, a
canary, pinned ``crawl2serve@N`` that any tenant may ask for), so the resource's default is without the flag;
the budget still sizes the cache of an engine started with it.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .base import TOOLS, Engine, EngineHandle, Launch, ModelFolders, Release, arg_value

# The interpreter, torch, transformers and FastAPI: `transformers serve` on this VM held 350 MB before loading a
# model, and peaked at 520 MB with the embedded model, a cache and mask of 50 MB (--cb-num-blocks 64
# --cb-max-batch-tokens 512) and 16 streams.
PROCESS_BASELINE_MB = 512
HEADROOM = 0.10  # of the budget, for the allocator's fragmentation and per-request objects
PAGE_SIZE = 256  # tokens per cache page (transformers' default, not passed)
# Tokens one forward pass takes (a prefill longer than this is split). The mask costs this many activation
# values per cache token, so it is the main lever on memory; 1024 is the embedded model's whole context.
DEFAULT_MAX_BATCH_TOKENS = 1024
MAX_REQUEST_TOKENS = 4096  # the cache must hold at least one request of min(context, this) tokens
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8}


@dataclass(frozen=True)
class CachePlan:
    """How ``transformers serve --continuous-batching`` is sized for a model under a memory budget."""

    num_blocks: int  # cache blocks of PAGE_SIZE tokens (every layer)
    max_batch_tokens: int
    estimate_mb: float  # the engine's RSS once every cache block and mask row is in use
    budget_mb: int

    @property
    def cache_tokens(self) -> int:
        return self.num_blocks * PAGE_SIZE


def _text_config(model_dir: str) -> dict:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    text = config.get("text_config") or config
    text.setdefault("dtype", config.get("dtype") or config.get("torch_dtype") or "float32")
    return text


def _weights_mb(model_dir: str) -> float:
    files = [p for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".bin", ".pt")]
    return sum(p.stat().st_size for p in files) / 2**20


def cache_plan(model_dir: str, budget_mb: int, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS) -> CachePlan:
    """The largest cache of ``model_dir``'s model whose engine stays within ``budget_mb`` of resident memory.

    Costs mirror transformers' own sizing (``PagedAttentionMemoryHandler``, sdpa attention: no flash kernels on
    a CPU), per cache token ``t`` and batch token ``m`` (``a``: bytes per activation value)::

        cache   layers * 2 * kv_heads * head_dim * a                  keys and values
        read    (2 * heads + kv_heads) * head_dim * a + 16            read back and repeated for sdpa, indices
        mask    m * a                                                 a row of the attention mask per cache token
        logits  (hidden + 4/a * vocab) * a / PAGE_SIZE                a request holds >= 1 page: its logits row
        batch   m * (max(hidden + 4/a * vocab, hidden + (3 heads + 3 kv_heads) * head_dim) * a + 48) + m^2 * a
    """
    c = _text_config(model_dir)
    a = DTYPE_BYTES.get(str(c["dtype"]).replace("torch.", ""), 4)
    layers, heads, hidden, vocab = c["num_hidden_layers"], c["num_attention_heads"], c["hidden_size"], c["vocab_size"]
    kv_heads = c.get("num_key_value_heads") or heads
    head_dim = c.get("head_dim") or hidden // heads
    m = max_batch_tokens
    logits_row = hidden * a + vocab * 4
    per_token = (
        layers * 2 * kv_heads * head_dim * a
        + (2 * heads + kv_heads) * head_dim * a
        + 16
        + m * a
        + logits_row / PAGE_SIZE
    )
    attention_peak = (hidden + heads * head_dim + 2 * kv_heads * head_dim + (2 * heads + kv_heads) * head_dim) * a
    batch = m * (max(logits_row, attention_peak) + 48) + m * m * a
    fixed = (PROCESS_BASELINE_MB + _weights_mb(model_dir)) * 2**20 + batch
    usable = budget_mb * (1 - HEADROOM) * 2**20
    num_blocks = int((usable - fixed) // (per_token * PAGE_SIZE))
    needed = math.ceil(min(c.get("max_position_embeddings") or MAX_REQUEST_TOKENS, MAX_REQUEST_TOKENS) / PAGE_SIZE) + 1
    if num_blocks < needed:
        need_mb = (fixed + needed * PAGE_SIZE * per_token) / (1 - HEADROOM) / 2**20
        raise ValueError(
            f"cpu memory budget {budget_mb} MB is too small for {model_dir}: its weights "
            f"({_weights_mb(model_dir):.0f} MB), the engine process ({PROCESS_BASELINE_MB} MB) and a "
            f"cache of one {(needed - 1) * PAGE_SIZE}-token request need {need_mb:.0f} MB; raise "
            f"serving_engine.cpu_memory_budget_mb or lower --cb-max-batch-tokens ({m})"
        )
    estimate = (fixed + num_blocks * PAGE_SIZE * per_token) / 2**20
    return CachePlan(num_blocks=num_blocks, max_batch_tokens=m, estimate_mb=round(estimate, 1), budget_mb=budget_mb)


def cpu_command(*, python: str, host: str, port: int, extra_args: list[str] | None = None) -> list[str]:
    """``transformers serve`` on ``host:port`` (models are loaded per request from local folders)."""
    return [
        python,
        "-m",
        "transformers.cli.transformers",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--device",
        "cpu",
        "--model-timeout",
        "86400",
        *(extra_args or []),
    ]


class TransformersCpuEngine(Engine):
    backend = "cpu"
    package = "transformers"
    #: RSS above budget x this restarts the engine (the supervisor's watchdog, should the sizing be wrong).
    RSS_LIMIT_FACTOR = 1.5

    def features(self) -> frozenset[str]:
        """``transformers serve`` (5.24) passes ``tools`` to the model's chat template and parses tool calls
        out of the output with the tokenizer's response template (Qwen-family models have one built in); it
        ignores ``response_format`` and ``tool_choice`` (logged as unsupported fields, the output unconstrained),
        so it declares ``tools`` only."""
        return frozenset([TOOLS])

    def launch(self, champion: Release, folders: ModelFolders) -> Launch:
        base = folders.base(champion)
        return Launch(model_path=base, adapters={}, models={"base": base}, anchor=champion.version)

    def plan(self, model_path: str) -> CachePlan | None:
        """The cache sizing the command passes, or None: no budget, no continuous batching, or the caller's
        own ``--cb-num-blocks``."""
        args, budget = self.config.extra_args, self.config.memory_budget_mb
        if not budget or "--continuous-batching" not in args or arg_value(args, "--cb-num-blocks") is not None:
            return None
        tokens = arg_value(args, "--cb-max-batch-tokens")
        return cache_plan(model_path, budget, int(tokens) if tokens else DEFAULT_MAX_BATCH_TOKENS)

    def command(self, launch: Launch, host: str | None = None) -> list[str]:
        """``transformers serve`` with the cache sized for ``launch.model_path``'s model (every version an
        engine serves shares the champion's base model, so one size fits them all)."""
        plan = self.plan(launch.model_path)
        args = list(self.config.extra_args)
        if plan:
            args += ["--cb-num-blocks", str(plan.num_blocks)]
            if arg_value(args, "--cb-max-batch-tokens") is None:
                args += ["--cb-max-batch-tokens", str(plan.max_batch_tokens)]
        return cpu_command(
            python=self.config.python, host=host or self.config.host, port=self.config.port, extra_args=args
        )

    def memory_limit_mb(self) -> float | None:
        return self.config.memory_budget_mb * self.RSS_LIMIT_FACTOR if self.config.memory_budget_mb else None

    def add_version(
        self, handle: EngineHandle, release: Release, folders: ModelFolders, promote: bool = True
    ) -> str | None:
        """The version's merged folder is its ``model`` value: loaded by the engine at its first request."""
        if release.version not in handle.models:
            handle.models[release.version] = folders.merged(release)
            folders.remember(release)
        return handle.models[release.version]

    def restore(self, handle: EngineHandle) -> None:
        """Nothing: every version is a folder the restarted engine loads at its next request."""
