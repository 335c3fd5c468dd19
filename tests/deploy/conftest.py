"""Fixtures of the deployment tests (helpers: k8s_checks.py)."""

import pytest
from k8s_checks import configmap_env


@pytest.fixture
def production_env(monkeypatch) -> dict[str, str]:
    """The ConfigMap's variables set in this process (and every other PRODUCTION_ENV variable unset)."""
    from crawl2serve.resources import PRODUCTION_ENV

    for name in PRODUCTION_ENV:
        monkeypatch.delenv(name, raising=False)
    env = configmap_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
