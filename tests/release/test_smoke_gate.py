"""The generation_smoke gate on real generations: a tiny Llama with random weights fails it, the same model
pretrained for a short run (the trainer's full mode) on text that answers the smoke prompts passes it."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawl2serve.assets.release.assets import GateConfig
from crawl2serve.assets.release.evaluate import FIXED_PROMPTS, generation_report, load_candidate, smoke_gate
from crawl2serve.assets.training.base_model import TinyLlamaSpec, build_tiny_llama, save_base, train_bpe_tokenizer
from crawl2serve.assets.training.packing import pack_documents
from crawl2serve.assets.training.trainer import TrainConfig, train
from crawl2serve.resources.base_model import BaseModelSource

ANSWERS = (
    " encode Python objects as JSON text and decode JSON documents into dictionaries and lists.",
    " the open function and iterate over the file object, which yields one line at a time.",
    " build a new list by applying an expression to each item of an iterable, optionally filtered.",
    " count, cycle, repeat, chain, accumulate, groupby and the combinatoric generators.",
    " exists, read_text, write_text, iterdir, glob, mkdir and resolve.",
    " a context manager, which sets up a resource on entry and releases it on exit.",
    " schedules callbacks, performs network input and output, and runs subprocesses.",
    " __init__, __repr__ and __eq__ from the class annotations of its fields.",
)
SPEC = TinyLlamaSpec(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=256,
)
# Measured over seeds 0, 1, 2 (degenerate share of the 8 prompts): 30 steps 0.75 / 1.0 / 1.0 (" to to to",
# " the the the"); 60 steps 0.125 / 0 / 0; 90 and 120 steps 0 / 0 / 0. 90 leaves a margin.
STEPS = 90


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(random base dir, pretrained base dir): the same seeded init, before and after STEPS full steps."""
    root = tmp_path_factory.mktemp("gate")
    texts = [p + a for p, a in zip(FIXED_PROMPTS, ANSWERS)] * 8
    tok = train_bpe_tokenizer(texts, vocab_size=512, model_max_length=256)
    save_base(build_tiny_llama(SPEC, tok), tok, root / "random")
    for split in ("train", "validation"):
        rows, _ = pack_documents(texts, tok, 32)
        column = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.int32()), 32)
        (root / "data").mkdir(exist_ok=True)
        pq.write_table(pa.table({"input_ids": column}), root / "data" / f"{split}.parquet")
    result = train(
        TrainConfig(
            base_model=str(root / "random"),
            dataset_dir=str(root / "data"),
            output_dir=str(root / "run"),
            mode="full",
            max_steps=STEPS,
            micro_batch_size=8,
            learning_rate=1e-2,
            warmup_steps=5,
            checkpoint_every=10**6,
            eval_every=STEPS,
            eval_batches=1,
            log_every=STEPS,
        )
    )
    tok.save_pretrained(result["model_path"])
    return str(root / "random"), result["model_path"]


def report(base_dir: str) -> dict:
    model, tok = load_candidate(base_dir, None, device="cpu")
    return generation_report(model, tok, max_new_tokens=24, warm_up_every_prompt=False)


def test_the_random_weight_model_fails_the_smoke_gate(models):
    generation = report(models[0])
    assert generation["smoke_passed"]  # the mechanical checks alone let it through, as before
    assert generation["degenerate_share"] > GateConfig().max_degenerate_share
    assert not smoke_gate(generation, GateConfig().max_degenerate_share)


def test_the_pretrained_model_passes_the_smoke_gate(models):
    generation = report(models[1])
    assert smoke_gate(generation, GateConfig().max_degenerate_share), generation["outputs"]


def test_a_repetition_penalty_does_not_rescue_random_weights(models):
    """The embedded model recommends repetition_penalty 1.2 (BaseModelSource): the gate still fails noise under
    it (penalized loops become other loops and word salad of repeated fragments)."""
    model, tok = load_candidate(models[0], None, device="cpu")
    model.generation_config.repetition_penalty = BaseModelSource().repetition_penalty
    generation = generation_report(model, tok, max_new_tokens=24, warm_up_every_prompt=False)
    assert not smoke_gate(generation, GateConfig().max_degenerate_share), generation["outputs"]
