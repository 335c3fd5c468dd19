"""Merged folders and delta adapters: merged(anchor) + delta(target) is the target model, exactly."""

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from crawl2serve.serving.bundle import PLAIN_CHAT_TEMPLATE, adapter_rank, build_merged, delta_adapter


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(62)} | {"<unk>": 62, "</s>": 63}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>").save_pretrained(folder)
    return folder


def _adapter(base, folder, seed, r, alpha, modules=("q_proj", "v_proj", "down_proj")):
    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=r, lora_alpha=alpha, target_modules=list(modules))
    )
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; give it weights so the adapter changes the model
            p.data.normal_(0, 0.05)
    model.save_pretrained(folder)
    return str(folder)


def _logits(folder_or_model, ids):
    model = (
        folder_or_model
        if not isinstance(folder_or_model, str)
        else AutoModelForCausalLM.from_pretrained(folder_or_model)
    )
    with torch.no_grad():
        return model(ids).logits


def _with_delta(merged, delta):
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(merged), delta).merge_and_unload()


def test_merged_model_has_tokenizer_and_plain_chat_template(base, tmp_path):
    adapter = _adapter(base, tmp_path / "a", seed=1, r=4, alpha=8)
    merged = build_merged(str(base), adapter, str(tmp_path / "merged"))
    assert (merged / "model.safetensors").is_file()
    assert PLAIN_CHAT_TEMPLATE in (merged / "chat_template.jinja").read_text()
    ids = torch.tensor([[1, 5, 9, 3]])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    assert torch.allclose(_logits(str(merged), ids), _logits(peft_model, ids), atol=1e-5)
    assert not list(tmp_path.glob(".merged.tmp-*")), "no staging folder is left behind"


def test_delta_turns_the_anchor_into_the_target(base, tmp_path):
    anchor = _adapter(base, tmp_path / "anchor", seed=1, r=4, alpha=8)
    # different rank, alpha and modules: the delta must still be exact
    target = _adapter(base, tmp_path / "target", seed=2, r=8, alpha=32, modules=("q_proj", "k_proj", "o_proj"))
    merged_anchor = build_merged(str(base), anchor, str(tmp_path / "m_anchor"))
    merged_target = build_merged(str(base), target, str(tmp_path / "m_target"))
    delta = delta_adapter(target, anchor, str(tmp_path / "delta"))
    assert adapter_rank(str(delta)) == 12
    cfg = json.loads((delta / "adapter_config.json").read_text())
    assert cfg["lora_alpha"] == 12 and set(cfg["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "down_proj",
    }
    ids = torch.tensor([[1, 5, 9, 3, 7, 2]])
    assert torch.allclose(
        _logits(_with_delta(str(merged_anchor), str(delta)), ids), _logits(str(merged_target), ids), atol=1e-4
    )


def test_base_model_is_the_negated_anchor(base, tmp_path):
    anchor = _adapter(base, tmp_path / "anchor", seed=3, r=4, alpha=4)
    merged_anchor = build_merged(str(base), anchor, str(tmp_path / "m"))
    to_base = delta_adapter(None, anchor, str(tmp_path / "to_base"))
    ids = torch.tensor([[4, 4, 8, 1]])
    assert not torch.allclose(_logits(str(merged_anchor), ids), _logits(str(base), ids), atol=1e-4)
    assert torch.allclose(
        _logits(_with_delta(str(merged_anchor), str(to_base)), ids), _logits(str(base), ids), atol=1e-4
    )


def test_bad_inputs_are_named(base, tmp_path):
    with pytest.raises(ValueError, match="both the base model"):
        delta_adapter(None, None, str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="adapter_config.json missing"):
        delta_adapter(str(tmp_path), None, str(tmp_path / "x"))
