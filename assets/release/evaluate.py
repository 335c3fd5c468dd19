"""Evaluation of one model for the release gate: perplexity, generation smoke + latency, safety (no Dagster).

A model is a base model directory plus, optionally, a LoRA adapter (:func:`load_candidate`); the functions
here do not know whether it is the candidate, the champion or the bare base. :func:`evaluate_model` runs
them all on one model and returns one JSON-serializable dict:

* :func:`perplexity` — token-weighted mean next-token loss on held-out packed sequences, exp of it, and
  bits per byte (the loss summed over tokens / bytes of the text / ln 2: comparable across tokenizers).
* :func:`generation_report` — greedy generation on fixed prompts (:data:`FIXED_PROMPTS`): smoke checks
  (non-empty, terminates, respects ``max_new_tokens``), which outputs are degenerate (punctuation only, one
  token or unit repeated, low distinct-n: :func:`~crawl2serve.assets.release.degenerate.degeneracy`),
  latency p50/p99, tokens/s and peak memory.
* :func:`safety_report` — greedy answers to the probes of ``safety_suite.yaml`` (beside this module),
  scored by regular expressions (:func:`score_output`); the suite's ``rules`` field states the rule.

Everything is deterministic for the same model and inputs (greedy decoding, no sampling, no dropout),
except the timings and memory figures.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import psutil
import torch
import yaml

from crawl2serve.assets.release.degenerate import degeneracy
from crawl2serve.assets.training.base_model import load_base
from crawl2serve.assets.training.trainer import bits_per_byte, load_split, scored_bytes

__all__ = [
    "DEFAULT_SAFETY_SUITE",
    "FIXED_PROMPTS",
    "evaluate_model",
    "generation_report",
    "load_candidate",
    "load_safety_suite",
    "perplexity",
    "safety_report",
    "score_output",
    "smoke_gate",
]

DEFAULT_SAFETY_SUITE = Path(__file__).with_name("safety_suite.yaml")
"""The repository's safety suite, read by :func:`load_safety_suite` when no path is given."""

FIXED_PROMPTS: tuple[str, ...] = (
    "The json module provides functions to",
    "To read a text file line by line in Python, open it with",
    "A list comprehension is a concise way to",
    "The itertools module implements iterator building blocks such as",
    "pathlib.Path objects represent filesystem paths and offer methods like",
    "The with statement wraps the execution of a block with methods defined by",
    "In asyncio, an event loop runs asynchronous tasks and",
    "The dataclasses.dataclass decorator generates special methods such as",
)
"""Completion prompts on Python standard-library topics (the embedded corpus is the Python docs), used for
the smoke checks and the latency figures. Fixed, so latency is comparable from one evaluation to the next."""

RSS_SAMPLE_INTERVAL_S = 0.005
"""How often the CPU peak-memory sampler reads the process RSS while generating."""

_PROBE_FIELDS = {"id", "category", "prompt", "unsafe_if", "note"}
_SUITE_FIELDS = {"version", "rules", "categories", "always_unsafe", "probes"}


# -- loading ----------------------------------------------------------------------------------------
def _device_and_dtype(device: str | torch.device | None) -> tuple[torch.device, torch.dtype]:
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    return device, torch.bfloat16 if device.type == "cuda" else torch.float32


def load_candidate(base_dir: str, adapter_dir: str | None, *, device: str | None = None):
    """Load the base model (:func:`load_base`, offline) and, if ``adapter_dir`` is given, wrap it with that
    peft LoRA adapter (not merged). The model is put in eval mode, in bfloat16 on CUDA (the default when a
    GPU is visible) and float32 on CPU; the adapter weights follow the same dtype.

    Args:
        base_dir: a directory written by ``save_base`` / ``save_pretrained``, or a Hub id in the local cache.
        adapter_dir: a peft adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``), or
            ``None`` for the bare base model.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available.

    Returns:
        ``(model, tokenizer)``; the tokenizer has a pad token (``load_base`` sets pad = eos if missing).
    """
    from peft import PeftModel

    device, dtype = _device_and_dtype(device)
    model, tokenizer = load_base(str(base_dir))
    model = model.to(device=device, dtype=dtype)
    if adapter_dir is not None:
        if not (Path(adapter_dir) / "adapter_config.json").is_file():
            raise ValueError(f"no peft adapter in {adapter_dir!r}: adapter_config.json is missing")
        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
        model = model.to(device=device, dtype=dtype)
    model.eval()
    return model, tokenizer


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


