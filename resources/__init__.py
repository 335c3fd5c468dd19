"""Resources, chosen per environment in one place: ``build_resources(env)``.

``local`` (the embedded default): data under ./data, the pydoc server as crawl target, no services.
``production`` (Kubernetes, see deploy/README.md): the same code, configured from environment variables
(``PRODUCTION_ENV``): a shared data root, seed URLs, Feast on Redis, an MLflow server, the trainer as GPU pods
and SGLang as a GPU Deployment. A missing required variable is an error that names it.
"""

from __future__ import annotations

import os

from .base_model import BaseModelSource
from .corpus_executor import CorpusExecutor
from .crawl_target import CrawlTarget
from .feast_store import FeastStore
from .folders import FolderIOManager
from .io_manager import ParquetIOManager
from .serving import ServingEngine
from .storage import DEFAULT_DATA_ROOT, DataRoot
from .tracking import MlflowTracking
from .training import TrainingLauncher

ENV_VAR = "CRAWL2SERVE_ENV"

# The production environment's variables: name -> (required, what it is). deploy/k8s/10-config.yaml sets them.
PRODUCTION_ENV: dict[str, tuple[bool, str]] = {
    "CRAWL2SERVE_DATA_ROOT": (
        True,
        "the data root: a path on the shared volume (e.g. /data) or an fsspec URL (e.g. s3://bucket/crawl2serve)",
    ),
    "CRAWL2SERVE_DATA_CLAIM": (
        False,
        "PersistentVolumeClaim holding the data root, mounted at CRAWL2SERVE_DATA_ROOT in the trainer and engine pods",
    ),
    "CRAWL2SERVE_SEEDS": (True, "seed URLs of the crawl, separated by commas or whitespace"),
    "CRAWL2SERVE_ALLOWED_HOSTS": (False, "host allow-list of the crawl (default: the seeds' hosts)"),
    "CRAWL2SERVE_CRAWL_DELAY_S": (False, "seconds between two requests to one host (default 1.0)"),
    "CRAWL2SERVE_RAY_ADDRESS": (
        False,
        "Ray cluster the corpus stages run their shards on: ray://<head service>:10001 (deploy/ray/); "
        "unset: a local Ray in the step's pod, on its CPUs",
    ),
    "CRAWL2SERVE_RAY_MAX_RETRIES": (False, "Ray runs a shard again this often when its worker dies (default 3)"),
    "CRAWL2SERVE_REDIS": (True, "Redis of the Feast online store, host:port[,db=N]"),
    "CRAWL2SERVE_GATEWAY_REDIS_URL": (
        False,
        "Redis URL of the gateway's shared state (default: CRAWL2SERVE_REDIS, database 1)",
    ),
    "MLFLOW_TRACKING_URI": (True, "MLflow tracking server (http://mlflow:5000) or database URI"),
    "CRAWL2SERVE_MLFLOW_UI_URL": (
        False,
        "MLflow UI that asset metadata links to (default: MLFLOW_TRACKING_URI when it is http(s))",
    ),
    "CRAWL2SERVE_MLFLOW_ARTIFACTS": (False, "artifact location of a new MLflow experiment (default: the server's)"),
    "CRAWL2SERVE_BASE_MODEL": (
        False,
        "base model: a Hugging Face id in the image's cache or a path (default: the embedded tiny Llama)",
    ),
    "CRAWL2SERVE_NAMESPACE": (False, "namespace of the trainer and engine pods (default crawl2serve)"),
    "CRAWL2SERVE_SERVICE_ACCOUNT": (False, "service account of the trainer pods"),
    "CRAWL2SERVE_TRAINER_IMAGE": (True, "trainer image (the project image built with a CUDA torch)"),
    "CRAWL2SERVE_TRAINER_GPUS": (False, "GPUs of the training pod, one rank each (default 1)"),
    "CRAWL2SERVE_TRAINER_NODES": (
        False,
        "training pods (nodes) of one training run, CRAWL2SERVE_TRAINER_GPUS ranks each (default 1; more: a c10d "
        "rendezvous over an Indexed Job, deploy/README.md)",
    ),
    "CRAWL2SERVE_SGLANG_IMAGE": (True, "SGLang image of the inference engine"),
    "CRAWL2SERVE_SGLANG_GPUS": (False, "GPUs of the engine pod, tensor parallel (default 1)"),
    "CRAWL2SERVE_GPU_NODE_SELECTOR": (False, "node selector of the GPU pods, key=value[,key=value]"),
}


class MissingEnvironment(ValueError):
    """A production setting is missing or malformed; the message names the environment variable(s)."""


def build_resources(env: str | None = None) -> dict:
    env = env or os.environ.get(ENV_VAR, "local")
    if env == "production":
        return production_resources(os.environ)
    if env == "local":
        data_root = DataRoot(url=DEFAULT_DATA_ROOT)
        # pydoc is a single-threaded server on loopback: no delay, two requests in flight is plenty.
        crawl_target = CrawlTarget(data_root=data_root, mode="pydoc", per_host_delay_s=0.0)
    else:
        raise ValueError(f"{ENV_VAR}={env!r}: unknown environment (known: local, production)")
    feast_store = FeastStore(data_root=data_root)
    return {
        "data_root": data_root,
        "io_manager": ParquetIOManager(data_root=data_root),
        "folder_io_manager": FolderIOManager(data_root=data_root),
        "crawl_target": crawl_target,
        "corpus_executor": CorpusExecutor(),  # a local Ray on this machine's cores, started on first use
        "feast_store": feast_store,
        "base_model_source": BaseModelSource(),
        "training_launcher": TrainingLauncher(mode="local", nproc_per_node=1),
        "mlflow_tracking": MlflowTracking(data_root=data_root),
        "serving_engine": ServingEngine(data_root=data_root, feast_store=feast_store),
    }


