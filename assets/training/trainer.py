"""The trainer: LoRA fine-tuning (peft) or full-parameter pretraining, one process or FSDP2 under torchrun
(framework-free).

Run as ``torchrun --nproc-per-node N -m crawl2serve.assets.training.trainer --config config.json`` (Dagster launches
it through Pipes; see assets/training/lora.py). It imports only torch, transformers, peft, numpy, pyarrow
and — when Dagster launched it — ``dagster_pipes`` (and ``mlflow`` where installed), never dagster itself, so
the same file runs in a GPU pod or on a machine with nothing but those packages.

- ``mode="lora"`` (``lora_adapter``): LoRA rank/alpha/dropout/target modules from the config over a frozen
  base, saved as a peft adapter under ``adapter/``. ``mode="full"`` (``base_model`` pretraining from scratch):
  every parameter trains (fp32 master weights), saved as a whole model under ``model/``.
- bf16 autocast on GPU, fp32 on CPU.
- Metric rows go to Dagster (Pipes) and, as they come, into the MLflow run the asset started
  (``MLFLOW_RUN_ID``, :class:`MlflowMetrics`).
- Validation loss, and bits per byte (:func:`bits_per_byte`) when the base directory holds a tokenizer.
- World size > 1: FSDP2 ``fully_shard`` per decoder layer and at the root; NCCL on GPU, gloo on CPU; one node
  or several (torchrun's c10d rendezvous, assets/training/multinode.py): the data position of each rank is a
  function of the step, the world size and its rank alone, so N nodes x G ranks train what one node of N x G
  ranks would.
- Packed sequences (``training_dataset``); gradient accumulation; AdamW with linear warmup and cosine
  decay; gradient clipping; a NaN/inf guard that stops every rank with a clear error; fixed seeds.
- Checkpoints every ``checkpoint_every`` steps (adapter, optimizer, scheduler, RNG states, data position),
  written by rank 0 to a temporary folder and renamed into place; a run (or a rank torchrun restarted)
  resumes from the newest complete checkpoint, which rank 0 picks, reads and sends to the others; older ones
  are pruned to ``keep_last``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import time
from contextlib import nullcontext
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

CHECKPOINT_PREFIX = "checkpoint-"
MODES = ("lora", "full")
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def knob(default=MISSING, doc: str = "", *, factory=MISSING):
    """A TrainConfig field with its description (lora_adapter's Dagster config is built from these)."""
    return field(default=default, default_factory=factory, metadata={"doc": doc})


@dataclass
class TrainConfig:
    """One training run. The paths come from the launching asset's inputs, and ``mode`` from which asset launches
    it (base_model: "full", lora_adapter: "lora"); every other field is a knob (lora_adapter's Dagster config is
    generated from these fields, defaults and descriptions)."""

    base_model: str = knob(doc="Folder of the base model (save_pretrained).")
    dataset_dir: str = knob(doc="Folder of the packed training_dataset.")
    output_dir: str = knob(doc="Folder of this run's checkpoints and adapter.")
    mode: str = knob("lora", "lora: adapters over the frozen base; full: every parameter (pretraining).")
    max_steps: int = knob(100, "Optimizer steps in all (a resumed run stops at the same count).")
    micro_batch_size: int = knob(8, "Sequences per rank per forward/backward.")
    grad_accum: int = knob(1, "Micro-batches per optimizer step.")
    learning_rate: float = knob(1e-3, "Peak AdamW learning rate.")
    warmup_steps: int = knob(10, "Linear warmup steps, then cosine decay.")
    min_lr_ratio: float = knob(0.1, "Cosine floor as a share of the peak learning rate.")
    weight_decay: float = knob(0.0, "AdamW weight decay.")
    max_grad_norm: float = knob(1.0, "Gradient clipping norm.")
    lora_r: int = knob(16, "LoRA rank.")
    lora_alpha: int = knob(32, "LoRA alpha (scale = alpha / r).")
    lora_dropout: float = knob(0.0, "Dropout on the LoRA path.")
    target_modules: list[str] = knob(
        doc="Modules that get LoRA weights.",
        factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    seed: int = knob(0, "Seed of weights, data order and dropout.")
    checkpoint_every: int = knob(50, "Steps between checkpoints.")
    keep_last: int = knob(2, "Checkpoints kept.")
    eval_every: int = knob(50, "Steps between validation-loss evaluations.")
    eval_batches: int | None = knob(8, "Validation micro-batches per evaluation (unset: the whole validation split).")
    log_every: int = knob(1, "Steps between two reported metric rows (log line, Dagster, MLflow).")
    compile: bool | None = knob(
        None,
        "torch.compile the model; unset: on GPUs only (1.56x tokens/s on an H100, bench/bench_train.py), "
        "not on CPU where compiling costs more than it saves.",
    )
    max_seq_len: int | None = knob(None, "Truncate packed rows to this many tokens (unset: the dataset's seq_len).")
    liger: bool = knob(
        False,
        "Liger's fused Triton kernels (liger-kernel: RMSNorm, SwiGLU, RoPE, and the cross-entropy fused with the "
        "output layer, which never materializes the logits), on GPUs only; needs the liger-kernel package. "
        "On one H200: 1.31x our eager trainer's tokens/s, 0.93x the compiled one's (README, GPU figures).",
    )

    @classmethod
    def load(cls, path: str) -> TrainConfig:
        data = json.loads(Path(path).read_text())
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"train config {path}: unknown fields {sorted(unknown)}")
        return cls(**data)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"train config field 'mode' must be one of {MODES}, got {self.mode!r}")