# -- perplexity -------------------------------------------------------------------------------------
@torch.no_grad()
def perplexity(
    model, sequences: np.ndarray, batch_size: int = 8, max_sequences: int | None = 64, *, tokenizer=None
) -> dict:
    """Mean next-token loss of ``model`` on the first ``max_sequences`` rows of ``sequences``, and exp of it.

    Labels are the input ids themselves (packed rows hold no padding, so every position counts): a row of
    length L scores L-1 predicted tokens. The loss is token-weighted: the sum of all token losses divided by
    the number of predicted tokens (equal to the row mean when all rows have the same length). Each batch's
    loss comes from the model's own loss (computed in float32 from the logits) times its token count, summed
    in float64. The model is put in eval mode; the result is deterministic for the same model and rows.

    Args:
        model: a causal LM (a peft-wrapped one too).
        sequences: int array of shape ``(n_sequences, seq_len)``, e.g. from ``trainer.load_split``.
        batch_size: rows per forward pass.
        max_sequences: only the first rows are scored (the same ones every time); ``None``: every row.
        tokenizer: the model's tokenizer; given, the result also holds ``bytes`` (UTF-8 bytes of the predicted
            text, special tokens skipped: :func:`~crawl2serve.assets.training.trainer.scored_bytes`) and
            ``bits_per_byte`` (loss summed over tokens / bytes / ln 2).

    Returns:
        ``{"loss", "perplexity", "sequences", "tokens"}`` (+ ``"bytes", "bits_per_byte"`` with a tokenizer):
        mean loss in nats per token, exp(loss), rows scored, predicted tokens scored.

    Raises:
        ValueError: when there is nothing to score (no rows, or rows shorter than 2 tokens).
    """
    if batch_size < 1 or (max_sequences is not None and max_sequences < 1):
        raise ValueError(f"batch_size and max_sequences must be >= 1, got {batch_size}, {max_sequences}")
    rows = np.asarray(sequences)
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] < 2:
        raise ValueError(f"perplexity needs at least one sequence of >= 2 tokens, got shape {rows.shape}")
    rows = rows[:max_sequences].astype(np.int64)
    model.eval()
    device = _model_device(model)
    total, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        ids = torch.from_numpy(rows[start : start + batch_size]).to(device)
        loss = model(input_ids=ids, labels=ids).loss
        n = ids.shape[0] * (ids.shape[1] - 1)
        total += float(loss.double()) * n
        tokens += n
    mean = total / tokens
    result = {"loss": mean, "perplexity": math.exp(mean), "sequences": int(len(rows)), "tokens": int(tokens)}
    if tokenizer is not None:
        n_bytes = scored_bytes(tokenizer, rows)
        result.update(bytes=n_bytes, bits_per_byte=bits_per_byte(mean, tokens, n_bytes))
    return result


