"""``batch_generations``: a prompt set through the served engine by the batch runner (``serving/batch.py``).

The prompts (a Parquet or JSONL file with a ``prompt`` column and optionally an ``id`` column; by default the
evaluation's fixed prompts, ``assets.release.evaluate.FIXED_PROMPTS``) become one request line each, sent to
the engine that serves the chosen version (the routing table's stable version unless ``version`` is set), at
``concurrency`` requests in flight. The engine is called directly, not through the gateway: an offline job is no
tenant's traffic, and its outputs would otherwise enter the inference log that drift monitoring reads.

Results are written in chunks under a folder named by the run's key (the prompts' content hash, the version and
the sampling parameters): a run killed at any point loses only its unwritten chunk, and the next
materialization with the same inputs resumes where it stopped (lines whose answer was a transient failure, an
engine 5xx or no answer, are sent again). The output table carries each row's lineage: model version, the
adapter's content hash, the engine's model value and URL, and the sampling parameters.
"""

import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from crawl2serve.assets.metadata import stage_facts
from crawl2serve.assets.metadata import table as typed_table
from crawl2serve.assets.release.evaluate import FIXED_PROMPTS
from crawl2serve.assets.release.registry import adapter_sha256
from crawl2serve.assets.serving.assets import sglang_deployment
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.storage import DataRoot
from crawl2serve.serving.batch import BatchLine, ChunkStore, HttpSend, run_batch, transient
from crawl2serve.serving.gateway.routing import read_routing

ASSET = "batch_generations"
OUTPUT_FILE = "generations.parquet"
SCHEMA = pl.Schema(
    {
        "id": pl.String,
        "prompt": pl.String,
        "output": pl.String,
        "finish_reason": pl.String,
        "status": pl.Int64,
        "error": pl.String,
        "prompt_tokens": pl.Int64,
        "completion_tokens": pl.Int64,
        "latency_ms": pl.Float64,
        "model_version": pl.String,
        "adapter_sha256": pl.String,
        "served_model": pl.String,
        "engine_url": pl.String,
        "sampling": pl.String,
        "run_key": pl.String,
    }
)


class BatchGenerationsConfig(dg.Config):
    prompts_path: str | None = Field(
        None,
        description="Parquet or JSONL file of prompts (column `prompt_column`, ids in `id_column` when present, "
        "else the row number); None: the evaluation's fixed prompts (assets.release.evaluate.FIXED_PROMPTS)",
    )
    prompt_column: str = "prompt"
    id_column: str = "id"
    version: str | None = Field(None, description="The routed version label to generate with; None: the stable one")
    chat: bool = Field(False, description="Send each prompt as a user message to /v1/chat/completions")
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = Field(None, ge=0, description="Sampling seed (None: the engine's)")
    concurrency: int = Field(8, ge=1, description="Requests in flight to the engine at once")
    chunk_size: int = Field(16, ge=1, description="Results per chunk written to disk (a kill loses at most one)")
    fresh: bool = Field(False, description="Drop what an earlier run with the same key wrote, and start over")

    def sampling(self) -> dict:
        params = {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p}
        return params | ({"seed": self.seed} if self.seed is not None else {})


def read_prompts(path: str | None, prompt_column: str, id_column: str) -> pl.DataFrame:
    """``(id, prompt)`` of a prompt set; ids unique (ValueError naming the column and the problem)."""
    if path is None:
        return pl.DataFrame({"id": [f"fixed-{i}" for i in range(len(FIXED_PROMPTS))], "prompt": list(FIXED_PROMPTS)})
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        frame = pl.read_parquet(path)
    elif suffix in (".jsonl", ".ndjson"):
        frame = pl.read_ndjson(path)
    else:
        raise ValueError(f"prompts_path {path!r}: expected a .parquet or .jsonl file")
    if prompt_column not in frame.columns:
        raise ValueError(f"prompts_path {path!r} has no column {prompt_column!r} (columns: {frame.columns})")
    ids = (
        frame[id_column].cast(pl.String)
        if id_column in frame.columns
        else pl.Series([str(i) for i in range(len(frame))])
    )
    frame = pl.DataFrame({"id": ids, "prompt": frame[prompt_column].cast(pl.String)})
    if frame["prompt"].null_count():
        raise ValueError(f"prompts_path {path!r}: {frame['prompt'].null_count()} rows have no {prompt_column!r}")
    if frame["id"].n_unique() != len(frame):
        raise ValueError(f"prompts_path {path!r}: column {id_column!r} has duplicate ids")
    return frame


def run_key(prompts: pl.DataFrame, version: str, url: str, sampling: dict) -> str:
    """What names a run's chunk folder: the same prompts, version, endpoint and sampling resume one run."""
    digest = hashlib.sha256(json.dumps({"v": version, "url": url, "s": sampling}, sort_keys=True).encode())
    for row in prompts.iter_rows():
        digest.update(json.dumps(row).encode())
    return digest.hexdigest()[:16]