# -- reporting --------------------------------------------------------------------------------------
MLFLOW_RUN_ENV, MLFLOW_URI_ENV = "MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI"  # set by the launching asset
MLFLOW_FLUSH_S = 1.0  # at most one MLflow call per second (the first row goes at once)


class MlflowMetrics:
    """Metric rows into the MLflow run the launching asset started (its id and store in the environment), as
    the trainer produces them, so the run's curves grow live.

    Why the environment and not TrainConfig: the config's fields are lora_adapter's Dagster knobs, and the run
    id is not a knob (it is new on every launch); the variables are MLflow's own, and reach a pod too. Rows are
    buffered and sent in one ``log_batch`` at most every :data:`MLFLOW_FLUSH_S` seconds and at the end: one call
    cost 3 ms on the SQLite store (2 cores, loaded), more against a tracking server, against ~10 ms GPU steps.
    :meth:`create` returns ``None`` where mlflow is not installed or no run was handed over."""

    def __init__(self, client, run_id: str, flush_s: float = MLFLOW_FLUSH_S):
        self.client, self.run_id, self.flush_s = client, run_id, flush_s
        self._rows: list[dict] = []
        self._last = -math.inf

    @classmethod
    def create(cls) -> MlflowMetrics | None:
        run_id = os.environ.get(MLFLOW_RUN_ENV)
        if not run_id:
            return None
        try:
            from mlflow import MlflowClient
        except ImportError:
            return None
        return cls(MlflowClient(os.environ.get(MLFLOW_URI_ENV)), run_id)

    def add(self, row: dict) -> None:
        self._rows.append(row)
        if time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        from mlflow.entities import Metric

        rows, self._rows, self._last = self._rows, [], time.monotonic()
        ms = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), ms, int(r["step"]))
            for r in rows
            for k, v in r.items()
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)
        ]
        if metrics and self.client is not None:
            try:
                self.client.log_batch(self.run_id, metrics=metrics)
            except Exception as e:  # tracking is a view of the training, never a reason to stop it
                print(f"MLflow run {self.run_id}: metrics no longer logged ({e}); Pipes still has them", flush=True)
                self.client = None


