"""What an engine loads: merged model folders and *delta* LoRA adapters (framework-free).

An engine serves one set of full weights at full speed, the *anchor*: the champion's adapter merged into the
base model. Every other version (a canary, the previous champion kept for rollback, the bare base model) is
served beside it as a LoRA adapter *relative to the anchor*. That is exact, not an approximation: with LoRA
updates ``s1·B1·A1`` (anchor) and ``s2·B2·A2`` (target) on the same base weights ``W``,

    W + s2·B2·A2  =  (W + s1·B1·A1) + [s2·B2 | -s1·B1] · [A2 ; A1]

so the difference is one LoRA adapter of rank ``r1 + r2`` with scale 1 (``lora_alpha = r``). The bare base
model is the delta ``-s1·B1·A1`` (rank ``r1``). SGLang loads such adapters with ``/load_lora_adapter``.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

# A base (non-chat) model has no chat template; the gateway's chat endpoint then renders the messages' text
# back to back, which is exactly the prompt a completion request with the same text would send.
PLAIN_CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished folder into place (readers never see a half-written one)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _staging(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def build_merged(base_dir: str, adapter_dir: str | None, out_dir: str, *, dtype: str = "auto") -> Path:
    """Write ``base + adapter`` merged into plain weights (``save_pretrained``) with the tokenizer, to
    ``out_dir``; ``adapter_dir=None`` copies the base model. A tokenizer without a chat template gets
    :data:`PLAIN_CHAT_TEMPLATE`. Returns the folder; an existing one is replaced atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    tmp = _staging(out)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base_dir, dtype=dtype if dtype == "auto" else getattr(torch, dtype)
        )
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
        model.save_pretrained(tmp)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        if not tokenizer.chat_template:
            tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
        tokenizer.save_pretrained(tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _read_adapter(adapter_dir: str) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    folder = Path(adapter_dir)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: not a peft LoRA adapter ({name} missing)")
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise ValueError(f"{folder}/{ADAPTER_CONFIG}: {key} is set; per-module ranks are not supported here")
    if config.get("use_dora"):
        raise ValueError(f"{folder}/{ADAPTER_CONFIG}: DoRA adapters cannot be expressed as a LoRA delta")
    return config, load_file(str(folder / ADAPTER_WEIGHTS))


def _scale(config: dict) -> float:
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    return alpha / (r**0.5) if config.get("use_rslora") else alpha / r


def _pairs(weights: dict) -> dict[str, tuple]:
    """``module prefix -> (A, B)`` from peft's ``...lora_A.weight`` / ``...lora_B.weight`` keys."""
    out = {}
    for key, a in weights.items():
        if key.endswith(".lora_A.weight"):
            prefix = key[: -len(".lora_A.weight")]
            out[prefix] = (a, weights[f"{prefix}.lora_B.weight"])
    return out


def delta_adapter(target_dir: str | None, anchor_dir: str | None, out_dir: str) -> Path:
    """Write the LoRA adapter that turns the merged ``anchor`` model into the ``target`` model (module docstring).

    ``target_dir=None`` means the bare base model; ``anchor_dir=None`` means the anchor *is* the base model
    (then the delta is the target adapter itself, rescaled). Both adapters must come from the same base model.
    """
    import torch
    from safetensors.torch import save_file

    if target_dir is None and anchor_dir is None:
        raise ValueError("delta_adapter: target and anchor are both the base model; there is no delta")
    parts, config = [], None
    for sign, folder in ((1.0, target_dir), (-1.0, anchor_dir)):
        if folder is None:
            continue
        cfg, weights = _read_adapter(folder)
        if config is not None and cfg.get("base_model_name_or_path") != config.get("base_model_name_or_path"):
            raise ValueError(f"delta_adapter: {target_dir} and {anchor_dir} name different base models")
        config = config or cfg
        parts.append((sign * _scale(cfg), _pairs(weights)))
    modules = sorted({m for _, pairs in parts for m in pairs})
    tensors = {}
    for module in modules:
        a_blocks, b_blocks = [], []
        for scale, pairs in parts:
            if module not in pairs:
                continue
            a, b = pairs[module]
            a_blocks.append(a.float())
            b_blocks.append(b.float() * scale)
        # Zero-pad so every module has the same rank (a module only one side adapts contributes zeros).
        rank = sum(int(next(iter(p.values()))[0].shape[0]) for _, p in parts)
        a_cat, b_cat = torch.cat(a_blocks, 0), torch.cat(b_blocks, 1)
        if a_cat.shape[0] < rank:
            pad = rank - a_cat.shape[0]
            a_cat = torch.cat([a_cat, a_cat.new_zeros(pad, a_cat.shape[1])], 0)
            b_cat = torch.cat([b_cat, b_cat.new_zeros(b_cat.shape[0], pad)], 1)
        dtype = next(iter(parts[0][1].values()))[0].dtype
        tensors[f"{module}.lora_A.weight"] = a_cat.to(dtype).contiguous()
        tensors[f"{module}.lora_B.weight"] = b_cat.to(dtype).contiguous()
    rank = sum(int(next(iter(p.values()))[0].shape[0]) for _, p in parts)
    targets = sorted({m.rsplit(".", 1)[-1] for m in modules})
    delta_config = {
        **config,
        "r": rank,
        "lora_alpha": rank,
        "use_rslora": False,
        "lora_dropout": 0.0,
        "target_modules": targets,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    out = Path(out_dir)
    tmp = _staging(out)
    try:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(delta_config, indent=2))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def adapter_rank(adapter_dir: str) -> int:
    return int(json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())["r"])
