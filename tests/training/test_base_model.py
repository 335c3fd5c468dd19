"""Unit tests for assets/training/base_model.py: BPE tokenizer, tiny Llama, atomic save and offline load."""

from __future__ import annotations

import math
import random

import huggingface_hub.constants
import pytest
import torch
from transformers import AutoTokenizer

from crawl2serve.assets.training import base_model
from crawl2serve.assets.training.base_model import (
    SPECIAL_TOKENS,
    TinyLlamaSpec,
    build_tiny_llama,
    load_base,
    save_base,
    save_tokenizer,
    train_bpe_tokenizer,
)

ROUND_TRIP_TEXTS = [
    "Hello, world. It's a test: 1 + 2 = 3!",
    "  leading and trailing spaces , odd  spacing .  ",
    "Crème brûlée, naïve façade, Straße, Ærøskøbing, ñandú",
    "日本語のテキスト、中文文本, русский текст, ελληνικά, עברית",
    "emoji 😀🎉👩‍💻🏳️‍🌈 and symbols ∑∫√ ← → ©®",
    "def f(x):\n\tif x:\n\t\treturn {'a': [1, 2]}  # comment\r\n\n\n    pass\t\t\n",
    "\x00\x01 control bytes \x7f and a lone surrogate-free ï",
    "",
]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network: huggingface_hub reads HF_HUB_OFFLINE at import time, so patch the constant too."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def make_corpus(n_docs: int = 300, seed: int = 0) -> list[str]:
    """A few hundred short documents: prose, accented words, emoji and code."""
    rng = random.Random(seed)
    words = [
        "the",
        "data",
        "model",
        "crawl",
        "token",
        "train",
        "serve",
        "feature",
        "domain",
        "page",
        "text",
        "quality",
        "split",
        "pack",
        "café",
        "naïve",
        "über",
        "façade",
        "東京",
        "emoji",
        "😀",
        "🚀",
    ]
    code = ["def f(x):\n\treturn x + 1\n", "for i in range(10):\n    print(i)\n", "{'key': [1, 2, 3]}\n"]
    docs = []
    for i in range(n_docs):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))
        docs.append(f"{sentence}.\n{code[i % len(code)]}" if i % 4 == 0 else sentence.capitalize() + ".")
    return docs


CORPUS = make_corpus()


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(CORPUS, vocab_size=600)


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_llama(TinyLlamaSpec(), tokenizer)


# --- tokenizer ---------------------------------------------------------------------------------------


def test_tokenizer_trains_with_merges(tokenizer):
    assert 256 + len(SPECIAL_TOKENS) < len(tokenizer) <= 600  # merges were learned
    ids = tokenizer("the data model", add_special_tokens=False)["input_ids"]
    assert len(ids) < len("the data model")  # frequent words are merged
    assert tokenizer.model_max_length == base_model.DEFAULT_MODEL_MAX_LENGTH


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_tokenizer_round_trips(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_special_tokens_distinct_and_present(tokenizer):
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in SPECIAL_TOKENS.items()}
    assert ids == {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "unk": tokenizer.unk_token_id,
    }
    assert len(set(ids.values())) == 4
    assert all(0 <= i < len(tokenizer) for i in ids.values())
    assert tokenizer.bos_token == "<s>" and tokenizer.eos_token == "</s>"
    # special strings in text are matched as whole tokens and decode back (skip_special_tokens removes them)
    ids_text = tokenizer("a</s>b", add_special_tokens=False)["input_ids"]
    assert tokenizer.eos_token_id in ids_text
    assert tokenizer.decode(ids_text, skip_special_tokens=True) == "ab"


def test_tokenizer_training_is_deterministic(tokenizer):
    again = train_bpe_tokenizer(CORPUS, vocab_size=600)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()  # merges too


def test_tokenizer_accepts_a_generator_and_rejects_tiny_vocab():
    tok = train_bpe_tokenizer((doc for doc in CORPUS[:50]), vocab_size=300)
    assert len(tok) <= 300
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe_tokenizer(CORPUS, vocab_size=100)


# --- tiny llama --------------------------------------------------------------------------------------


def test_tiny_llama_matches_spec_and_tokenizer(model, tokenizer):
    spec = TinyLlamaSpec()
    cfg = model.config
    assert cfg.vocab_size == len(tokenizer)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads) == (128, 2, 2)
    assert cfg.rope_parameters["rope_theta"] == spec.rope_theta
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert model.dtype == torch.float32
    with pytest.raises(AttributeError):
        spec.seed = 1  # frozen


def test_tiny_llama_is_deterministic_per_seed(model, tokenizer):
    same = build_tiny_llama(TinyLlamaSpec(), tokenizer)
    other = build_tiny_llama(TinyLlamaSpec(seed=1), tokenizer)
    state, same_state, other_state = model.state_dict(), same.state_dict(), other.state_dict()
    assert all(torch.equal(state[k], same_state[k]) for k in state)
    assert not torch.equal(state["model.embed_tokens.weight"], other_state["model.embed_tokens.weight"])