# -- generation -------------------------------------------------------------------------------------
def _stop_ids(model, tokenizer) -> set[int]:
    """Token ids that end a generation: the tokenizer's eos and the generation config's eos id(s)."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])
    ids.discard(None)
    return {int(i) for i in ids}


@torch.no_grad()
def _generate(model, tokenizer, prompt: str, max_new_tokens: int) -> tuple[list[int], float]:
    """Greedy continuation of ``prompt``: (new token ids, eos included if produced; seconds taken).

    The prompt is tokenized as the tokenizer does by default (a bos is added where the tokenizer adds one).
    The time covers ``generate`` only (CUDA is synchronized before the clock stops).
    """
    device = _model_device(model)
    encoded = tokenizer(prompt, return_tensors="pt")
    if encoded["input_ids"].shape[1] == 0:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens")
    encoded = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return out[0, encoded["input_ids"].shape[1] :].tolist(), seconds


class _PeakRss:
    """Peak resident-set-size growth of this process, sampled by psutil in a background thread.

    ``growth_mb`` is the largest RSS seen while active minus the RSS when it started (MiB, never negative).
    Sampling every :data:`RSS_SAMPLE_INTERVAL_S` can miss allocations shorter than the interval.
    ``resource.getrusage(...).ru_maxrss`` is not used: it is the process's lifetime peak and cannot be reset,
    so it would report whatever ran before (a previous model's evaluation) rather than this generation.
    """

    def __init__(self, interval: float = RSS_SAMPLE_INTERVAL_S):
        self.interval = interval
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.baseline = self.peak = 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, name="peak-rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return max(self.peak - self.baseline, 0) / 2**20


def generation_report(
    model,
    tokenizer,
    prompts: Sequence[str] = FIXED_PROMPTS,
    max_new_tokens: int = 32,
    repeats: int = 1,
    *,
    warm_up_every_prompt: bool = True,
) -> dict:
    """Generation smoke checks and latency of ``model`` on ``prompts`` (greedy, one prompt per call).

    Untimed warm-up calls come first: one per prompt (default), or only the first prompt with
    ``warm_up_every_prompt=False``. One per prompt because the first call of each new prompt length pays
    one-off kernel selection on CUDA (seen on an H200: 450-575 ms against 40 ms for the same call later), so
    a single warm-up left p99 measuring start-up, and the first model evaluated in a process looked slower
    than the next. Then every prompt is generated ``repeats`` times, each call timed on its own.

    Per call, ``new_tokens`` counts the generated tokens, the final eos included when the model produced one
    (as ``max_new_tokens`` counts it). The checks, on every call:

    * ``non_empty``: at least one generated token that is not an end-of-sequence or pad token (a model
      that stops at once, or emits only special tokens, fails);
    * ``terminates``: ``generate`` returned (did not raise) with at most ``max_new_tokens`` new tokens, i.e.
      it stopped at eos or at the cap (a call that raises fails this check and is recorded, not re-raised);
    * ``respects_max_tokens``: new tokens <= ``max_new_tokens``.

    Each prompt's output (first repeat) is also judged by
    :func:`~crawl2serve.assets.release.degenerate.degeneracy`: ``per_prompt[i]["degenerate"]`` lists its
    reasons, ``degenerate_share`` is the share of prompts with any (a prompt whose generation raised counts).
    They are not smoke failures: the gate decides what share it tolerates.

    Memory: on CUDA ``peak_memory_mb`` is ``torch.cuda.max_memory_allocated`` (weights included) after a
    reset of the peak statistics just before the warm-up; on CPU it is the peak RSS growth over the RSS
    before the warm-up, sampled with psutil every 5 ms in a background thread (see :class:`_PeakRss`).
    ``peak_memory_source`` names which. Both in MiB.

    Returns:
        ``{"outputs", "smoke_passed", "failures", "latency_ms_p50", "latency_ms_p99", "tokens_per_s",
        "peak_memory_mb", "peak_memory_source", "per_prompt", "degenerate_share", "calls", "warm_up_calls",
        "new_tokens", "max_new_tokens", "repeats"}``: ``outputs`` is the decoded new text of each prompt (first repeat,
        special tokens skipped); ``failures`` are ``"prompt <i>: <check> (...)"`` strings; latencies are
        numpy percentiles over all timed calls (NaN if none succeeded); ``tokens_per_s`` is all new tokens
        over all timed seconds; ``per_prompt`` holds, per prompt, its new tokens, latency (first repeat),
        whether it stopped at eos, and its checks.
    """
    if max_new_tokens < 1 or repeats < 1:
        raise ValueError(f"max_new_tokens and repeats must be >= 1, got {max_new_tokens}, {repeats}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("generation_report needs at least one prompt")
    model.eval()
    device = _model_device(model)
    stop_ids = _stop_ids(model, tokenizer)
    special = stop_ids | {i for i in (tokenizer.pad_token_id, tokenizer.bos_token_id) if i is not None}
    failures: list[str] = []
    latencies: list[float] = []
    total_tokens, total_seconds = 0, 0.0
    per_prompt: list[dict] = [{} for _ in prompts]
    outputs = [""] * len(prompts)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        sampler = None
    else:
        sampler = _PeakRss().__enter__()
    try:
        for i, prompt in enumerate(prompts if warm_up_every_prompt else prompts[:1]):
            try:
                _generate(model, tokenizer, prompt, max_new_tokens)
            except Exception as error:
                failures.append(f"warm-up, prompt {i}: generate raised {type(error).__name__}: {error}")
        for repeat in range(repeats):
            for i, prompt in enumerate(prompts):
                try:
                    new_ids, seconds = _generate(model, tokenizer, prompt, max_new_tokens)
                except Exception as error:
                    checks = {"non_empty": False, "terminates": False, "respects_max_tokens": False}
                    failures.append(f"prompt {i}: terminates (generate raised {type(error).__name__}: {error})")
                    if repeat == 0:
                        per_prompt[i] = {
                            "prompt": prompt,
                            "new_tokens": 0,
                            "latency_ms": None,
                            "stopped_at_eos": False,
                            "checks": checks,
                            "degenerate": ["generate_raised"],
                        }
                    continue
                n = len(new_ids)
                content = [t for t in new_ids if t not in special]
                checks = {
                    "non_empty": bool(content),
                    "terminates": n <= max_new_tokens,
                    "respects_max_tokens": n <= max_new_tokens,
                }
                for name, ok in checks.items():
                    if not ok:
                        failures.append(
                            f"prompt {i}: {name} ({n} new tokens, max_new_tokens={max_new_tokens}, repeat {repeat})"
                        )
                latencies.append(seconds * 1000.0)
                total_tokens += n
                total_seconds += seconds
                if repeat == 0:
                    outputs[i] = tokenizer.decode(new_ids, skip_special_tokens=True)
                    per_prompt[i] = {
                        "prompt": prompt,
                        "new_tokens": n,
                        "latency_ms": seconds * 1000.0,
                        "stopped_at_eos": bool(new_ids) and new_ids[-1] in stop_ids,
                        "checks": checks,
                        "degenerate": degeneracy(outputs[i]),
                    }
    finally:
        if sampler is not None:
            sampler.__exit__(None, None, None)
    if device.type == "cuda":
        peak_mb, source = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    else:
        peak_mb, source = sampler.growth_mb, "cpu_rss_growth_psutil_sampled"
    p50, p99 = np.percentile(latencies, [50, 99]).tolist() if latencies else [math.nan, math.nan]
    return {
        "outputs": outputs,
        "smoke_passed": not failures,
        "failures": failures,
        "latency_ms_p50": float(p50),
        "latency_ms_p99": float(p99),
        "tokens_per_s": total_tokens / total_seconds if total_seconds > 0 else 0.0,
        "peak_memory_mb": float(peak_mb),
        "peak_memory_source": source,
        "per_prompt": per_prompt,
        "degenerate_share": sum(bool(p.get("degenerate")) for p in per_prompt) / len(prompts),
        "calls": len(latencies),
        "warm_up_calls": len(prompts) if warm_up_every_prompt else 1,
        "new_tokens": total_tokens,
        "max_new_tokens": max_new_tokens,
        "repeats": repeats,
    }


def smoke_gate(generation: Mapping, max_degenerate_share: float) -> bool:
    """The ``generation_smoke`` verdict on a :func:`generation_report`: every smoke check passed and at most
    ``max_degenerate_share`` of the prompts got a degenerate output."""
    return bool(generation["smoke_passed"]) and generation["degenerate_share"] <= max_degenerate_share


# -- safety -----------------------------------------------------------------------------------------
def _check_patterns(patterns, where: str) -> list[str]:
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"{where} must be a list of non-empty regular-expression strings, got {patterns!r}")
    for pattern in patterns:
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as error:
            raise ValueError(f"{where}: invalid regular expression {pattern!r}: {error}") from error
    return patterns


def load_safety_suite(path: str | Path | None = None) -> dict:
    """Read and validate a safety suite (default: ``safety_suite.yaml`` beside this module).

    The file holds ``version``, ``rules`` (the scoring rule in words), ``categories`` (name -> description),
    ``always_unsafe`` (regexes that make any output unsafe) and ``probes``: each with ``id`` (unique),
    ``category`` (one of ``categories``), ``prompt`` (non-empty text), ``unsafe_if`` (a non-empty list of
    regexes, matched case-insensitively) and an optional ``note``. Every regex is compiled here.

    Returns:
        The suite as a dict, plus ``path`` and ``sha256`` (of the file's bytes: the suite's version for
        lineage and data versioning).

    Raises:
        ValueError: naming the file, and the probe id and field, when the suite is malformed.
    """
    path = Path(path) if path is not None else DEFAULT_SAFETY_SUITE
    raw = path.read_bytes()
    try:
        suite = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ValueError(f"safety suite {path}: not valid YAML: {error}") from error
    where = f"safety suite {path}"
    if not isinstance(suite, dict):
        raise ValueError(f"{where}: the top level must be a mapping")
    missing = {"rules", "categories", "probes"} - set(suite)
    if missing:
        raise ValueError(f"{where}: missing top-level field(s) {sorted(missing)}")
    unknown = set(suite) - _SUITE_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown top-level field(s) {sorted(unknown)}")
    if not isinstance(suite["rules"], str) or not suite["rules"].strip():
        raise ValueError(f"{where}: 'rules' must be a non-empty text")
    categories = suite["categories"]
    if not isinstance(categories, dict) or not categories:
        raise ValueError(f"{where}: 'categories' must be a non-empty mapping of name to description")
    suite["always_unsafe"] = _check_patterns(suite.get("always_unsafe") or [], f"{where}: 'always_unsafe'")
    probes = suite["probes"]
    if not isinstance(probes, list) or not probes:
        raise ValueError(f"{where}: 'probes' must be a non-empty list")
    seen: set[str] = set()
    for index, probe in enumerate(probes):
        if not isinstance(probe, dict):
            raise ValueError(f"{where}: probe #{index} must be a mapping, got {type(probe).__name__}")
        probe_id = probe.get("id")
        if not isinstance(probe_id, str) or not probe_id.strip():
            raise ValueError(f"{where}: probe #{index}: field 'id' is missing or not a non-empty string")
        name = f"{where}: probe {probe_id!r}"
        if probe_id in seen:
            raise ValueError(f"{name}: field 'id' is not unique")
        seen.add(probe_id)
        unknown = set(probe) - _PROBE_FIELDS
        if unknown:
            raise ValueError(f"{name}: unknown field(s) {sorted(unknown)}")
        for field in ("category", "prompt", "unsafe_if"):
            if field not in probe:
                raise ValueError(f"{name}: field {field!r} is missing")
        if probe["category"] not in categories:
            raise ValueError(f"{name}: field 'category' is {probe['category']!r}, not one of {sorted(categories)}")
        if not isinstance(probe["prompt"], str) or not probe["prompt"].strip():
            raise ValueError(f"{name}: field 'prompt' must be a non-empty string")
        _check_patterns(probe["unsafe_if"], f"{name}: field 'unsafe_if'")
        if not probe["unsafe_if"]:
            raise ValueError(f"{name}: field 'unsafe_if' must hold at least one pattern")
    return {**suite, "path": str(path), "sha256": hashlib.sha256(raw).hexdigest()}


def score_output(probe: Mapping, output: str, suite: Mapping) -> tuple[bool, list[str]]:
    """Score one output: unsafe when any of the probe's ``unsafe_if`` patterns or any of the suite's
    ``always_unsafe`` patterns matches anywhere in ``output`` (``re.search``, case-insensitive).

    Only the model's output is scored, never the prompt. Refusing is not required (the embedded tiny model
    cannot refuse); an answer is judged by what it contains.

    Returns:
        ``(unsafe, matched)``: the patterns that matched, the probe's first, without repeats.
    """
    matched: list[str] = []
    for pattern in [*probe["unsafe_if"], *(suite.get("always_unsafe") or [])]:
        if pattern not in matched and re.search(pattern, output, re.IGNORECASE):
            matched.append(pattern)
    return bool(matched), matched


def safety_report(model, tokenizer, suite: Mapping, max_new_tokens: int = 48) -> dict:
    """Answer every probe of ``suite`` greedily (the prompt as plain text, no chat template) and score the
    answers with :func:`score_output`.

    Returns:
        ``{"unsafe_rate", "unsafe", "by_category", "results", "probes", "max_new_tokens", "suite_sha256"}``:
        the share of probes answered unsafely, the ids of those probes, the share per category (every
        category with probes), and per probe ``{"id", "category", "unsafe", "matched", "output"}``.
    """
    model.eval()
    results = []
    for probe in suite["probes"]:
        new_ids, _ = _generate(model, tokenizer, probe["prompt"], max_new_tokens)
        output = tokenizer.decode(new_ids, skip_special_tokens=True)
        unsafe, matched = score_output(probe, output, suite)
        results.append(
            {"id": probe["id"], "category": probe["category"], "unsafe": unsafe, "matched": matched, "output": output}
        )
    by_category = {}
    for category in suite["categories"]:
        flags = [r["unsafe"] for r in results if r["category"] == category]
        if flags:
            by_category[category] = sum(flags) / len(flags)
    unsafe = [r["id"] for r in results if r["unsafe"]]
    return {
        "unsafe_rate": len(unsafe) / len(results) if results else 0.0,
        "unsafe": unsafe,
        "by_category": by_category,
        "results": results,
        "probes": len(results),
        "max_new_tokens": max_new_tokens,
        "suite_sha256": suite.get("sha256"),
    }


# -- everything for one model -----------------------------------------------------------------------
def evaluate_model(
    base_dir: str,
    adapter_dir: str | None,
    dataset_dir: str,
    *,
    max_sequences: int | None = 64,
    max_new_tokens: int = 32,
    safety_suite: Mapping | str | Path | None = None,
    prompts: Sequence[str] = FIXED_PROMPTS,
    repeats: int = 1,
    batch_size: int = 8,
    safety_max_new_tokens: int | None = None,
    device: str | None = None,
) -> dict:
    """Evaluate one model (base + optional adapter) end to end; the caller names it (candidate, champion...).

    Loads it with :func:`load_candidate`, scores :func:`perplexity` on ``{dataset_dir}/validation.parquet``
    (first ``max_sequences`` rows), runs :func:`generation_report` on ``prompts`` and :func:`safety_report`
    on ``safety_suite`` (a loaded suite, a path, or ``None`` for the repository's), then frees the model.

    Args:
        max_new_tokens: cap for the smoke/latency prompts, and for the safety probes unless
            ``safety_max_new_tokens`` is given.

    Returns:
        ``{"base_dir", "adapter_dir", "device", "dtype", "perplexity", "generation", "safety",
        "load_seconds", "eval_seconds"}`` (JSON-serializable); ``eval_seconds`` covers the whole evaluation,
        loading included.
    """
    started = time.perf_counter()
    suite = safety_suite if isinstance(safety_suite, Mapping) else load_safety_suite(safety_suite)
    validation = load_split(str(dataset_dir), "validation")
    model, tokenizer = load_candidate(base_dir, adapter_dir, device=device)
    load_seconds = time.perf_counter() - started
    try:
        model_device = _model_device(model)
        result = {
            "base_dir": str(base_dir),
            "adapter_dir": None if adapter_dir is None else str(adapter_dir),
            "device": str(model_device),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "perplexity": perplexity(
                model, validation, batch_size=batch_size, max_sequences=max_sequences, tokenizer=tokenizer
            ),
            "generation": generation_report(model, tokenizer, prompts, max_new_tokens=max_new_tokens, repeats=repeats),
            "safety": safety_report(model, tokenizer, suite, max_new_tokens=safety_max_new_tokens or max_new_tokens),
            "load_seconds": load_seconds,
        }
    finally:
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result["eval_seconds"] = time.perf_counter() - started
    return result
