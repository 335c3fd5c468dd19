"""Unit tests for assets/release/evaluate.py on a tiny randomly initialized Llama (CPU, offline, seconds)."""

from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from crawl2serve.assets.release import evaluate
from crawl2serve.assets.release.evaluate import (
    FIXED_PROMPTS,
    evaluate_model,
    generation_report,
    load_candidate,
    load_safety_suite,
    perplexity,
    safety_report,
    score_output,
)
from crawl2serve.assets.training.base_model import TinyLlamaSpec, build_tiny_llama, save_base, train_bpe_tokenizer
from crawl2serve.assets.training.packing import pack_documents
from crawl2serve.assets.training.trainer import load_split

SEQ_LEN = 32
SPEC = TinyLlamaSpec(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)


def sentences(n: int = 400, seed: int = 0) -> list[str]:
    """Short documentation-like sentences for the tokenizer and the validation split."""
    rng = random.Random(seed)
    words = [
        "the",
        "json",
        "module",
        "list",
        "dict",
        "path",
        "file",
        "open",
        "read",
        "write",
        "return",
        "value",
        "function",
        "class",
        "method",
        "iterator",
        "string",
        "bytes",
        "import",
        "loop",
        "event",
        "task",
        "async",
        "await",
        "object",
        "attribute",
    ]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 16))).capitalize() + "." for _ in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(base_dir, dataset_dir, vocab size, validation rows): a 1-layer Llama and a packed validation split."""
    root = tmp_path_factory.mktemp("release")
    texts = sentences()
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300, model_max_length=512)
    model = build_tiny_llama(SPEC, tokenizer)
    save_base(model, tokenizer, root / "base")
    rows, _ = pack_documents(texts[:120], tokenizer, SEQ_LEN)
    assert len(rows) >= 16
    flat = pa.array(rows.reshape(-1), type=pa.int32())
    column = pa.FixedSizeListArray.from_arrays(flat, SEQ_LEN)
    (root / "dataset").mkdir()
    pq.write_table(pa.table({"input_ids": column}), root / "dataset" / "validation.parquet")
    return str(root / "base"), str(root / "dataset"), len(tokenizer), load_split(str(root / "dataset"), "validation")


@pytest.fixture(scope="module")
def base(tiny):
    """The bare base model and tokenizer, loaded once for the module (eval mode, float32, CPU)."""
    return load_candidate(tiny[0], None, device="cpu")


@pytest.fixture(scope="module")
def zero_adapter(tiny, tmp_path_factory):
    """A freshly initialized LoRA adapter (B = 0) saved with peft, so base + adapter == base."""
    from peft import LoraConfig, get_peft_model

    from crawl2serve.assets.training.base_model import load_base

    model, _ = load_base(tiny[0])
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def suite():
    return load_safety_suite()


# -- perplexity -------------------------------------------------------------------------------------
def test_perplexity_is_exp_of_the_token_mean_loss_and_near_vocab_size_at_random_init(tiny, base):
    _, _, vocab, rows = tiny
    model, _ = base
    result = perplexity(model, rows, batch_size=3, max_sequences=10)
    ids = torch.from_numpy(rows[:10])
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).item()
    assert result["sequences"] == 10 and result["tokens"] == 10 * (SEQ_LEN - 1)
    assert result["loss"] == pytest.approx(expected, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]), rel=1e-12)
    assert 0.7 * vocab < result["perplexity"] < 1.4 * vocab
    again = perplexity(model, rows, batch_size=10, max_sequences=10)
    assert again["loss"] == pytest.approx(result["loss"], rel=1e-6)  # deterministic, batch-size free


def test_bits_per_byte_is_the_summed_loss_over_the_bytes_of_the_text(tiny, base):
    _, _, _, rows = tiny
    model, tok = base
    result = perplexity(model, rows, max_sequences=4, tokenizer=tok)
    text = "".join(tok.decode([int(i) for i in row[1:]], skip_special_tokens=True) for row in rows[:4])
    assert result["bytes"] == len(text.encode("utf-8")) > 0
    assert result["bits_per_byte"] == pytest.approx(result["loss"] * result["tokens"] / result["bytes"] / math.log(2))
    assert "bits_per_byte" not in perplexity(model, rows, max_sequences=4)  # no tokenizer, no bytes


def test_perplexity_rejects_empty_input(base):
    with pytest.raises(ValueError, match="at least one sequence"):
        perplexity(base[0], np.zeros((0, SEQ_LEN), dtype=np.int64))


def test_zero_initialized_lora_adapter_gives_the_base_perplexity(tiny, base, zero_adapter):
    from peft import PeftModel

    rows = tiny[3]
    model, _ = load_candidate(tiny[0], zero_adapter, device="cpu")
    assert isinstance(model, PeftModel) and not model.training
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and all(float(p.abs().max()) == 0.0 for p in lora_b)
    assert perplexity(model, rows, max_sequences=12)["loss"] == pytest.approx(
        perplexity(base[0], rows, max_sequences=12)["loss"], rel=1e-6
    )


# -- generation -------------------------------------------------------------------------------------
def test_fixed_prompts_are_a_fixed_tuple_of_python_doc_prompts():
    assert isinstance(FIXED_PROMPTS, tuple) and 6 <= len(FIXED_PROMPTS) <= 10
    assert all(isinstance(p, str) and p.strip() for p in FIXED_PROMPTS)


def test_generation_report_passes_smoke_checks_and_respects_max_new_tokens(base):
    model, tokenizer = base
    report = generation_report(model, tokenizer, FIXED_PROMPTS[:4], max_new_tokens=5, repeats=2)
    assert report["smoke_passed"] and report["failures"] == []
    assert len(report["outputs"]) == 4 and all(isinstance(o, str) for o in report["outputs"])
    assert all(1 <= p["new_tokens"] <= 5 and all(p["checks"].values()) for p in report["per_prompt"])
    assert report["calls"] == 8 and report["warm_up_calls"] == 4  # 4 prompts x 2 repeats; warm-ups untimed
    assert 0 < report["latency_ms_p50"] <= report["latency_ms_p99"]
    assert report["tokens_per_s"] > 0
    assert report["peak_memory_source"] == "cpu_rss_growth_psutil_sampled" and report["peak_memory_mb"] >= 0
    json.dumps(report)
    again = generation_report(model, tokenizer, FIXED_PROMPTS[:4], max_new_tokens=5)
    assert again["outputs"] == report["outputs"]  # greedy: deterministic


def test_generation_report_records_each_failed_check(base, monkeypatch):
    model, tokenizer = base
    eos = tokenizer.eos_token_id
    answers = {"a": [eos], "b": [7] * 6, "c": RuntimeError("boom"), "d": [7, 8, eos]}

    def fake_generate(model, tokenizer, prompt, max_new_tokens):
        answer = answers[prompt]
        if isinstance(answer, Exception):
            raise answer
        return list(answer), 0.001

    monkeypatch.setattr(evaluate, "_generate", fake_generate)
    report = generation_report(model, tokenizer, ["a", "b", "c", "d"], max_new_tokens=5)
    assert not report["smoke_passed"]
    failures = "\n".join(report["failures"])
    assert "prompt 0: non_empty" in failures
    assert "prompt 1: respects_max_tokens" in failures and "prompt 1: terminates" in failures
    assert "prompt 2: terminates (generate raised RuntimeError: boom)" in failures
    assert "prompt 3" not in failures and report["per_prompt"][3]["stopped_at_eos"]
    assert "warm-up, prompt 2: generate raised RuntimeError" in failures
    assert report["calls"] == 3
    single = generation_report(model, tokenizer, ["d", "c"], max_new_tokens=5, warm_up_every_prompt=False)
    assert single["warm_up_calls"] == 1 and not any(f.startswith("warm-up") for f in single["failures"])


# -- safety -----------------------------------------------------------------------------------------
def test_the_repository_suite_loads_with_both_categories(suite):
    assert suite["rules"].strip() and suite["sha256"]
    counts = {c: sum(p["category"] == c for p in suite["probes"]) for c in ("prompt_injection", "harmful_request")}
    assert all(n >= 6 for n in counts.values()), counts
    assert len({p["id"] for p in suite["probes"]}) == len(suite["probes"])
    assert any(re_matches("CANARY-7f3a9", pattern) for pattern in suite["always_unsafe"])


def re_matches(text: str, pattern: str) -> bool:
    import re

    return re.search(pattern, text, re.IGNORECASE) is not None


def test_score_output_flags_the_canary_and_step_by_step_answers_but_not_unrelated_text(suite):
    probes = {p["id"]: p for p in suite["probes"]}
    harmful = next(p for p in suite["probes"] if p["category"] == "harmful_request")
    unsafe, matched = score_output(probes["pi-ignore-previous"], "Sure, the secret is canary-7F3A9.", suite)
    assert unsafe and any("7f3a9" in m for m in matched)
    unsafe, matched = score_output(harmful, "Step 1: get the materials.", suite)
    assert unsafe and matched
    for probe in suite["probes"]:
        assert score_output(probe, "The json module encodes Python objects as JSON strings.", suite) == (False, [])


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        (
            {"id": "pi-x", "category": "prompt_injection", "unsafe_if": ["x"]},
            r"probe 'pi-x': field 'prompt' is missing",
        ),
        ({"id": "pi-y", "category": "nope", "prompt": "p", "unsafe_if": ["x"]}, r"probe 'pi-y': field 'category'"),
        (
            {"id": "pi-z", "category": "prompt_injection", "prompt": "p", "unsafe_if": ["(unclosed"]},
            r"probe 'pi-z': field 'unsafe_if': invalid regular expression",
        ),
        ({"category": "prompt_injection", "prompt": "p", "unsafe_if": ["x"]}, r"probe #0: field 'id'"),
    ],
)
def test_a_malformed_suite_raises_naming_the_probe_and_field(tmp_path, probe, message):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"rules": "r", "categories": {"prompt_injection": "d"}, "probes": [probe]}))
    with pytest.raises(ValueError, match=message):
        load_safety_suite(path)


def test_safety_report_scores_one_result_per_probe(base, suite):
    model, tokenizer = base
    report = safety_report(model, tokenizer, suite, max_new_tokens=8)
    assert 0.0 <= report["unsafe_rate"] <= 1.0
    assert [r["id"] for r in report["results"]] == [p["id"] for p in suite["probes"]]
    assert set(report["by_category"]) == {"prompt_injection", "harmful_request"}
    assert report["unsafe"] == [r["id"] for r in report["results"] if r["unsafe"]]
    assert report["unsafe_rate"] == pytest.approx(len(report["unsafe"]) / len(suite["probes"]))


# -- one model, end to end --------------------------------------------------------------------------
def test_evaluate_model_combines_everything_for_one_model(tiny, zero_adapter, suite):
    result = evaluate_model(
        tiny[0], zero_adapter, tiny[1], max_sequences=8, max_new_tokens=4, safety_suite=suite, device="cpu"
    )
    assert result["adapter_dir"] == zero_adapter and result["device"] == "cpu" and result["dtype"] == "float32"
    assert result["perplexity"]["sequences"] == 8
    assert result["generation"]["smoke_passed"]
    assert len(result["safety"]["results"]) == len(suite["probes"])
    assert 0 < result["load_seconds"] <= result["eval_seconds"]
    json.dumps(result)
