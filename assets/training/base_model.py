"""The base model of the training stage: a byte-level BPE tokenizer and a tiny Llama (plain Python, no Dagster).

The embedded default exists so the lineage runs anywhere; real runs name a real model. The default is a
tokenizer trained on the corpus itself (:func:`train_bpe_tokenizer`) and a randomly initialized two-layer
Llama sized by :class:`TinyLlamaSpec` (:func:`build_tiny_llama`), which trains on a CPU in seconds. A real
model is read with :func:`load_base`, offline, from a local directory or the Hugging Face cache.

:func:`save_base` and :func:`save_tokenizer` write atomically and return a content hash of the saved files,
usable as the asset's data version.

transformers 5 notes: ``PreTrainedTokenizerFast`` is an alias of ``TokenizersBackend`` (the instance's class
name says so); ``LlamaConfig`` takes ``rope_parameters={"rope_type": ..., "rope_theta": ...}`` (no
``rope_theta`` attribute); ``save_pretrained`` always writes safetensors; ``from_pretrained`` keeps the saved
dtype (``dtype="auto"`` is the default) instead of upcasting to float32.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

__all__ = [
    "SPECIAL_TOKENS",
    "TinyLlamaSpec",
    "build_tiny_llama",
    "load_base",
    "save_base",
    "save_tokenizer",
    "train_bpe_tokenizer",
]

SPECIAL_TOKENS: dict[str, str] = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}
"""Special tokens of the embedded tokenizer; they take ids 0-3 in this order."""

_BYTE_ALPHABET_SIZE = 256
DEFAULT_MODEL_MAX_LENGTH = 1024
"""``model_max_length`` of the embedded tokenizer: the tiny Llama's ``max_position_embeddings``."""


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4096,
    min_frequency: int = 2,
    *,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers.

    The ByteLevel pre-tokenizer maps every byte to a symbol and all 256 byte symbols are in the initial
    alphabet, so any text round-trips: ``decode(encode(text)) == text`` (no normalizer, no prefix space,
    no clean-up of spaces). Training is deterministic for the same texts in the same order.

    Encoding adds no special tokens (there is no post-processor): document separators are added by
    :func:`assets.training.packing.pack`. ``<unk>`` is never produced by a byte-level model; it is set
    because downstream tools expect the attribute.

    Args:
        texts: the training corpus, iterated once.
        vocab_size: the largest vocabulary, special tokens and the 256 byte symbols included; the result
            is smaller when the corpus offers fewer merges seen ``min_frequency`` times.
        min_frequency: a pair is merged only if it occurs at least this often.
        model_max_length: the longest sequence the model takes (the tiny Llama's context).

    Returns:
        A fast tokenizer with ``bos_token``/``eos_token``/``pad_token``/``unk_token`` set.
    """
    specials = list(SPECIAL_TOKENS.values())
    if vocab_size < _BYTE_ALPHABET_SIZE + len(specials):
        raise ValueError(f"vocab_size must be at least {_BYTE_ALPHABET_SIZE + len(specials)}, got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(iter(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        unk_token=SPECIAL_TOKENS["unk"],
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # would turn "a ." into "a." and break the round trip
    )


@dataclass(frozen=True)
class TinyLlamaSpec:
    """Shape of the embedded default model: a two-layer Llama (about 0.36M parameters + vocab x 128 embedding).

    The embedded default exists so the lineage runs anywhere; real runs name a real model.

    Attributes:
        hidden_size: width of the residual stream.
        intermediate_size: width of the SwiGLU MLP.
        num_hidden_layers: decoder layers.
        num_attention_heads: query heads (head_dim = hidden_size / num_attention_heads).
        num_key_value_heads: key/value heads (grouped-query attention).
        max_position_embeddings: the longest context.
        rope_theta: base of the rotary position embedding.
        tie_word_embeddings: share the input embedding with the output head.
        seed: torch seed for the random initialization.
    """

    hidden_size: int = 128
    intermediate_size: int = 344
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    seed: int = 0


def build_tiny_llama(spec: TinyLlamaSpec, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """Build a randomly initialized float32 Llama sized by ``spec`` for ``tokenizer``'s vocabulary.

    The vocabulary size is ``len(tokenizer)`` (added tokens included) and the bos/eos/pad ids come from
    the tokenizer. Weights are drawn after ``torch.manual_seed(spec.seed)``, so the same spec and
    tokenizer give the same weights (the global torch RNG is left seeded).
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(spec.seed)
    return LlamaForCausalLM(config).to(torch.float32)


def _hash_directory(directory: Path) -> tuple[str, int]:
    """Return (sha256 hex, total bytes) over every file under ``directory``, in sorted relative-path order.

    Each file contributes its relative path, its size and its bytes, so renaming or splitting files
    changes the hash too.
    """
    digest = hashlib.sha256()
    total = 0
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix().encode()
        size = path.stat().st_size
        digest.update(len(name).to_bytes(8, "little") + name + size.to_bytes(8, "little"))
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        total += size
    return digest.hexdigest(), total


def _save_atomically(directory: Path, write: Callable[[Path], None]) -> dict:
    """Run ``write(tmp)`` into a sibling temporary directory, then rename it into place as ``directory``.

    An existing ``directory`` is first renamed aside and deleted only after the new one is in place (it is
    put back if that rename fails), so readers never see a partial save (between the two renames, for an
    instant, they see none). A failed write removes its temporary directory and leaves the old one alone.

    Returns:
        ``{"path", "bytes_on_disk", "content_hash", "version", "files"}`` of what was written.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        write(tmp)
        content_hash, bytes_on_disk = _hash_directory(tmp)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.replace(directory, old)  # ``old`` is an empty directory, so the rename may replace it
            try:
                os.replace(tmp, directory)
            except BaseException:
                os.replace(old, directory)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "path": str(directory),
        "bytes_on_disk": bytes_on_disk,
        "content_hash": content_hash,
        "version": content_hash,
        "files": files,
    }


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: Path) -> dict:
    """Save ``tokenizer`` (``save_pretrained``) into ``directory`` atomically, like :func:`save_base`.

    Returns:
        ``{"path", "vocab_size", "bytes_on_disk", "content_hash", "version", "files"}``; ``version`` is
        the content hash (sha256 over the saved files in sorted name order), usable as a data version.
    """
    facts = _save_atomically(directory, tokenizer.save_pretrained)
    return {"vocab_size": len(tokenizer), **facts}


def save_base(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path) -> dict:
    """Save model (safetensors) and tokenizer into ``directory`` atomically and describe what was written.

    Both are written into a sibling temporary directory which is then renamed into place; an existing
    ``directory`` is replaced only once the new save is complete (see :func:`_save_atomically`).

    Returns:
        ``{"path", "parameter_count", "vocab_size", "bytes_on_disk", "content_hash", "version", "files"}``.
        ``content_hash`` (and its alias ``version``) is a sha256 over the saved files (relative name, size
        and bytes, in sorted name order): equal for two saves of the same weights and tokenizer, so it
        serves as a data version. ``parameter_count`` counts tied weights once.
    """

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    facts = _save_atomically(directory, write)
    return {
        "parameter_count": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        **facts,
    }


def load_base(name_or_path: str, *, local_files_only: bool = True) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local directory or the Hugging Face cache, offline.

    ``name_or_path`` is a directory written by :func:`save_base` (or any ``save_pretrained``) or a Hub id
    already in the local cache. Nothing is downloaded while ``local_files_only`` is true (the default;
    ``HF_HUB_OFFLINE=1`` has the same effect). The model keeps its saved dtype (transformers 5 default).
    A tokenizer without a pad token gets ``pad = eos`` (and the model config's pad id follows).

    Raises:
        ValueError: naming ``name_or_path`` when the model or tokenizer cannot be found or read.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_files_only)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, local_files_only=local_files_only)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"cannot load base model {name_or_path!r}: not a saved model directory and not in the local "
            f"Hugging Face cache (offline; download it beforehand or name a local path): {error}"
        ) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