def served_engine(serving_engine: ServingEngine, version: str | None) -> tuple[str, str, str, str]:
    """``(version, engine url, model value, adapter sha256)`` of the engine serving ``version`` (None: the stable
    one), from the routing table and the adapters the serving asset remembered."""
    state = Path(serving_engine.state_dir())
    table = read_routing(str(state / "routing.json"))
    if not table:
        raise dg.Failure(f"no routing table at {state / 'routing.json'}: materialize sglang_deployment first")
    version = version or table["stable"]
    models = table["versions"].get(version)
    if models is None:
        raise dg.Failure(f"version {version!r} is not routed (routed: {', '.join(table['versions'])})")
    for config in serving_engine.engine_configs():
        if config.name in models:
            url = serving_engine.k8s_endpoint(config.name) if serving_engine.mode == "k8s" else config.url
            break
    else:
        raise dg.Failure(f"version {version!r} is served by {sorted(models)}, none of this resource's engines")
    adapters_file = state / "adapters.json"
    adapters = json.loads(adapters_file.read_text()) if adapters_file.is_file() else {}
    adapter = adapters.get(version)
    return version, url, models[config.name], adapter_sha256(adapter) if adapter else ""


def result_frame(prompts: pl.DataFrame, latest: dict[str, dict], chat: bool, lineage: dict) -> pl.DataFrame:
    rows = []
    for custom_id, prompt in prompts.iter_rows():
        r = latest[custom_id]
        body = r["body"]
        choice = (body.get("choices") or [{}])[0] if r["status"] == 200 else {}
        usage = body.get("usage") or {}
        rows.append(
            {
                "id": custom_id,
                "prompt": prompt,
                "output": ((choice.get("message") or {}).get("content") if chat else choice.get("text")),
                "finish_reason": choice.get("finish_reason"),
                "status": r["status"],
                "error": None if r["status"] == 200 else json.dumps(body.get("error", body))[:2000],
                "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens"),
                "latency_ms": r["latency_ms"],
                **lineage,
            }
        )
    return pl.DataFrame(rows, schema=SCHEMA)


@dg.asset(
    group_name="serving",
    deps=[sglang_deployment],
    kinds={"python", "parquet"},
    tags={"stage": "serving"},
    **stage_facts("serving"),
)
async def batch_generations(
    context: dg.AssetExecutionContext,
    config: BatchGenerationsConfig,
    serving_engine: ServingEngine,
    data_root: DataRoot,
) -> dg.MaterializeResult:
    """Generations for a prompt set from the served model, with lineage (model version, adapter hash, sampling
    parameters), written at ``{data_root}/batch_generations/_/generations.parquet``. Run by the batch runner at
    ``concurrency`` against the engine serving the version (chunked, resumable: see the module docstring);
    reports throughput. Comes from ``sglang_deployment`` (the engine and its routing table)."""
    try:
        prompts = read_prompts(config.prompts_path, config.prompt_column, config.id_column)
    except (ValueError, OSError) as exc:
        raise dg.Failure(f"batch_generations config: {exc}") from exc
    version, url, served_model, adapter = served_engine(serving_engine, config.version)
    sampling = config.sampling()
    path = "/v1/chat/completions" if config.chat else "/v1/completions"
    key = run_key(prompts, version, url, {**sampling, "chat": config.chat})
    chunks = data_root.local_path(data_root.path(ASSET, None, "runs", key))
    if config.fresh and chunks.exists():
        shutil.rmtree(chunks)
    lines = [
        BatchLine(
            custom_id,
            path,
            {
                "model": served_model,
                **({"messages": [{"role": "user", "content": prompt}]} if config.chat else {"prompt": prompt}),
                **sampling,
            },
        )
        for custom_id, prompt in prompts.iter_rows()
    ]
    store = ChunkStore(chunks)
    send = HttpSend(url, concurrency=config.concurrency)
    try:
        stats = await run_batch(
            lines, send, store, concurrency=config.concurrency, chunk_size=config.chunk_size, retry_transient=True
        )
    finally:
        await send.aclose()
    latest = store.latest()
    retry = [i for i, r in latest.items() if transient(r["status"])]
    if retry:
        first = latest[retry[0]]
        raise dg.Failure(
            f"{len(retry)} of {len(lines)} prompts got no answer from {url} (first: HTTP {first['status']} "
            f"{json.dumps(first['body'])[:300]}); the answered ones are kept: materialize again to resume"
        )
    lineage = {
        "model_version": version,
        "adapter_sha256": adapter,
        "served_model": served_model,
        "engine_url": url,
        "sampling": json.dumps(sampling, sort_keys=True),
        "run_key": key,
    }
    frame = result_frame(prompts, latest, config.chat, lineage)
    out = data_root.write_parquet(frame, data_root.path(ASSET, None, OUTPUT_FILE))
    context.log.info(
        f"{stats.sent} prompts sent to v{version} at {url} in {stats.seconds:.1f} s "
        f"({stats.resumed} already answered by an earlier run)"
    )
    rejected = frame.filter(pl.col("status") != 200).height
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(out),
            "rows": frame.height,
            "rejected_rows": rejected,
            "resumed_rows": stats.resumed,
            "sent": stats.sent,
            "seconds": round(stats.seconds, 3),
            **stats.rates(),
            "completion_tokens": int(frame["completion_tokens"].fill_null(0).sum()),
            "concurrency": config.concurrency,
            "model_version": version,
            "adapter_sha256": adapter or "none (base model)",
            "engine_url": url,
            "sampling": dg.MetadataValue.json(sampling),
            "run_key": key,
            "preview": typed_table(
                ("id", "prompt", "output", "completion_tokens"),
                [
                    (r["id"], r["prompt"][:80], (r["output"] or "")[:120], r["completion_tokens"])
                    for r in frame.head(5).iter_rows(named=True)
                ],
            ),
        }
    )
