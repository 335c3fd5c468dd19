"""LoRA training throughput on GPUs: our trainer vs a plain Hugging Face Trainer + peft, same model and data.

    python3 bench/bench_train.py                       # one GPU: ours (eager), ours (torch.compile), HF Trainer
    python3 bench/bench_train.py --variants ours --nproc 1,2   # FSDP scaling: 1 GPU vs 2 GPUs (torchrun)
    python3 bench/bench_train.py --variants ours_compile,ours_compile_liger,ours_liger,hf   # Liger's kernels

A Llama-shaped model of ~1.2B parameters built from a config (random init, no download), bf16, packed
random-token sequences of 2048, LoRA r=16 on all projections. MFU uses PaLM's model FLOPs per token,
6·N (non-embedding parameters) + 12·L·d·T, over the GPU's dense bf16 peak (989 TFLOP/s on H100/H200),
for both trainers. Needs only torch, transformers, peft, numpy, pyarrow (and accelerate for the baseline).
Each variant runs in its own process; the table prints last.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPE = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=16,
    num_key_value_heads=16,
    vocab_size=32000,
    max_position_embeddings=4096,
)
TINY_SHAPE = dict(  # CPU runs (bench_multinode.py), and a smoke run of this script itself (BENCH_TINY=1)
    SHAPE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=512,
)
if os.environ.get("BENCH_TINY"):
    SHAPE = TINY_SHAPE
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def prepare(work: Path, seq: int, rows: int, shape: dict | None = None) -> None:
    """A random-init Llama of ``shape`` (default SHAPE, bf16) under ``work/base`` and packed random tokens under
    ``work/data``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = shape or SHAPE
    if not (work / "base" / "config.json").exists():
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False)).to(torch.bfloat16)
        model.save_pretrained(work / "base")
    rng = np.random.default_rng(0)
    (work / "data").mkdir(exist_ok=True)
    for split, n in (("train", rows), ("validation", 8)):
        ids = rng.integers(0, shape["vocab_size"], size=(n, seq), dtype=np.int32)
        arr = pa.FixedSizeListArray.from_arrays(pa.array(ids.ravel()), seq)
        pq.write_table(pa.table({"input_ids": arr}), work / "data" / f"{split}.parquet")


def run_ours(work: Path, args, nproc: int, compile_: bool, liger: bool = False) -> dict:
    cfg = dict(
        base_model=str(work / "base"),
        dataset_dir=str(work / "data"),
        output_dir=str(work / f"out-{nproc}-{int(compile_)}-{int(liger)}"),
        max_steps=args.steps,
        micro_batch_size=args.micro,
        learning_rate=1e-4,
        warmup_steps=2,
        checkpoint_every=10**6,
        eval_every=10**6,
        eval_batches=1,
        log_every=1,
        compile=compile_,
        liger=liger,
        lora_r=16,
        lora_alpha=32,
        target_modules=TARGETS,
    )
    path = work / f"cfg-{nproc}-{int(compile_)}-{int(liger)}.json"
    path.write_text(json.dumps(cfg))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "crawl2serve.assets.training.trainer",
        "--config",
        str(path),
    ]
    path_env = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)  # keep the caller's
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path_env})
    if proc.returncode != 0:  # the trainer's own traceback, not torchrun's summary after it
        errors = [ln for ln in proc.stderr.splitlines() if "Error" in ln or "error:" in ln]
        return {"error": "\n".join(errors[:6]) + "\n" + proc.stderr[-800:]}
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith('{"result"'))
    return json.loads(line)["result"]


def run_hf(work: Path, args) -> dict:
    """The baseline: transformers.Trainer + peft, bf16, the same model, data, batch and LoRA config."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from crawl2serve.assets.training.trainer import PEAK_BF16_FLOPS, flops_per_token

    col = pq.read_table(work / "data" / "train.parquet").column("input_ids").combine_chunks()
    data = torch.from_numpy(col.flatten().to_numpy().reshape(len(col), args.seq).astype(np.int64))

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return {"input_ids": data[i], "labels": data[i]}

    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            torch.cuda.synchronize()
            times.append(time.perf_counter())

    model = AutoModelForCausalLM.from_pretrained(work / "base", dtype=torch.bfloat16, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, task_type="CAUSAL_LM"))
    targs = TrainingArguments(
        output_dir=str(work / "hf"),
        per_device_train_batch_size=args.micro,
        max_steps=args.steps,
        bf16=True,
        learning_rate=1e-4,
        warmup_steps=2,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        optim="adamw_torch_fused",
        dataloader_num_workers=2,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    torch.cuda.reset_peak_memory_stats()
    Trainer(model=model, args=targs, train_dataset=Rows(), callbacks=[Clock()]).train()
    skip = len(times) // 4
    tps = (len(times) - 1 - skip) * args.micro * args.seq / (times[-1] - times[skip])
    fpt = flops_per_token(model, args.seq)
    peak = next(v for k, v in PEAK_BF16_FLOPS.items() if k in torch.cuda.get_device_name())
    return {
        "tokens_per_s": tps,
        "mfu": tps * fpt / peak,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(),
        "world_size": 1,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--variants", default="ours,ours_compile,hf")
    ap.add_argument("--nproc", default="1")
    ap.add_argument("--work", default=None)
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-train-"))
    if args.only == "hf":
        print("RESULT " + json.dumps(run_hf(work, args)))
        return
    import torch

    nprocs = [int(n) for n in args.nproc.split(",")]
    prepare(work, args.seq, rows=args.steps * args.micro * max(nprocs) + 8)
    device = f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    print(f"device: {device}, torch {torch.__version__}", flush=True)
    rows = []
    for variant in args.variants.split(","):
        for n in nprocs if variant.startswith("ours") else [1]:
            t0 = time.time()
            if variant == "hf":
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--only",
                        "hf",
                        "--work",
                        str(work),
                        "--steps",
                        str(args.steps),
                        "--micro",
                        str(args.micro),
                        "--seq",
                        str(args.seq),
                    ],
                    capture_output=True,
                    text=True,
                )
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                res = json.loads(lines[-1][7:]) if lines else {"error": proc.stderr[-1500:]}
            else:
                res = run_ours(work, args, n, compile_="compile" in variant, liger="liger" in variant)
            res["wall_s"] = time.time() - t0
            rows.append((variant, n, res))
            print(variant, n, json.dumps(res)[:600], flush=True)
    print(f"\n{'variant':14} {'GPUs':>4} {'tokens/s':>10} {'MFU':>6} {'peak GiB':>9} {'vs hf':>6} {'vs 1 GPU':>8}")
    hf = next((r["tokens_per_s"] for v, _, r in rows if v == "hf" and "tokens_per_s" in r), None)
    one = {v: r.get("tokens_per_s") for v, n, r in rows if n == 1}
    for v, n, r in rows:
        if "error" in r:
            print(f"{v:14} {n:4d}  ERROR {r['error'][-300:]}")
            continue
        tps = r["tokens_per_s"]
        print(
            f"{v:14} {n:4d} {tps:10,.0f} {r['mfu'] or 0:6.1%} {r['peak_memory_bytes'] / 2**30:9.1f} "
            f"{(tps / hf) if hf else float('nan'):6.2f} {(tps / one[v]) if one.get(v) else float('nan'):8.2f}"
        )


if __name__ == "__main__":
    main()
