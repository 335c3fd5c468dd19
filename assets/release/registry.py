"""The MLflow Model Registry side of a release: register, alias, promote, roll back (framework-free)."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

MODEL_NAME = "crawl2serve-lora"
CHAMPION, CHALLENGER = "champion", "challenger"
PREVIOUS_TAG = "previous_champion"
ADAPTER_TAG = "adapter_sha256"
MAX_NEW_TOKENS = 64  # what predict generates unless told otherwise


def adapter_sha256(adapter_dir: str) -> str:
    """Content hash of an adapter (weights and config): equal hashes are the same model."""
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        h.update((Path(adapter_dir) / name).read_bytes())
    return h.hexdigest()


def signature():
    """The registered model's MLflow signature: a ``prompt`` string in, a ``completion`` string out, and the
    ``max_new_tokens`` parameter (:data:`MAX_NEW_TOKENS` unless given), as ``LoraAdapterModel.predict`` takes and returns them."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt")]),
        outputs=Schema([ColSpec("string", "completion")]),
        params=ParamSchema([ParamSpec("max_new_tokens", "long", MAX_NEW_TOKENS)]),
    )


@dataclass(frozen=True)
class Registered:
    version: str
    model_uri: str
    previous_champion: str | None
    promoted: bool


def champion_version(client, name: str = MODEL_NAME):
    """The ModelVersion that holds the ``champion`` alias, or None."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except Exception:
        return None


def register_candidate(
    mlflow,
    *,
    adapter_dir: str,
    base_model: str,
    training_run_id: str | None,
    tags: dict[str, str],
    metrics: dict[str, float],
    promote: bool,
    name: str = MODEL_NAME,
) -> Registered:
    """Log the candidate as a pyfunc model with its :func:`signature` (into its training run when known),
    register it, tag it with its lineage, set ``challenger``, and move ``champion`` to it when ``promote``. The
    previous champion stays registered and is recorded on the new version for rollback."""
    from crawl2serve.assets.release.pyfunc import LoraAdapterModel

    client = mlflow.MlflowClient()
    with mlflow.start_run(run_id=training_run_id) if training_run_id else mlflow.start_run(run_name="register"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=LoraAdapterModel(),
            artifacts={"adapter": adapter_dir},
            model_config={"base_model": base_model, "max_new_tokens": MAX_NEW_TOKENS},
            signature=signature(),
            input_example={"prompt": ["The json module"]},  # shown in the UI; also quiets MLflow's hint
        )
        mlflow.log_metrics({f"eval.{k}": float(v) for k, v in metrics.items()})
    version = mlflow.register_model(
        info.model_uri, name, tags={**tags, ADAPTER_TAG: adapter_sha256(adapter_dir)}
    ).version
    for k, v in metrics.items():
        client.set_model_version_tag(name, version, f"eval.{k}", str(v))
    client.set_registered_model_alias(name, CHALLENGER, version)
    previous = champion_version(client, name)
    if promote:
        make_champion(client, str(version), name)
    return Registered(str(version), f"models:/{name}/{version}", str(previous.version) if previous else None, promote)


def make_champion(client, version: str, name: str = MODEL_NAME) -> str | None:
    """Move ``champion`` to ``version``, recording the version it replaced on it for rollback; return that one."""
    previous = champion_version(client, name)
    if previous is not None and str(previous.version) != version:
        client.set_model_version_tag(name, version, PREVIOUS_TAG, str(previous.version))
    client.set_registered_model_alias(name, CHAMPION, version)
    return str(previous.version) if previous else None


def versions_of_adapter(client, sha256: str, name: str = MODEL_NAME) -> list[str]:
    """The registered versions whose adapter has this content hash (:func:`adapter_sha256`), newest first: a
    candidate registered as challenger earlier (``promote: false``), for instance to be shadowed."""
    found = client.search_model_versions(f"name = '{name}' and tags.{ADAPTER_TAG} = '{sha256}'")
    return [str(v.version) for v in sorted(found, key=lambda v: int(v.version), reverse=True)]


def rollback(client, name: str = MODEL_NAME) -> tuple[str, str]:
    """Move ``champion`` back to the version it replaced; return (from, to). The rolled-back version stays
    registered (and keeps ``challenger`` if it had it)."""
    current = champion_version(client, name)
    if current is None:
        raise ValueError(f"{name}: no champion to roll back")
    previous = current.tags.get(PREVIOUS_TAG)
    if not previous:
        raise ValueError(f"{name}: champion version {current.version} replaced no earlier champion")
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_model_version_tag(name, current.version, "rolled_back", "true")
    return str(current.version), previous


def download_adapter(mlflow, version: str, name: str = MODEL_NAME) -> str:
    """Local folder of a registered version's adapter (downloaded from the artifact store)."""
    root = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}")
    return f"{root.rstrip('/')}/artifacts/adapter"