def test_forward_loss_is_near_uniform(model, tokenizer):
    ids = torch.tensor([tokenizer(" ".join(CORPUS[:3]), add_special_tokens=False)["input_ids"][:64]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert math.isfinite(loss)
    assert abs(loss - math.log(len(tokenizer))) < 0.5  # random init: close to uniform over the vocabulary


def test_generate_produces_tokens(model, tokenizer):
    enc = tokenizer(["the data model"], add_special_tokens=False, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    n_in = enc["input_ids"].shape[1]
    assert n_in < out.shape[1] <= n_in + 5
    assert torch.equal(out[:, :n_in], enc["input_ids"])
    assert int(out.max()) < len(tokenizer)


# --- save / load -------------------------------------------------------------------------------------


def test_save_then_load_round_trips(model, tokenizer, tmp_path):
    facts = save_base(model, tokenizer, tmp_path / "base")
    assert facts["parameter_count"] == sum(p.numel() for p in model.parameters())
    assert facts["vocab_size"] == len(tokenizer)
    assert facts["bytes_on_disk"] == sum(p.stat().st_size for p in (tmp_path / "base").iterdir())
    assert "model.safetensors" in facts["files"] and "tokenizer.json" in facts["files"]
    assert len(facts["content_hash"]) == 64 and facts["version"] == facts["content_hash"]

    loaded, loaded_tok = load_base(str(tmp_path / "base"))
    assert loaded.dtype == torch.float32
    ids = torch.tensor([list(range(1, 40))])
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    for text in ROUND_TRIP_TEXTS:
        assert loaded_tok(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert loaded_tok.decode(loaded_tok(text)["input_ids"]) == text
    assert (loaded_tok.bos_token_id, loaded_tok.eos_token_id, loaded_tok.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )


def test_content_hash_is_a_data_version(model, tokenizer, tmp_path):
    first = save_base(model, tokenizer, tmp_path / "a")["content_hash"]
    assert save_base(model, tokenizer, tmp_path / "b")["content_hash"] == first
    assert save_base(model, tokenizer, tmp_path / "a")["content_hash"] == first  # overwrite: same version
    changed = build_tiny_llama(TinyLlamaSpec(), tokenizer)
    with torch.no_grad():
        changed.model.norm.weight[0] += 1.0
    assert save_base(changed, tokenizer, tmp_path / "c")["content_hash"] != first


def test_save_is_atomic_and_replaces(model, tokenizer, tmp_path):
    target = tmp_path / "base"
    target.mkdir()
    (target / "stale.txt").write_text("from an older save")
    save_base(model, tokenizer, target)
    save_base(model, tokenizer, target)
    assert [p.name for p in tmp_path.iterdir()] == ["base"]  # no temp or old directory left behind
    assert not (target / "stale.txt").exists()


def test_failed_save_leaves_previous_save_intact(model, tokenizer, tmp_path, monkeypatch):
    target = tmp_path / "base"
    before = save_base(model, tokenizer, target)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(tokenizer), "save_pretrained", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_base(model, tokenizer, target)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["base"]
    assert base_model._hash_directory(target)[0] == before["content_hash"]


def test_load_base_sets_pad_to_eos_when_missing(model, tokenizer, tmp_path):
    no_pad = train_bpe_tokenizer(CORPUS[:50], vocab_size=300)
    no_pad.pad_token = None
    save_base(model, no_pad, tmp_path / "base")
    _, loaded_tok = load_base(str(tmp_path / "base"))
    assert loaded_tok.pad_token == loaded_tok.eos_token == "</s>"


@pytest.mark.parametrize("name", ["missing-dir", "no-such-org/no-such-model-xyz"])
def test_load_base_missing_raises_value_error(tmp_path, name):
    path = str(tmp_path / name) if name == "missing-dir" else name
    with pytest.raises(ValueError) as excinfo:
        load_base(path)
    assert path in str(excinfo.value)


def test_load_base_empty_directory_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load base model"):
        load_base(str(tmp_path))


def test_save_tokenizer_is_atomic_and_versioned(tokenizer, tmp_path):
    target = tmp_path / "tokenizer"
    facts = save_tokenizer(tokenizer, target)
    assert facts["vocab_size"] == len(tokenizer) and facts["version"] == facts["content_hash"]
    assert "tokenizer.json" in facts["files"]
    assert save_tokenizer(tokenizer, target)["version"] == facts["version"]
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer"]
    reloaded = AutoTokenizer.from_pretrained(target, local_files_only=True)
    assert reloaded(ROUND_TRIP_TEXTS[5])["input_ids"] == tokenizer(ROUND_TRIP_TEXTS[5])["input_ids"]
