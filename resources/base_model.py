"""Which base model the lineage fine-tunes."""

import dagster as dg
from pydantic import Field

EMBEDDED = "embedded-tiny-llama"


class BaseModelSource(dg.ConfigurableResource):
    """``model="embedded-tiny-llama"`` (the default) builds a tiny Llama from a config, with a byte-level BPE
    tokenizer trained on the corpus: it exists so the lineage runs anywhere, on a CPU, offline. Real runs
    name a real model: any Hugging Face causal-LM id (from the local cache; HF_HUB_OFFLINE=1) or a local
    path; then its own tokenizer is used and nothing is trained from scratch."""

    model: str = Field(default=EMBEDDED, description="embedded-tiny-llama, a Hugging Face model id, or a local path")
    vocab_size: int = Field(default=4096, description="Embedded tokenizer: BPE vocabulary size")
    hidden_size: int = Field(default=128, description="Embedded model: hidden size")
    num_hidden_layers: int = Field(default=2, description="Embedded model: decoder layers")
    num_attention_heads: int = Field(default=4, description="Embedded model: attention heads")
    seed: int = Field(default=0, description="Embedded model: initialization seed")

    @property
    def embedded(self) -> bool:
        return self.model == EMBEDDED
