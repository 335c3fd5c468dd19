"""Which base model the lineage fine-tunes, and how the embedded one is pretrained."""

import dagster as dg
from pydantic import Field

EMBEDDED = "embedded-tiny-llama"


class BaseModelSource(dg.ConfigurableResource):
    """``model="embedded-tiny-llama"`` (the default) pretrains a tiny Llama from scratch on the corpus, with a
    byte-level BPE tokenizer trained on the corpus too: it exists so the lineage runs anywhere, on a CPU,
    offline. Real runs name a real model: any Hugging Face causal-LM id (from the local cache;
    HF_HUB_OFFLINE=1) or a local path; then its own tokenizer is used and nothing is trained from scratch.

    The embedded base stands in for a pretrained model, which has never seen your crawl: it pretrains on
    ``pretrain_share`` of the corpus's pages (by a stable hash of the split key, the validation pages never),
    and ``training_dataset`` leaves those pages out, so the adapter learns pages the base did not see and its
    gain on the held-out pages is real. Its ``generation_config.json`` recommends ``repetition_penalty``, which
    every engine applies by default (``generate``, ``transformers serve``, SGLang's ``--sampling-defaults model``).

    Chosen by measurement on the 2-core CPU (bench/bench_pretrain.py, bench/bench_adapter_gain.py; README): 960
    steps of 16 x 256 tokens at vocabulary 2048 on half the pages reach 1.75 bits per byte on the held-out pages
    (the random init: 3.87), and the embedded LoRA lowers the held-out perplexity 8.5% (31.9 -> 29.2; on a base
    pretrained on every page: 0.45%). Greedy smoke generations of that candidate: 3 of 8 degenerate without a
    repetition penalty, 0 of 8 at 1.2 (the random init: 8 of 8 either way)."""

    model: str = Field(default=EMBEDDED, description="embedded-tiny-llama, a Hugging Face model id, or a local path")
    vocab_size: int = Field(default=2048, description="Embedded tokenizer: BPE vocabulary size")
    hidden_size: int = Field(default=128, description="Embedded model: hidden size")
    intermediate_size: int = Field(default=344, description="Embedded model: SwiGLU MLP width")
    num_hidden_layers: int = Field(default=2, description="Embedded model: decoder layers")
    num_attention_heads: int = Field(default=4, description="Embedded model: attention heads")
    num_key_value_heads: int = Field(default=2, description="Embedded model: key/value heads")
    seed: int = Field(default=0, description="Embedded model: seed of the initialization and the data order")
    pretrain_steps: int = Field(
        default=960, ge=0, description="Embedded model: pretraining optimizer steps (0: keep the random init)"
    )
    pretrain_share: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Embedded model: share of the corpus's pages (split keys) it pretrains on; training_dataset "
        "leaves them out, so the adapter fine-tunes on pages the base has not seen",
    )
    repetition_penalty: float = Field(
        default=1.2,
        ge=1,
        description="Embedded model: the repetition penalty its generation_config.json recommends (engines apply "
        "it unless a request says otherwise)",
    )
    pretrain_batch_size: int = Field(default=16, ge=1, description="Embedded model: pretraining sequences per step")
    pretrain_seq_len: int = Field(default=256, ge=2, description="Embedded model: pretraining sequence length")
    pretrain_learning_rate: float = Field(default=1e-2, gt=0, description="Embedded model: peak pretraining LR")

    @property
    def embedded(self) -> bool:
        return self.model == EMBEDDED

    def held_for_pretraining(self) -> float:
        """The share of split keys the fine-tuning set leaves to the base model's pretraining: ``pretrain_share``
        for the embedded model, 0 for a real one (it pretrained elsewhere)."""
        return self.pretrain_share if self.embedded and self.pretrain_steps > 0 else 0.0

    def spec(self):
        """The embedded model's shape as a :class:`~crawl2serve.assets.training.base_model.TinyLlamaSpec`."""
        from crawl2serve.assets.training.base_model import TinyLlamaSpec

        return TinyLlamaSpec(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=max(1024, self.pretrain_seq_len),
            seed=self.seed,
        )

    def pretrain_knobs(self) -> dict:
        """The trainer's TrainConfig fields of the pretraining run (paths and mode are added by the caller)."""
        steps = self.pretrain_steps
        return {
            "max_steps": steps,
            "micro_batch_size": self.pretrain_batch_size,
            "learning_rate": self.pretrain_learning_rate,
            "warmup_steps": max(1, steps // 20),
            "min_lr_ratio": 0.1,
            "weight_decay": 0.1,
            "seed": self.seed,
            "checkpoint_every": max(1, steps // 6),
            "eval_every": max(1, steps // 6),
            "eval_batches": 4,
            "log_every": max(1, steps // 60),
        }