def production_resources(environ) -> dict:
    """The ``production`` environment from ``environ`` (see ``PRODUCTION_ENV``): configuration only."""
    missing = [
        f"{name} ({what})"
        for name, (required, what) in PRODUCTION_ENV.items()
        if required and not environ.get(name, "").strip()
    ]
    if missing:
        raise MissingEnvironment(f"{ENV_VAR}=production needs these environment variables: " + "; ".join(missing))

    def get(name: str, default: str | None = None) -> str | None:
        return environ.get(name, "").strip() or default

    root, claim = get("CRAWL2SERVE_DATA_ROOT"), get("CRAWL2SERVE_DATA_CLAIM")
    _check_data_root(root, claim)
    mount = {"data_claim": claim, "data_mount": root} if claim else {}
    gpu_selector = _pairs("CRAWL2SERVE_GPU_NODE_SELECTOR", get("CRAWL2SERVE_GPU_NODE_SELECTOR", ""))
    namespace = get("CRAWL2SERVE_NAMESPACE", "crawl2serve")
    redis = get("CRAWL2SERVE_REDIS")

    data_root = DataRoot(url=root)
    crawl_target = CrawlTarget(
        data_root=data_root,
        mode="seeds",
        seeds=_words(get("CRAWL2SERVE_SEEDS")),
        allowed_hosts=_words(get("CRAWL2SERVE_ALLOWED_HOSTS", "")),
        per_host_delay_s=_number("CRAWL2SERVE_CRAWL_DELAY_S", get("CRAWL2SERVE_CRAWL_DELAY_S", "1.0"), float),
    )
    feast_store = FeastStore(data_root=data_root, yaml_file="feature_store.redis.yaml", redis=redis)
    base_model = get("CRAWL2SERVE_BASE_MODEL")
    tracking_uri = get("MLFLOW_TRACKING_URI")
    ui_url = get(
        "CRAWL2SERVE_MLFLOW_UI_URL", tracking_uri if tracking_uri.startswith(("http://", "https://")) else None
    )
    return {
        "data_root": data_root,
        "io_manager": ParquetIOManager(data_root=data_root),
        "folder_io_manager": FolderIOManager(data_root=data_root),
        "crawl_target": crawl_target,
        "corpus_executor": CorpusExecutor(
            address=get("CRAWL2SERVE_RAY_ADDRESS"),
            max_retries=_number("CRAWL2SERVE_RAY_MAX_RETRIES", get("CRAWL2SERVE_RAY_MAX_RETRIES", "3"), int, minimum=0),
        ),
        "feast_store": feast_store,
        "base_model_source": BaseModelSource(model=base_model) if base_model else BaseModelSource(),
        "training_launcher": TrainingLauncher(
            mode="k8s",
            image=get("CRAWL2SERVE_TRAINER_IMAGE"),
            namespace=namespace,
            gpus=_number("CRAWL2SERVE_TRAINER_GPUS", get("CRAWL2SERVE_TRAINER_GPUS", "1"), int, minimum=1),
            nnodes=_number("CRAWL2SERVE_TRAINER_NODES", get("CRAWL2SERVE_TRAINER_NODES", "1"), int, minimum=1),
            node_selector=gpu_selector,
            service_account=get("CRAWL2SERVE_SERVICE_ACCOUNT"),
            **mount,
        ),
        "mlflow_tracking": MlflowTracking(
            data_root=data_root,
            tracking_uri=tracking_uri,
            artifact_location=get("CRAWL2SERVE_MLFLOW_ARTIFACTS"),
            **({"ui_url": ui_url} if ui_url else {}),
        ),
        "serving_engine": ServingEngine(
            data_root=data_root,
            feast_store=feast_store,
            backend="sglang",
            mode="k8s",
            image=get("CRAWL2SERVE_SGLANG_IMAGE"),
            namespace=namespace,
            gpus=_number("CRAWL2SERVE_SGLANG_GPUS", get("CRAWL2SERVE_SGLANG_GPUS", "1"), int, minimum=1),
            node_selector=gpu_selector,
            redis_url=get("CRAWL2SERVE_GATEWAY_REDIS_URL", f"redis://{redis.split(',')[0]}/1"),
            **mount,
        ),
    }


def _check_data_root(root: str, claim: str | None) -> None:
    import fsspec

    protocol = root.split("://", 1)[0] if "://" in root else "file"
    if claim and (protocol != "file" or not root.startswith("/")):
        raise MissingEnvironment(
            f"CRAWL2SERVE_DATA_CLAIM={claim!r} mounts a volume at the data root, so "
            f"CRAWL2SERVE_DATA_ROOT must be an absolute path (got {root!r})"
        )
    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as exc:
        raise MissingEnvironment(
            f"CRAWL2SERVE_DATA_ROOT={root!r}: no filesystem for {protocol!r} in this image ({exc})"
        ) from exc


def _words(value: str) -> list[str]:
    return [w for w in value.replace(",", " ").split() if w]


def _pairs(name: str, value: str) -> dict[str, str]:
    pairs = {}
    for item in _words(value):
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise MissingEnvironment(f"{name}: expected key=value[,key=value], got {value!r}")
        pairs[key] = val
    return pairs


def _number(name: str, value: str, kind, minimum=None):
    try:
        number = kind(value)
    except ValueError:
        raise MissingEnvironment(f"{name}={value!r}: not {'an integer' if kind is int else 'a number'}") from None
    if minimum is not None and number < minimum:
        raise MissingEnvironment(f"{name}={value!r}: must be at least {minimum}")
    return number
