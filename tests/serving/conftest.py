"""Real processes on loopback: a CPU engine (``transformers serve``) on a tiny model, and the gateway as
``python -m crawl2serve.serving gateway`` in front of it (helpers in tests/serving/helpers.py)."""

import pytest

from crawl2serve.assets.training.base_model import TinyLlamaSpec, build_tiny_llama, save_base, train_bpe_tokenizer
from crawl2serve.serving.bundle import build_merged
from tests.serving.helpers import start_engine
from tests.support import PROSE


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> str:
    """A tiny Llama (random weights) with a BPE tokenizer trained on prose, as ``save_base`` writes it."""
    root = tmp_path_factory.mktemp("tiny_base")
    tok = train_bpe_tokenizer([PROSE] * 20, vocab_size=300)
    save_base(build_tiny_llama(TinyLlamaSpec(hidden_size=64, intermediate_size=128), tok), tok, root)
    return str(root)


@pytest.fixture(scope="session")
def tiny_model(tiny_base, tmp_path_factory) -> str:
    """The tiny base model as a servable folder (tokenizer with the plain chat template)."""
    return str(build_merged(tiny_base, None, str(tmp_path_factory.mktemp("tiny_model") / "merged")))


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> str:
    """A smaller tiny Llama (one layer, width 32, other weights) with the same tokenizer, as a servable folder:
    the cheaper version of the routing and cache tests. Its output head is its own (untied): a random tiny
    model with tied embeddings answers greedily what ``tiny_model`` does (the embedding dominates both)."""
    root = tmp_path_factory.mktemp("small_base")
    tok = train_bpe_tokenizer([PROSE] * 20, vocab_size=300)
    spec = TinyLlamaSpec(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        seed=1,
        tie_word_embeddings=False,
    )
    save_base(build_tiny_llama(spec, tok), tok, root)
    return str(build_merged(str(root), None, str(tmp_path_factory.mktemp("small_model") / "merged")))


def make_adapter(base: str, folder, seed: int, r: int = 4) -> str:
    """A LoRA adapter with random (non-zero) B matrices: it visibly changes the model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "down_proj"]),
    )
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def cpu_engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("engine"), "primary")
    yield engine
    engine.kill()
