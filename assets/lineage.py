"""Lineage facts recorded with models: the code's git commit and the Dagster data versions and metadata of
upstream assets' latest materializations."""

import subprocess

import dagster as dg

from crawl2serve.resources.storage import REPO_ROOT


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _latest(context: dg.AssetExecutionContext, key: str):
    event = context.instance.get_latest_materialization_event(dg.AssetKey(key))
    return None if event is None else event.asset_materialization


def data_version(context: dg.AssetExecutionContext, key: str) -> str:
    """The data version of ``key``'s latest materialization ("unknown" if it has none)."""
    mat = _latest(context, key)
    return "unknown" if mat is None else mat.tags.get("dagster/data_version", "unknown")


def latest_metadata(context: dg.AssetExecutionContext, key: str) -> dict:
    """Plain values of the metadata of ``key``'s latest materialization."""
    mat = _latest(context, key)
    return {} if mat is None else {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