def restarts_left() -> int:
    """How many more times torchrun restarts this process's worker group when it fails (0 outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) - int(
        os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    )


class Reporter:
    """Logs and metrics of rank 0: to Dagster Pipes when launched by Dagster, else to stdout (metric rows as
    ``{"metrics": ...}`` JSON lines); metric rows also to the launching asset's MLflow run when one was handed
    over (:class:`MlflowMetrics`).

    A failure that torchrun will restart (``--max-restarts``, a lost node) is logged, not reported as the end of
    the Pipes session: the restarted rank 0 opens the session again and reports on (the steps after its
    checkpoint, again), and only its last attempt closes it, with the error or the result."""

    def __init__(self, rank: int):
        self.rank = rank
        self._pipes = None
        self._ctx = None
        self._mlflow = MlflowMetrics.create() if rank == 0 else None
        if rank == 0 and os.environ.get("DAGSTER_PIPES_CONTEXT"):
            from dagster_pipes import open_dagster_pipes

            self._ctx = open_dagster_pipes()
            self._pipes = self._ctx.__enter__()

    def log(self, msg: str) -> None:
        if self.rank != 0:
            return
        if self._pipes:  # Dagster shows it (console, run log): printing it too showed every line twice
            self._pipes.log.info(msg)
        else:
            print(msg, flush=True)

    def metrics(self, payload: dict) -> None:
        if self.rank == 0 and self._pipes:
            self._pipes.report_custom_message(payload)
        elif self.rank == 0:
            print(json.dumps({"metrics": payload}), flush=True)
        if self._mlflow is not None:
            self._mlflow.add(payload)

    def result(self, metadata: dict) -> None:
        if self.rank == 0 and self._pipes:
            self._pipes.report_asset_materialization(metadata=metadata)
        elif self.rank == 0:
            print(json.dumps({"result": metadata}), flush=True)

    def close(self, exc: BaseException | None = None) -> None:
        if self._mlflow is not None:
            self._mlflow.flush()  # the rows since the last call, also when training failed
        if self._ctx is None:
            return
        if exc is not None and restarts_left() > 0:
            self.log(
                f"this attempt failed ({type(exc).__name__}: {exc}); torchrun restarts it ({restarts_left()} left)"
            )
            return
        self._ctx.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)


# -- data -------------------------------------------------------------------------------------------
def load_split(dataset_dir: str, split: str) -> np.ndarray:
    """(n_sequences, seq_len) int64 token ids of a packed split."""
    import pyarrow.parquet as pq

    column = pq.read_table(Path(dataset_dir) / f"{split}.parquet", columns=["input_ids"]).column("input_ids")
    column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, 0), dtype=np.int64)
    width = column.type.list_size if hasattr(column.type, "list_size") else len(column[0])
    return column.flatten().to_numpy().reshape(len(column), width).astype(np.int64)


def batch_indices(n: int, step: int, micro: int, accum: int, world: int, rank: int, seed: int) -> list[np.ndarray]:
    """The micro-batches of one optimizer step for one rank: a seeded permutation per epoch, consumed in
    order, so the data position is a pure function of the step (which is what makes resume exact)."""
    per_step = micro * accum * world
    out = []
    for a in range(accum):
        start = step * per_step + (a * world + rank) * micro
        idx = np.arange(start, start + micro)
        epochs = idx // n
        perm_cache: dict[int, np.ndarray] = {}
        rows = []
        for e, i in zip(epochs, idx % n):
            if e not in perm_cache:
                perm_cache[e] = np.random.default_rng(seed + int(e)).permutation(n)
            rows.append(perm_cache[e][i])
        out.append(np.asarray(rows))
    return out


def scored_bytes(tokenizer, rows: np.ndarray) -> int:
    """UTF-8 bytes of the text whose tokens a causal LM predicts in ``rows`` (every position but the first).

    Each row is decoded with special tokens skipped (document separators carry no text), so the figure is
    the same for any tokenizer of the same text: what makes bits per byte comparable across vocabularies."""
    texts = tokenizer.batch_decode([list(map(int, r[1:])) for r in rows], skip_special_tokens=True)
    return sum(len(t.encode("utf-8")) for t in texts)


def bits_per_byte(mean_loss: float, tokens: int, n_bytes: int) -> float | None:
    """Bits per byte of text: the loss summed over ``tokens`` predicted tokens (nats) / ``n_bytes`` / ln 2.

    ``None`` when there are no bytes to divide by."""
    return mean_loss * tokens / n_bytes / math.log(2) if n_bytes > 0 else None


def _eval_rows(data: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    """The validation rows :func:`evaluate` scores: the first ``eval_batches`` micro-batches (all rows if unset)."""
    return data if cfg.eval_batches is None else data[: cfg.eval_batches * cfg.micro_batch_size]


def _eval_bytes(cfg: TrainConfig, val_data: np.ndarray) -> int:
    """Bytes of the text :func:`evaluate` scores, from the tokenizer saved with the base (0 without one)."""
    if not len(val_data):
        return 0
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(cfg.base_model, local_files_only=True)
    except (OSError, ValueError):
        return 0
    return scored_bytes(tokenizer, _eval_rows(val_data, cfg))


# -- model ------------------------------------------------------------------------------------------
def _apply_liger(base_model: str) -> None:
    """Patch transformers' modules of the base model's type with Liger's kernels (before the model is built:
    Liger swaps the classes and the causal-LM forward, so the loss comes from its fused linear cross-entropy)."""
    from liger_kernel.transformers.monkey_patch import _apply_liger_kernel

    model_type = json.loads((Path(base_model) / "config.json").read_text())["model_type"]
    _apply_liger_kernel(model_type)


def build_model(cfg: TrainConfig, device: torch.device, world: int):
    from transformers import AutoModelForCausalLM

    if cfg.liger and device.type == "cuda":
        _apply_liger(cfg.base_model)
    full = cfg.mode == "full"  # full: fp32 master weights everywhere (bf16 autocast on GPU)
    dtype = torch.bfloat16 if device.type == "cuda" and not full else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        cfg.base_model, dtype=dtype, local_files_only=True, attn_implementation="sdpa"
    )
    model.config.use_cache = False
    if not full:
        model = _with_lora(model, cfg)
    model.to(device)
    if world > 1:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        param_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        layers = model.model.layers if full else model.base_model.model.model.layers
        for layer in layers:
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
    return model


def _with_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    for p in model.parameters():  # trainable LoRA weights in fp32 (master weights); the frozen base in bf16
        if p.requires_grad:
            p.data = p.data.float()
    return model


def flops_per_token(model, seq_len: int) -> float:
    """PaLM's model FLOPs per training token: 6·N (non-embedding parameters) + 12·L·d·T (attention)."""
    cfg = model.config if hasattr(model, "config") else model.base_model.model.config
    # DTensor.numel() is the global size, so this also holds for FSDP-sharded parameters.
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name and "lora_" not in name)
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def sum_across(t: torch.Tensor) -> float:
    if not dist.is_initialized():
        return float(t.sum())
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = t.to(backend_device)
    dist.all_reduce(t)
    return float(t.sum())


