"""Tenant tiers from Feast's online store, and per-tenant usage pushed back to Feast's push source.

The tier of a tenant is the ``tenant_stats:tier`` online feature (so a billing system, or an operator pushing to
``tenant_stats_push``, changes a tenant's limits without touching the gateway); the API key's own tier is the
fallback while the store has none. Every ``push_interval_s`` the gateway pushes each active tenant's tier and its
requests/tokens over the last hour to the same push source (online store), which is what the UI, the rate
limits and the monitoring assets read.
"""

import asyncio
import collections
import contextlib
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from .settings import FeastSettings

log = logging.getLogger("crawl2serve.gateway.tiers")
FEAST_DIR_VAR = "CRAWL2SERVE_FEAST_DIR"
REDIS_VAR = "CRAWL2SERVE_REDIS"


def open_feature_store(repo_path: str, yaml_file: str, feast_dir: str, redis: str):
    """A ``feast.FeatureStore`` of the project's repo with its location variables (``${CRAWL2SERVE_FEAST_DIR}``,
    ``${CRAWL2SERVE_REDIS}`` in feature_repo/*.yaml) filled in from these arguments, not from the environment:
    nothing here sets a process-wide variable (``import feast`` itself sets PROMETHEUS_MULTIPROC_DIR, which is
    why the gateway's metrics never read it, see serving.gateway.metrics)."""
    import string

    import yaml
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    text = (Path(repo_path) / yaml_file).read_text()
    raw = yaml.safe_load(string.Template(text).safe_substitute({FEAST_DIR_VAR: feast_dir, REDIS_VAR: redis}))
    config = RepoConfig(**raw)
    config.repo_path = Path(repo_path)
    return FeatureStore(config=config)


class UsageWindow:
    """Requests and tokens per tenant over the last hour, in minute buckets."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self._buckets: dict[str, collections.OrderedDict[int, list[int]]] = {}
        self._lock = threading.Lock()

    def add(self, tenant: str, tokens: int) -> None:
        minute = int(self.clock() // 60)
        with self._lock:
            buckets = self._buckets.setdefault(tenant, collections.OrderedDict())
            counts = buckets.setdefault(minute, [0, 0])
            counts[0] += 1
            counts[1] += tokens

    def last_hour(self) -> dict[str, tuple[int, int]]:
        horizon = int(self.clock() // 60) - 59
        out = {}
        with self._lock:
            for tenant, buckets in list(self._buckets.items()):
                for minute in [m for m in buckets if m < horizon]:
                    del buckets[minute]
                if not buckets:
                    del self._buckets[tenant]
                    continue
                out[tenant] = (sum(c[0] for c in buckets.values()), sum(c[1] for c in buckets.values()))
        return out


class TierSource:
    """Tier lookups (cached ``cache_ttl_s``) and the usage pusher. Without Feast settings every tenant keeps its
    key's tier and nothing is pushed."""

    def __init__(self, settings: FeastSettings | None, clock=time.monotonic, push: bool = True):
        self.settings, self.clock, self.push = settings, clock, push
        self.usage = UsageWindow()
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._tiers_seen: dict[str, str] = {}
        self._store = None
        self._store_error: str | None = None
        self.pushes = 0

    def _feature_store(self):
        if self._store is None and self.settings is not None and self._store_error is None:
            try:
                self._store = open_feature_store(
                    self.settings.repo_path, self.settings.yaml_file, self.settings.feast_dir, self.settings.redis
                )
            except Exception as exc:
                self._store_error = f"{type(exc).__name__}: {exc}"
                log.warning("Feast unavailable, using API-key tiers: %s", self._store_error)
        return self._store

    def warm(self) -> bool:
        """Open the feature store ahead of the first request; True when Feast is available."""
        return self._feature_store() is not None

    def _lookup(self, tenant: str) -> str | None:
        store = self._feature_store()
        if store is None:
            return None
        view = self.settings.feature_view
        try:
            row = store.get_online_features(features=[f"{view}:tier"], entity_rows=[{"tenant_id": tenant}]).to_dict()
        except Exception as exc:
            log.warning("tier lookup for %s failed: %s", tenant, exc)
            return None
        values = row.get("tier") or [None]
        return values[0]

    async def tier(self, tenant: str, fallback: str) -> str:
        """The tenant's tier: Feast's online value when present, else ``fallback``."""
        self._tiers_seen.setdefault(tenant, fallback)
        if self.settings is None:
            return fallback
        cached = self._cache.get(tenant)
        if cached is None or self.clock() - cached[0] > self.settings.cache_ttl_s:
            value = await asyncio.to_thread(self._lookup, tenant)
            cached = (self.clock(), value)
            self._cache[tenant] = cached
        if cached[1]:
            self._tiers_seen[tenant] = cached[1]
        return cached[1] or fallback

    def record(self, tenant: str, tokens: int) -> None:
        self.usage.add(tenant, tokens)

    def push_now(self) -> int:
        """Push every active tenant's tier and last-hour usage to the online store; returns rows pushed."""
        store = self._feature_store()
        usage = self.usage.last_hour()
        if store is None or not usage:
            return 0
        import pandas as pd
        from feast.data_source import PushMode

        now = datetime.now(UTC)
        df = pd.DataFrame(
            [
                {
                    "tenant_id": t,
                    "tier": self._tiers_seen.get(t, "free"),
                    "requests_last_hour": r,
                    "tokens_last_hour": k,
                    "event_timestamp": now,
                }
                for t, (r, k) in usage.items()
            ]
        )
        store.push(self.settings.push_source, df, to=PushMode.ONLINE)
        self.pushes += 1
        return len(df)

    def push_rows(self, push_source: str, rows: list[dict]) -> int:
        """Push ``rows`` (``tenant_id``, the view's features; ``event_timestamp`` is now) to ``push_source`` in
        the online store; returns rows pushed (0 without Feast)."""
        store = self._feature_store()
        if store is None or not rows:
            return 0
        import pandas as pd
        from feast.data_source import PushMode

        now = datetime.now(UTC)
        store.push(push_source, pd.DataFrame([{**r, "event_timestamp": now} for r in rows]), to=PushMode.ONLINE)
        return len(rows)

    async def run_pusher(self, stop: asyncio.Event) -> None:
        if self.settings is None or not self.push:
            return
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.push_interval_s)
            try:
                await asyncio.to_thread(self.push_now)
            except Exception as exc:
                log.warning("usage push to Feast failed: %s", exc)
