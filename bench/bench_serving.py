"""Serving benchmark on a GPU host: SGLang through the serving asset's own launch code, with and without the
gateway, against the bare base model and a plain ``transformers`` ``generate`` baseline.

Phases (each prints its figures and appends them to ``OUT/serving.jsonl``):

    prepare   a Llama-shaped model from a config (random weights, bf16) with the pipeline's tokenizer, and two
              rank-16 LoRA adapters (v1: the champion, v2: the next version)
    base      bare SGLang on the base model (no LoRA): the reference throughput
    hf        transformers ``generate`` with static batches of 64 (left-padded, mixed lengths)
    deploy    ``serving.deploy``: SGLang with the champion merged as its anchor, v2 loaded beside it as a delta
              adapter (``/load_lora_adapter``), the gateway in front; ``sglang.bench_serving`` against SGLang
              directly and through the gateway, champion and canary, at each concurrency

Workload: ``--dataset-name random-ids`` (no downloads), 256 input / 256 output tokens with
``--random-range-ratio 0.5`` (lengths uniform in [128, 256]), streaming OpenAI completions, greedy, ignore_eos.

    gateway   gateway overhead: one fresh engine (SGLang, or ``--engine fake``: bench_gateway.py's load generator)
              reached directly and through each gateway of GATEWAY_ARMS (``--base-tree``: the code before a
              change, as the "before" arm, and this tree's code as the "after" arm) in rounds, the arms' order rotated
              each round, fresh random prompts per run (``streamload.py``); ratios pair an arm with the direct run
              of its round. ``summary`` prints the table again from ``OUT/serving.jsonl``.

    PYTHONPATH=.:/tmp/site-bench python3 bench/bench_serving.py prepare base hf deploy --out $OUT
    PYTHONPATH=.:/tmp/site-bench python3 bench/bench_serving.py gateway --rounds 5 --base-tree ../base --out $OUT
    PYTHONPATH=.:/tmp/site-bench python3 bench/bench_serving.py base hf --concurrency 64 128 256 --batch 64 128 256

Figures of 2026-12-01, one H200 (README "GPU figures", raw in bench/results/h200-2026-12-01-*): through one
gateway process 0.71–0.78 of direct at c=128 for every variant (direct 12.1k tokens/s median), 0.89–1.00 at
c=64, within noise at c=1/32; TTFT p50 +5.4 to +8.4 ms at c=1; h11 and httptools within noise of each other.
With the fake engine one gateway process tops out at 13–16.5k tokens/s (0.9 core), two at 25k. SGLang (an engine
already 11 minutes under load) vs ``generate``: 4.8× at c=64, 3.1× at 128, 1.3–1.4× at 256.
Figures of 2026-12-01, second session (bench/results/h200-2026-12-01b-*), before (main) vs after (the prompt screened while the
engine prefills, the events of one read relayed in one write): TTFT p50 added at c=1 +7.4 → +4.3 ms, through
the gateway 0.97–0.99 of direct at c=1/32/128 and 0.93 at c=64; the load generator's c=128 16.1k → 22.3k tokens/s.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(os.environ.get("BENCH_WORK", "/tmp/bench-serving"))
CONCURRENCY = (1, 32, 64)
PROMPTS = {1: 16, 32: 256, 64: 512, 128: 512, 256: 1024}
IN_LEN, OUT_LEN, RANGE = 256, 256, 0.5
SGLANG_ARGS = ["--attention-backend", "triton", "--sampling-backend", "pytorch", "--log-level", "warning"]
ONE_ENGINE = ["--mem-fraction-static", "0.7"]
TWO_ENGINES = ["--mem-fraction-static", "0.35"]  # the LoRA-free champion engine and the LoRA engine share the GPU
MODEL_SHAPE = dict(
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=16,
    num_attention_heads=16,
    num_key_value_heads=8,
    max_position_embeddings=4096,
)


def base_engine_command() -> list[str]:
    """SGLang serving the bare base model as ``base`` on port 31000, alone on the GPU."""
    return [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
        str(WORK / "base"),
        "--port",
        "31000",
        "--served-model-name",
        "base",
        *SGLANG_ARGS,
        *ONE_ENGINE,
    ]


def emit(out: Path, record: dict) -> None:
    print(json.dumps(record), flush=True)
    with open(out / "serving.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def prepare(tokenizer_dir: str, adapters: bool = True) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **MODEL_SHAPE,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(WORK / "base")
    tok.save_pretrained(WORK / "base")
    params = sum(p.numel() for p in model.parameters())
    for version, seed in (("1", 1), ("2", 2)) if adapters else ():
        torch.manual_seed(seed)
        peft_model = get_peft_model(
            LlamaForCausalLM.from_pretrained(WORK / "base", dtype=torch.bfloat16),
            LoraConfig(
                r=16,
                lora_alpha=32,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            ),
        )
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.01)
        peft_model.save_pretrained(WORK / f"adapter-v{version}")
    print(f"prepared a {params / 1e9:.2f}B-parameter Llama and two rank-16 adapters under {WORK}", flush=True)


def bench(url: str, model: str, concurrency: int, label: str, out: Path, key: str | None = None) -> dict:
    (WORK / "results").mkdir(exist_ok=True)
    result = WORK / "results" / f"bench-{label}-c{concurrency}.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "sglang.bench_serving",
        "--backend",
        "sglang-oai",
        "--base-url",
        url,
        "--model",
        model,
        "--tokenizer",
        str(WORK / "base"),
        "--dataset-name",
        "random-ids",
        "--random-input-len",
        str(IN_LEN),
        "--random-output-len",
        str(OUT_LEN),
        "--random-range-ratio",
        str(RANGE),
        "--num-prompts",
        str(PROMPTS[concurrency]),
        "--max-concurrency",
        str(concurrency),
        "--request-rate",
        "inf",
        "--seed",
        "1",
        "--output-file",
        str(result),
        "--disable-tqdm",
    ]
    env = {**os.environ, **({"OPENAI_API_KEY": key} if key else {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    if proc.returncode != 0 or not result.exists():
        print(proc.stdout[-3000:], proc.stderr[-3000:], flush=True)
        raise RuntimeError(f"bench_serving failed for {label} c{concurrency}")
    m = json.loads(result.read_text().splitlines()[-1])
    record = {
        "run": label,
        "concurrency": concurrency,
        "prompts": PROMPTS[concurrency],
        "completed": m.get("completed"),
        "output_tok_s": round(m["output_throughput"], 1),
        "ttft_p50_ms": round(m["median_ttft_ms"], 2),
        "itl_p50_ms": round(m["median_itl_ms"], 3),
        "e2e_p50_ms": round(m["median_e2e_latency_ms"], 1),
        "command": " ".join(c if " " not in c else repr(c) for c in cmd),
    }
    emit(out, record)
    return record


def phase_base(out: Path, concurrency=CONCURRENCY) -> None:
    from crawl2serve.serving.engines import start_process, stop_process, wait_healthy

    cmd = base_engine_command()
    log = str(out / "sglang-base.log")
    pid = start_process(cmd, log)
    try:
        took = wait_healthy("http://127.0.0.1:31000", pid=pid, log_path=log, timeout_s=400)
        emit(out, {"run": "base-startup", "seconds": round(took, 1), "command": " ".join(cmd)})
        for c in concurrency:
            bench("http://127.0.0.1:31000", "base", c, "sglang-base", out)
    finally:
        stop_process(pid)


def phase_hf(out: Path, batches: int = 2, batch: int = 64) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(WORK / "base", dtype=torch.bfloat16).cuda().eval()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    useful, elapsed = 0, 0.0
    for b in range(batches + 1):  # the first batch warms up and is not counted
        in_lens = torch.randint(int(IN_LEN * RANGE), IN_LEN + 1, (batch,), generator=gen)
        out_lens = torch.randint(int(OUT_LEN * RANGE), OUT_LEN + 1, (batch,), generator=gen)
        width = int(in_lens.max())
        ids = torch.full((batch, width), model.config.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for i, n in enumerate(in_lens.tolist()):  # left padding
            ids[i, width - n :] = torch.randint(10, vocab, (n,), generator=gen)
            mask[i, width - n :] = 1
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(
                input_ids=ids.cuda(),
                attention_mask=mask.cuda(),
                max_new_tokens=int(out_lens.max()),
                min_new_tokens=int(out_lens.max()),
                do_sample=False,
                pad_token_id=model.config.pad_token_id,
            )
        torch.cuda.synchronize()
        if b > 0:
            elapsed += time.perf_counter() - start
            useful += int(out_lens.sum())  # a static batch runs to its longest request: count what was asked
    emit(
        out,
        {
            "run": "hf-generate-static",
            "concurrency": batch,
            "batches": batches,
            "output_tok_s": round(useful / elapsed, 1),
            "seconds": round(elapsed, 2),
        },
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far (Linux /proc)."""
    total = 0.0
    for p in [pid, *[int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(") ", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def bench_gateway(deployment, handles, port: int, spool: Path):
    """The gateway in front of ``handles`` with a tier no benchmark reaches; returns (settings, state, key)."""
    from crawl2serve.serving.gateway.auth import KeyStore
    from crawl2serve.serving.gateway.settings import EngineSettings, GatewaySettings, TierSettings

    settings = GatewaySettings(
        port=port,
        routing_file=deployment.routing_file,
        keys_file=str(deployment.dir / "api_keys.json"),
        log_dir=str(spool),
        engines=[EngineSettings(name=h.name, url=h.url, timeout_s=600, read_timeout_s=120) for h in handles],
        tiers={"bench": TierSettings(requests_per_minute=1e9, tokens_per_minute=1e12)},
    )
    gateway, _ = deployment.ensure_gateway(settings)
    key, _ = KeyStore.load(settings.keys_file).add("bench", "bench")
    time.sleep(1.2)  # the gateway re-reads its keys within a second
    return settings, gateway, key


def phase_deploy(out: Path) -> None:
    from crawl2serve.serving.deploy import Deployment, EngineConfig, Release

    deployment = Deployment(str(WORK / "state"), log=lambda m: print(m, flush=True))
    v1 = Release("1", str(WORK / "adapter-v1"), str(WORK / "base"))
    v2 = Release("2", str(WORK / "adapter-v2"), str(WORK / "base"))
    champion_cfg = EngineConfig(
        name="champion",
        backend="sglang",
        python=sys.executable,
        port=30001,
        extra_args=SGLANG_ARGS + TWO_ENGINES,
        startup_timeout_s=400,
        lora=False,
    )
    cfg = EngineConfig(
        name="primary",
        backend="sglang",
        python=sys.executable,
        port=30000,
        extra_args=SGLANG_ARGS + TWO_ENGINES,
        startup_timeout_s=400,
    )
    try:
        handles = []
        for c in (champion_cfg, cfg):
            handle, took = deployment.ensure_engine(c, v1)
            emit(out, {"run": f"startup-{c.name}", "seconds": round(took, 1), "command": " ".join(handle.command)})
            handles.append(handle)
        champion, lora_engine = handles
        start = time.perf_counter()
        deployment.add_version(lora_engine, v2)
        emit(out, {"run": "load-delta-adapter-v2", "seconds": round(time.perf_counter() - start, 2)})
        emit(
            out,
            {
                "run": "smoke",
                **{v: r["text"][:40] for v, r in deployment.smoke(lora_engine, ["1", "2", "base"]).items()},
            },
        )
        deployment.route("1", handles, canary_share=0.0)
        deployment.route("2", handles, canary_share=0.1)
        settings, gateway, key = bench_gateway(deployment, handles, 8700, WORK / "spool")
        runs = [(champion_cfg.url, "crawl2serve", c, "sglang-champion-merged", None) for c in CONCURRENCY]
        runs += [(cfg.url, "crawl2serve:v2", c, "sglang-canary-delta", None) for c in CONCURRENCY]
        for workers in (1, 4):
            if workers > 1:
                gateway, _ = deployment.ensure_gateway(settings.model_copy(update={"workers": workers}))
                time.sleep(2)
            runs += [(gateway["url"], "crawl2serve@1", c, f"gateway{workers}w-champion", key) for c in CONCURRENCY]
            runs += [(gateway["url"], "crawl2serve@2", 64, f"gateway{workers}w-canary-delta", key)]
            for url, model, c, label, api_key in runs:
                try:
                    before, t0 = cpu_seconds(gateway["pid"]), time.perf_counter()
                    record = bench(url, model, c, label, out, key=api_key)
                    if "gateway" in label:
                        busy = (cpu_seconds(gateway["pid"]) - before) / (time.perf_counter() - t0)
                        emit(
                            out,
                            {
                                "run": f"{label}-cpu",
                                "concurrency": c,
                                "gateway_cores_busy": round(busy, 2),
                                "output_tok_s": record["output_tok_s"],
                            },
                        )
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:  # keep going: report what ran
                    emit(out, {"run": label, "concurrency": c, "error": str(exc)})
            runs = []
        start = time.perf_counter()
        deployment.add_version(champion, v2, promote=True)  # promotion: the champion engine swaps in v2 merged
        emit(
            out,
            {
                "run": "promote-v2-update-weights",
                "seconds": round(time.perf_counter() - start, 2),
                "smoke": deployment.smoke(champion, ["2"])["2"]["text"][:40],
            },
        )
        from crawl2serve.serving.gateway.logstore import read_rows

        rows, skipped = read_rows(str(WORK / "spool"))
        emit(
            out,
            {"run": "gateway-log", "rows": len(rows), "skipped": skipped, "errors": sum(1 for r in rows if r["error"])},
        )
    finally:
        deployment.stop_all()


GATEWAY_PROMPTS = {1: 8, 32: 96, 64: 192, 128: 384}
# (label, tree, uvicorn HTTP implementation, workers); tree "base": the code before this comparison's changes
# (its uvicorn picks httptools when installed), carried beside the repo as BASE_TREE
GATEWAY_ARMS = (
    ("gw-before", "base", "h11", 1),
    ("gw-after", "repo", "h11", 1),
)


def start_gateway(tree: Path, label: str, engine_url: str, engine_model: str, port: int, http, workers: int):
    """A gateway process of the code in ``tree`` in front of one engine (a tier no run reaches, the engine's
    tokenizer for counting); returns (pid, url, key)."""
    from crawl2serve.serving.engines import start_process, wait_healthy
    from crawl2serve.serving.gateway.auth import KeyStore
    from crawl2serve.serving.gateway.routing import write_routing
    from crawl2serve.serving.gateway.settings import EngineSettings, GatewaySettings, TierSettings

    d = WORK / f"gateway-{label}"
    d.mkdir(parents=True, exist_ok=True)
    write_routing(
        str(d / "routing.json"),
        {
            "model": "crawl2serve",
            "stable": "1",
            "canary": None,
            "canary_share": 0,
            "versions": {"1": {"primary": engine_model}},
            "tokenizers": {"1": str(WORK / "base")},
        },
    )
    key, _ = KeyStore.load(d / "keys.json").add("bench", "bench")
    settings = GatewaySettings(
        port=port,
        routing_file=str(d / "routing.json"),
        keys_file=str(d / "keys.json"),
        log_dir=str(d / "spool"),
        engines=[EngineSettings(name="primary", url=engine_url, timeout_s=600, read_timeout_s=120)],
        tiers={"bench": TierSettings(requests_per_minute=1e9, tokens_per_minute=1e12)},
        workers=workers,
    ).model_dump(mode="json")
    if http is None:
        settings.pop("http")
    else:
        settings["http"] = http
    import yaml

    (d / "gateway.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    # -m puts the working folder first on sys.path: the gateway runs the code of ``tree``
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p
            for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if p and not (Path(p) / "crawl2serve").is_dir()
        ),
    }
    cmd = f"cd {tree} && exec {sys.executable} -m crawl2serve.serving gateway --config {d / 'gateway.yaml'}"
    pid = start_process(["sh", "-c", cmd], str(d / "gateway.log"), env=env)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, pid=pid, log_path=str(d / "gateway.log"), timeout_s=120, path="/ready")
    return pid, url, key


def gateway_summary(records: list[dict]) -> list[dict]:
    """Per arm and concurrency, over the rounds every arm completed: the median of tokens/s, TTFT p50 and ITL
    p99, and the ratio to the direct run of the same round (median, min, max); printed as a table too."""
    import statistics

    runs: dict[tuple[str, int], dict[int, dict]] = {}
    for m in records:
        runs.setdefault((m["arm"], m["concurrency"]), {})[m["round"]] = m
    arms = list(dict.fromkeys(m["arm"] for m in records))
    engine = records[0]["run"].removeprefix("gateway-")
    rows = []
    print(f"\n{engine} engine; ratio = arm / direct of the same round (median [min, max]) over complete rounds")
    print(
        f"{'arm':<20} {'c':>4} {'n':>2} {'tok/s':>8} {'ratio':>22} {'TTFT p50':>9} {'+ms':>6} {'ITL p99':>8} {'cores':>6}"
    )
    for c in dict.fromkeys(m["concurrency"] for m in records):
        done = set.intersection(*(set(runs.get((a, c), {})) for a in arms))
        direct = runs[("direct", c)]
        for arm in arms:
            ms = [(runs[(arm, c)][r], direct[r]) for r in sorted(done)]
            if not ms:
                continue
            ratios = [a["output_tok_s"] / d["output_tok_s"] for a, d in ms]
            row = {
                "run": f"gateway-{engine}-summary",
                "arm": arm,
                "concurrency": c,
                "rounds": len(ms),
                "output_tok_s_median": round(statistics.median(a["output_tok_s"] for a, _ in ms), 1),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratio_min": round(min(ratios), 3),
                "ratio_max": round(max(ratios), 3),
                "ttft_p50_ms_median": round(statistics.median(a["ttft_p50_ms"] for a, _ in ms), 2),
                "ttft_added_ms_median": round(statistics.median(a["ttft_p50_ms"] - d["ttft_p50_ms"] for a, d in ms), 2),
                "itl_p99_ms_median": round(statistics.median(a["itl_p99_ms"] for a, _ in ms), 2),
                "gateway_cores_median": round(statistics.median(a.get("gateway_cores_busy", 0) for a, _ in ms), 2),
            }
            rows.append(row)
            print(
                f"{arm:<20} {c:>4} {row['rounds']:>2} {row['output_tok_s_median']:>8.0f} {row['ratio_median']:>7.3f} "
                f"[{row['ratio_min']:.3f}, {row['ratio_max']:.3f}] {row['ttft_p50_ms_median']:>9.2f} "
                f"{row['ttft_added_ms_median']:>6.2f} {row['itl_p99_ms_median']:>8.2f} "
                f"{row['gateway_cores_median']:>6.2f}",
                flush=True,
            )
    return rows


def phase_gateway(out: Path, engine: str = "sglang", rounds: int = 5, base_tree: str | None = None) -> None:
    """Gateway overhead: one freshly started engine reached directly and through each gateway of
    ``GATEWAY_ARMS``, in rounds; in each round every concurrency runs every arm once (the order rotated by
    round), each run with fresh random prompts (``streamload``). Ratios pair an arm with the direct run of the
    same round. ``engine="fake"``: ``bench_gateway.py``'s load generator engine (2 ms between tokens) instead
    of SGLang, for the gateway's own CPU cost."""

    from streamload import random_requests, run_load
    from transformers import AutoTokenizer

    from crawl2serve.serving.engines import start_process, stop_process, wait_healthy

    repo = Path(__file__).resolve().parents[1]
    trees = {"repo": repo, "base": Path(base_tree) if base_tree else None}
    tokenizer = AutoTokenizer.from_pretrained(WORK / "base")
    if engine == "sglang":
        cmd = base_engine_command()
        engine_model = "base"
    else:
        from bench_gateway import ENGINE

        (WORK / "fake_engine.py").write_text(ENGINE)
        cmd = [sys.executable, str(WORK / "fake_engine.py"), "31000", "2"]
        engine_model = "m"
    engine_url, log = "http://127.0.0.1:31000", str(out / f"engine-{engine}.log")
    pids = [start_process(cmd, log)]
    try:
        took = wait_healthy(engine_url, pid=pids[0], log_path=log, timeout_s=400)
        emit(out, {"run": f"gateway-{engine}-startup", "seconds": round(took, 1), "command": " ".join(cmd)})
        arms = [("direct", engine_url, engine_model, None, None)]
        for i, (label, tree, http, workers) in enumerate(GATEWAY_ARMS):
            if trees[tree] is None:
                continue
            pid, url, key = start_gateway(trees[tree], label, engine_url, engine_model, 8710 + i, http, workers)
            pids.append(pid)
            arms.append((label, url, "crawl2serve", key, pid))
        warm = random_requests(tokenizer, 256, IN_LEN, OUT_LEN, RANGE, seed=10_000)
        run_load(engine_url, engine_model, None, warm, 128)  # compiles, cache warm-up; not counted
        for _label, url, model, key, _ in arms[1:]:
            run_load(url, model, key, warm[:32], 16)
        seed = 0
        records = []
        for r in range(rounds):
            for c, n in GATEWAY_PROMPTS.items():
                order = arms[r % len(arms) :] + arms[: r % len(arms)]
                for label, url, model, key, pid in order:
                    seed += 1
                    reqs = random_requests(tokenizer, n, IN_LEN, OUT_LEN, RANGE, seed)
                    before, t0 = (cpu_seconds(pid) if pid else 0.0), time.perf_counter()
                    m = run_load(url, model, key, reqs, c)
                    if pid:
                        m["gateway_cores_busy"] = round((cpu_seconds(pid) - before) / (time.perf_counter() - t0), 2)
                    records.append({"run": f"gateway-{engine}", "arm": label, "round": r, "concurrency": c, **m})
                    emit(out, records[-1])
        for row in gateway_summary(records):
            with open(out / "serving.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    finally:
        for pid in reversed(pids):
            stop_process(pid)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("phases", nargs="+", choices=["prepare", "base", "hf", "deploy", "gateway", "summary"])
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/bench-out"))
    parser.add_argument("--tokenizer", default="data/tokenizer/_")
    parser.add_argument("--engine", choices=["sglang", "fake"], default="sglang", help="gateway: the engine")
    parser.add_argument("--rounds", type=int, default=5, help="gateway: rounds")
    parser.add_argument("--base-tree", help="gateway: a checkout of the code to compare against (the before arm)")
    parser.add_argument("--concurrency", type=int, nargs="+", help="base: concurrencies (default 1 32 64)")
    parser.add_argument("--batch", type=int, nargs="+", default=[64], help="hf: static batch sizes")
    parser.add_argument("--no-adapters", action="store_true", help="prepare: the base model only")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    for phase in args.phases:
        start = time.perf_counter()
        if phase == "prepare":
            prepare(args.tokenizer, adapters=not args.no_adapters)
        else:
            run = {
                "base": lambda: phase_base(out, args.concurrency or CONCURRENCY),
                "hf": lambda: [phase_hf(out, batch=b) for b in args.batch],
                "deploy": lambda: phase_deploy(out),
                "gateway": lambda: phase_gateway(out, args.engine, args.rounds, args.base_tree),
                "summary": lambda: gateway_summary(
                    [
                        m
                        for m in map(json.loads, (out / "serving.jsonl").read_text().splitlines())
                        if m.get("arm") and "round" in m
                    ]
                ),
            }
            run[phase]()
        print(f"phase {phase}: {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