# -- checkpoints ------------------------------------------------------------------------------------
def newest_checkpoint(output_dir: Path) -> Path | None:
    done = sorted(
        p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*") if (p / "state.pt").exists() and not p.name.endswith(".tmp")
    )
    return done[-1] if done else None


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True, **kw)


def save_checkpoint(model, opt, sched, step: int, cfg: TrainConfig, rank: int) -> Path | None:
    """Gather adapter + optimizer state on rank 0 and write ``checkpoint-<step>`` atomically."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    model_sd = get_model_state_dict(model, options=_options())
    optim_sd = get_optimizer_state_dict(model, opt, options=_options())
    rng = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    out = Path(cfg.output_dir)
    final = out / f"{CHECKPOINT_PREFIX}{step:07d}"
    if rank == 0:
        tmp = out / f"{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(
            {
                "model": model_sd,
                "optimizer": optim_sd,
                "scheduler": sched.state_dict(),
                "rng": rng,
                "step": step,
                "config": asdict(cfg),
            },
            tmp / "state.pt",
        )
        os.replace(tmp, final)
        for old in sorted(out.glob(f"{CHECKPOINT_PREFIX}*"))[: -cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()
    return final if rank == 0 else None


def resume_point(output_dir: Path, rank: int) -> Path | None:
    """The checkpoint every rank resumes from: rank 0's newest, broadcast. Ranks on other nodes may list the
    shared folder late (an NFS client caches directory listings), and ranks that disagree on the step would
    train different batches or wait for each other forever."""
    choice = [newest_checkpoint(output_dir) if rank == 0 else None]
    if dist.is_initialized():
        dist.broadcast_object_list(choice, src=0)
    return choice[0]


def load_checkpoint(path: Path, model, opt, sched) -> int:
    """Restore a checkpoint. Distributed, rank 0 alone reads it and sends the weights and optimizer state (each
    rank keeps its shard), the scheduler, RNG states and step to the others: one read of the shared volume, not
    one per rank."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    distributed = dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False) if rank == 0 else {}
    small = [{k: state[k] for k in ("scheduler", "rng", "step")} if rank == 0 else None]
    if distributed:
        dist.broadcast_object_list(small, src=0)
    state.update(small[0])
    opts = _options(strict=False, broadcast_from_rank0=distributed)
    set_model_state_dict(model, state.get("model", {}), options=opts)
    set_optimizer_state_dict(model, opt, state.get("optimizer", {}), options=_options(broadcast_from_rank0=distributed))
    sched.load_state_dict(state["scheduler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["step"])


def save_trained(model, cfg: TrainConfig, rank: int) -> Path | None:
    """Save what was trained: the LoRA weights under ``adapter/`` (mode lora) or the whole model under
    ``model/`` (mode full), gathered on rank 0 and renamed into place."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    sd = get_model_state_dict(model, options=_options())
    name = "model" if cfg.mode == "full" else "adapter"
    target = Path(cfg.output_dir) / name
    if rank == 0:
        tmp = Path(cfg.output_dir) / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(
            tmp, state_dict=sd if cfg.mode == "full" else {k: v for k, v in sd.items() if "lora_" in k}
        )
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    if dist.is_initialized():
        dist.barrier()
    return target if rank == 0 else None


# -- the loop ---------------------------------------------------------------------------------------
def lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(cfg.warmup_steps, 1)
        progress = (step - cfg.warmup_steps) / max(cfg.max_steps - cfg.warmup_steps, 1)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


@torch.no_grad()
def evaluate(model, data: np.ndarray, cfg: TrainConfig, device) -> float:
    """Mean validation loss over the first ``eval_batches`` micro-batches (the same ones every time).

    Every rank evaluates the same batches: FSDP gathers parameters in each forward, so all ranks must run
    the same number of them, and the answer is then identical everywhere with no reduction."""
    model.eval()
    total, count = 0.0, 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    batches = math.ceil(len(data) / cfg.micro_batch_size)
    for b in range(batches if cfg.eval_batches is None else min(cfg.eval_batches, batches)):
        rows = data[b * cfg.micro_batch_size : (b + 1) * cfg.micro_batch_size]
        ids = torch.from_numpy(rows).to(device)
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        total += float(loss) * len(rows)
        count += len(rows)
    model.train()
    return total / max(count, 1)


def train(cfg: TrainConfig) -> dict:
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rep = Reporter(rank)
    error: BaseException | None = None
    try:
        return _train(cfg, world, rank, device, rep)
    except BaseException as e:
        error = e
        raise
    finally:
        rep.close(error)  # once: the Pipes context reports the error, if any, to Dagster
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, world: int, rank: int, device: torch.device, rep: Reporter) -> dict:
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_data = load_split(cfg.dataset_dir, "train")
    val_data = load_split(cfg.dataset_dir, "validation")
    if cfg.max_seq_len:
        train_data, val_data = train_data[:, : cfg.max_seq_len], val_data[:, : cfg.max_seq_len]
    if len(train_data) == 0:
        raise ValueError(f"{cfg.dataset_dir}/train.parquet holds no sequences")
    seq_len = train_data.shape[1]
    model = build_model(cfg, device, world)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=(0.9, 0.95), fused=device.type == "cuda"
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    start = 0
    resume = resume_point(out, rank)
    if resume is not None:
        start = load_checkpoint(resume, model, opt, sched)
        rep.log(f"resumed from {resume.name} at step {start}")
    use_compile = cfg.compile if cfg.compile is not None else device.type == "cuda"
    step_fn = torch.compile(model) if use_compile else model
    fpt = flops_per_token(model, seq_len)
    peak = next(
        (v for k, v in PEAK_BF16_FLOPS.items() if device.type == "cuda" and k in torch.cuda.get_device_name()), None
    )
    eval_rows = _eval_rows(val_data, cfg)
    eval_bytes, eval_tokens = _eval_bytes(cfg, val_data), eval_rows.size - len(eval_rows)  # L-1 predicted per row

    def bpb(loss: float | None) -> float | None:
        return None if loss is None else bits_per_byte(loss, eval_tokens, eval_bytes)

    initial_val = evaluate(model, val_data, cfg, device) if start == 0 and len(val_data) else None
    if initial_val is not None:
        rep.log(f"validation loss before training: {initial_val:.4f}")
        rep.metrics({"step": 0, "val_loss": initial_val, "val_bits_per_byte": bpb(initial_val)})
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    tokens_per_step = cfg.micro_batch_size * cfg.grad_accum * world * seq_len
    history, val_loss, t_window, tok_window = [], initial_val, time.perf_counter(), 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    last_ckpt = None
    for step in range(start, cfg.max_steps):
        loss_sum = torch.zeros((), device=device)
        for idx in batch_indices(len(train_data), step, cfg.micro_batch_size, cfg.grad_accum, world, rank, cfg.seed):
            ids = torch.from_numpy(train_data[idx]).to(device, non_blocking=True)
            with autocast:
                loss = step_fn(input_ids=ids, labels=ids).loss / cfg.grad_accum
            loss.backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        loss_value = sum_across(loss_sum.float().cpu().reshape(1)) / world
        finite = math.isfinite(loss_value) and math.isfinite(float(grad_norm))
        if not finite:
            raise FloatingPointError(
                f"non-finite loss or gradient at step {step + 1} (loss={loss_value}, grad_norm={float(grad_norm)}, "
                f"lr={sched.get_last_lr()[0]:.3g}): stopping; lower learning_rate or check the dataset"
            )
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tok_window += tokens_per_step
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.max_steps:
            val_loss = evaluate(model, val_data, cfg, device) if len(val_data) else None
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t_window
            tps = tok_window / elapsed
            row = {
                "step": done,
                "loss": loss_value,
                "lr": sched.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "tokens_per_s": tps,
                "mfu": (tps * fpt / (peak * world)) if peak else None,
            }
            if val_loss is not None and (done % cfg.eval_every == 0 or done == cfg.max_steps):
                row["val_loss"] = val_loss
                row["val_bits_per_byte"] = bpb(val_loss)
            history.append(row)
            rep.metrics(row)
            rep.log(
                f"step {done}/{cfg.max_steps} loss {loss_value:.4f} lr {row['lr']:.2e} "
                f"{tps:,.0f} tok/s"
                + (f" mfu {row['mfu']:.1%}" if row["mfu"] else "")
                + (f" val_loss {row['val_loss']:.4f}" if "val_loss" in row else "")
                + (f" val_bpb {row['val_bits_per_byte']:.3f}" if row.get("val_bits_per_byte") else "")
            )
            t_window, tok_window = time.perf_counter(), 0
        if done % cfg.checkpoint_every == 0 and done < cfg.max_steps:
            last_ckpt = save_checkpoint(model, opt, sched, done, cfg, rank)
    saved = save_trained(model, cfg, rank)
    peak_mem = (
        torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    saved_bytes = sum(f.stat().st_size for f in saved.rglob("*") if f.is_file()) if saved else None
    steady = [r["tokens_per_s"] for r in history[len(history) // 4 :]] or [0.0]
    result = {
        "steps": cfg.max_steps,
        "resumed_from_step": start,
        "world_size": world,
        "device": str(device),
        "mode": cfg.mode,
        "initial_val_loss": initial_val,
        "final_val_loss": val_loss,
        "initial_val_bits_per_byte": bpb(initial_val),
        "final_val_bits_per_byte": bpb(val_loss),
        "final_train_loss": history[-1]["loss"] if history else None,
        "tokens_per_s": float(np.median(steady)),
        "peak_memory_bytes": int(peak_mem),
        "mfu": (float(np.median(steady)) * fpt / (peak * world)) if peak else None,
        "adapter_path": str(saved) if saved and cfg.mode == "lora" else None,
        "model_path": str(saved) if saved and cfg.mode == "full" else None,
        f"{'model' if cfg.mode == 'full' else 'adapter'}_bytes": saved_bytes,
        "last_checkpoint": str(last_ckpt) if last_ckpt else None,
    }
    rep.result(result)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="LoRA fine-tuning or full pretraining of a causal LM on a packed dataset.")
    p.add_argument("--config", required=True, help="JSON file of TrainConfig fields")
    train(TrainConfig.load(p.parse_args(argv).config))


if __name__ == "__main__":
    main()
