"""Per-tenant spend and budgets: every answered request's cost (:mod:`serving.gateway.costs`) is added to its
tenant's spend of the UTC hour, day and month it arrived in; a tenant whose daily or monthly spend has reached
its budget is refused with a 429 ``budget_exceeded`` until the period resets; at ``alert_share`` (80%) of a
budget one alert goes out through the project's alert channel (:mod:`serving.alerts`), once per budget and
period.

Budgets are USD per UTC day and per UTC month, configured per tier (``budgets.tiers``) and per tenant
(``budgets.tenants``, which wins). A request is admitted while the spend is below the budget, so the request
that crosses it is served (and charged) and the next one is refused: a budget is exceeded by at most the cost
of the requests in flight when it is crossed (one, for a client that waits for each answer; ``max_tokens``
bounds each).

**Spend survives a restart.** Two stores behind one interface (:class:`SpendStore`), as the rate limiter has:
:class:`MemorySpendStore` (one gateway process) is rebuilt on start from the inference log's spool, the
``cost_usd`` of every primary row of the current month (:func:`rebuild`), and from the alerts already sent
(the alerts file), so neither the spend nor an alert is lost or repeated; :class:`RedisSpendStore` (every
replica, ``redis_url``) keeps them in Redis (``INCRBYFLOAT`` per tenant and period, keys expiring after their
period). A store that fails admits the request (logged, ``budget_unavailable`` in ``/metrics``), as the rate
limiter does.
"""

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..alerts import append_alert, post_webhook, read_alerts
from .costs import PriceBook
from .errors import ApiError
from .hours import HOUR_FORMAT, hour_dirs
from .logstore import read_rows

if TYPE_CHECKING:  # the settings import this module, and must not import prometheus_client (serving/__main__.py)
    from .call import Call
    from .metrics import GatewayMetrics

log = logging.getLogger("crawl2serve.gateway.budgets")

PERIODS = ("hour", "day", "month")
#: budget name -> the period its spend is counted over
BUDGET_PERIOD = {"daily": "day", "monthly": "month"}
_FORMATS = {"hour": HOUR_FORMAT, "day": "%Y-%m-%d", "month": "%Y-%m"}
_TTL_S = {"hour": 2 * 3600, "day": 2 * 86400, "month": 33 * 86400}  # Redis keys outlive their period


class BudgetLimits(BaseModel):
    """A tenant's (or a tier's) budgets in USD; None: no such budget."""

    model_config = ConfigDict(extra="forbid")

    daily_usd: float | None = Field(None, gt=0, description="Spend allowed per UTC day")
    monthly_usd: float | None = Field(None, gt=0, description="Spend allowed per UTC month")

    def budgets(self) -> dict[str, float]:
        """``{"daily": usd, "monthly": usd}`` of the budgets that are set."""
        return {
            name: value
            for name, value in (("daily", self.daily_usd), ("monthly", self.monthly_usd))
            if value is not None
        }


class BudgetSettings(BaseModel):
    """Budgets per tier and per tenant, and where their alerts go (the run-failure alerts' channel)."""

    model_config = ConfigDict(extra="forbid")

    tiers: dict[str, BudgetLimits] = Field(default_factory=dict, description="Tier name -> its tenants' budgets")
    tenants: dict[str, BudgetLimits] = Field(default_factory=dict, description="Tenant -> budgets (over its tier's)")
    alert_share: float = Field(0.8, gt=0, le=1, description="Alert once the spend reaches this share of a budget")
    alerts_file: str | None = Field(None, description="The alert channel's alerts.jsonl; None: alerts are only logged")
    alert_webhook: str | None = Field(None, description="POSTed every alert as JSON; None: none")
    redis_prefix: str = Field("c2s:spend:", description="Key prefix of the spend in Redis (with redis_url)")


def period_keys(at: datetime) -> dict[str, str]:
    """The UTC hour, day and month ``at`` falls in: ``{"hour": "2026-12-01T17", "day": "2026-12-01",
    "month": "2026-12"}``."""
    at = at.astimezone(UTC)
    return {period: at.strftime(fmt) for period, fmt in _FORMATS.items()}


def resets_at(period: str, at: datetime) -> datetime:
    """When the UTC ``period`` (``day`` or ``month``) that ``at`` falls in ends."""
    at = at.astimezone(UTC)
    if period == "day":
        return datetime(at.year, at.month, at.day, tzinfo=UTC) + timedelta(days=1)
    if period == "month":
        return datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=UTC)
    raise ValueError(f"a budget resets per 'day' or 'month', not {period!r}")


class SpendStore(Protocol):
    """A tenant's spend per period, and the alerts already sent (all calls are coroutines)."""

    async def add(self, tenant: str, usd: float, at: datetime) -> dict[str, float]:
        """Add ``usd`` to the hour, day and month of ``at``; the spend of each after it."""
        ...

    async def spend(self, tenant: str, at: datetime) -> dict[str, float]:
        """The tenant's spend in the hour, day and month of ``at``."""
        ...

    async def claim_alert(self, tenant: str, budget: str, period: str) -> bool:
        """True the first time it is called for this tenant, budget and period; False after."""
        ...

    async def aclose(self) -> None: ...


class MemorySpendStore:
    """Spend in this process's memory, rebuilt from the inference log on start (:func:`rebuild`). Only the
    current periods are kept: entries of an earlier hour, day or month are dropped as time moves on."""

    def __init__(self) -> None:
        self._usd: dict[tuple[str, str, str], float] = {}  # (tenant, period, key) -> usd
        self._alerted: set[tuple[str, str, str]] = set()
        self._current: dict[str, str] = {}

    def _roll(self, at: datetime) -> dict[str, str]:
        keys = period_keys(at)
        if keys["hour"] > self._current.get("hour", ""):
            self._current = keys
            self._usd = {k: v for k, v in self._usd.items() if k[2] >= keys[k[1]]}
        return keys

    def load(self, tenant: str, usd: float, at: datetime) -> None:
        """Count a past request's cost (rebuilding), without rolling the periods past now."""
        for period, key in period_keys(at).items():
            self._usd[(tenant, period, key)] = self._usd.get((tenant, period, key), 0.0) + usd

    def tenants(self) -> set[str]:
        """The tenants with a spend in the periods kept."""
        return {tenant for tenant, _, _ in self._usd}

    def mark_alerted(self, tenant: str, budget: str, period: str) -> None:
        self._alerted.add((tenant, budget, period))

    async def add(self, tenant: str, usd: float, at: datetime) -> dict[str, float]:
        keys = self._roll(at)
        for period, key in keys.items():
            self._usd[(tenant, period, key)] = self._usd.get((tenant, period, key), 0.0) + usd
        return {period: self._usd[(tenant, period, key)] for period, key in keys.items()}

    async def spend(self, tenant: str, at: datetime) -> dict[str, float]:
        keys = self._roll(at)
        return {period: self._usd.get((tenant, period, key), 0.0) for period, key in keys.items()}

    async def claim_alert(self, tenant: str, budget: str, period: str) -> bool:
        if (tenant, budget, period) in self._alerted:
            return False
        self._alerted.add((tenant, budget, period))
        return True

    async def aclose(self) -> None:
        pass


def rebuild(store: MemorySpendStore, spool_dir: str, alerts_file: str | None, now: datetime | None = None) -> int:
    """Load this month's spend from the inference log's spool (the ``cost_usd`` of every primary row whose hour
    folder is in the current UTC month; rows written before costs were logged count nothing) and the budget
    alerts already sent from ``alerts_file``. Returns the rows that carried a cost."""
    now = now or datetime.now(UTC)
    month_start = now.astimezone(UTC).strftime("%Y-%m-01T00")
    rows, _ = read_rows(spool_dir, [h for h in hour_dirs(spool_dir) if h >= month_start])
    loaded = 0
    for row in rows:
        usd = row.get("cost_usd") or 0.0
        if usd > 0 and row.get("role", "primary") == "primary" and row.get("tenant"):
            store.load(row["tenant"], usd, datetime.fromisoformat(row["ts"]))
            loaded += 1
    for alert in read_alerts(alerts_file) if alerts_file else []:
        if alert.get("kind") == "budget":
            store.mark_alerted(alert["tenant"], alert["budget"], alert["period"])
    return loaded


class RedisSpendStore:
    """Spend in Redis, shared by every gateway replica: ``{prefix}{tenant}:{period}:{key}`` (a float, by
    ``INCRBYFLOAT``, expiring after its period) and ``{prefix}alerted:{tenant}:{budget}:{period}`` (``SET NX``).
    On ``redis.asyncio`` with a deadline of ``timeout_s`` per call, like
    :class:`serving.gateway.ratelimit.RedisLimiter`; Redis errors propagate (the caller fails open)."""

    def __init__(self, url: str, prefix: str = "c2s:spend:", timeout_s: float = 0.25, max_connections: int = 64):
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.prefix, self.timeout_s = prefix, timeout_s
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = aioredis.Redis(connection_pool=pool)

    def key(self, tenant: str, period: str, key: str) -> str:
        return f"{self.prefix}{tenant}:{period}:{key}"

    async def add(self, tenant: str, usd: float, at: datetime) -> dict[str, float]:
        keys = period_keys(at)
        async with asyncio.timeout(self.timeout_s):
            pipe = self._redis.pipeline(transaction=True)
            for period, key in keys.items():
                pipe.incrbyfloat(self.key(tenant, period, key), usd)
                pipe.expire(self.key(tenant, period, key), _TTL_S[period])
            out = await pipe.execute()
        return {period: float(out[2 * i]) for i, period in enumerate(keys)}

    async def spend(self, tenant: str, at: datetime) -> dict[str, float]:
        keys = period_keys(at)
        async with asyncio.timeout(self.timeout_s):
            values = await self._redis.mget([self.key(tenant, p, k) for p, k in keys.items()])
        return {period: float(v) if v is not None else 0.0 for period, v in zip(keys, values)}

    async def claim_alert(self, tenant: str, budget: str, period: str) -> bool:
        async with asyncio.timeout(self.timeout_s):
            return bool(
                await self._redis.set(
                    f"{self.prefix}alerted:{tenant}:{budget}:{period}", 1, nx=True, ex=_TTL_S["month"]
                )
            )

    async def aclose(self) -> None:
        await self._redis.aclose(close_connection_pool=True)


def make_spend_store(redis_url: str | None, prefix: str) -> MemorySpendStore | RedisSpendStore:
    """A RedisSpendStore when a Redis URL is configured, else an in-process MemorySpendStore."""
    return RedisSpendStore(redis_url, prefix) if redis_url else MemorySpendStore()


class Budgets:
    """The budgets of each tenant (its own, else its tier's), its spend, and the alerts: what the
    :class:`CheckBudget` and :class:`Charge` steps share."""

    def __init__(self, settings: BudgetSettings, store: SpendStore, metrics: "GatewayMetrics"):
        self.settings, self.store, self.metrics = settings, store, metrics
        self.tenants_seen: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    def limits(self, tenant: str, tier: str) -> dict[str, float]:
        """``{"daily": usd, "monthly": usd}`` of the budgets that apply to ``tenant`` of ``tier``."""
        limits = self.settings.tenants.get(tenant) or self.settings.tiers.get(tier)
        return limits.budgets() if limits else {}

    def rebuild(self, spool_dir: str) -> int:
        """On start: this month's spend from the log (the in-memory store only; Redis keeps its own)."""
        if not isinstance(self.store, MemorySpendStore):
            return 0
        loaded = rebuild(self.store, spool_dir, self.settings.alerts_file)
        self.tenants_seen |= self.store.tenants()  # their spend is in /metrics (and Feast) from the start
        log.info("spend rebuilt from %d inference-log rows of this month", loaded)
        return loaded

    def observe(self, tenant: str, spend: dict[str, float]) -> None:
        self.tenants_seen.add(tenant)
        for period, usd in spend.items():
            self.metrics.spend.labels(tenant, period).set(usd)

    async def refresh_metrics(self) -> None:
        """Set the spend gauges of every tenant seen to the current periods (a new hour starts at 0)."""
        now = datetime.now(UTC)
        for tenant in list(self.tenants_seen):
            with contextlib.suppress(Exception):
                self.observe(tenant, await self.store.spend(tenant, now))

    async def push_spend(self, tier_source) -> int:
        """Push every tenant's spend seen by this process (the current hour, day and month) to Feast's
        ``tenant_spend`` view (the ``spend_push_source`` of the Feast settings); returns rows pushed."""
        settings = tier_source.settings
        if settings is None or not self.tenants_seen:
            return 0
        now = datetime.now(UTC)
        rows = []
        for tenant in sorted(self.tenants_seen):
            spend = await self.store.spend(tenant, now)
            rows.append({"tenant_id": tenant, **{f"spend_usd_{p}": spend[p] for p in PERIODS}})
        return await asyncio.to_thread(tier_source.push_rows, settings.spend_push_source, rows)

    async def run_pusher(self, tier_source, stop: asyncio.Event) -> None:
        """Every ``push_interval_s`` of the Feast settings, :meth:`push_spend` (nothing without Feast, or where
        the tier source does not push: several workers without Redis)."""
        if tier_source.settings is None or not tier_source.push:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tier_source.settings.push_interval_s)
            try:
                await self.push_spend(tier_source)
            except Exception as exc:
                log.warning("spend push to Feast failed: %s", exc)

    def alert(self, tenant: str, budget: str, limit: float, spend: float, at: datetime) -> None:
        """Send one budget alert through the alert channel, in a thread (never awaited on the request path)."""
        period = BUDGET_PERIOD[budget]
        alert = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kind": "budget",
            "tenant": tenant,
            "budget": budget,
            "period": period_keys(at)[period],
            "limit_usd": limit,
            "spend_usd": spend,
            "share": spend / limit,
            "resets_at": resets_at(period, at).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "error": f"tenant {tenant!r} has spent {spend / limit:.0%} of its {budget} budget "
            f"(USD {spend:.6f} of {limit:.6f})",
        }
        log.warning("budget alert: %s", alert["error"])
        self.metrics.budget_alerts.labels(budget).inc()
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._send, alert))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, alert: dict) -> None:
        if self.settings.alerts_file:
            try:
                append_alert(self.settings.alerts_file, alert)
            except OSError as exc:
                log.warning("budget alert not written to %s: %s", self.settings.alerts_file, exc)
        if self.settings.alert_webhook:
            try:
                post_webhook(self.settings.alert_webhook, alert)
            except OSError as exc:
                log.warning("budget alert webhook %s failed: %s", self.settings.alert_webhook, exc)

    async def drain(self) -> None:
        """Wait for the charges and alerts still running (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _arrival(call: "Call") -> datetime:
    return datetime.fromisoformat(call.row.ts)


class CheckBudget:
    """Refuses a tenant whose spend has reached one of its budgets: 429 ``budget_exceeded`` naming the budget,
    the spend and when it resets (``Retry-After``: the seconds until then). After :class:`~serving.gateway.steps.Limit`
    (which knows the tenant's tier)."""

    def __init__(self, budgets: Budgets):
        self.budgets = budgets

    async def __call__(self, call: "Call") -> None:
        tenant = call.api_key.tenant
        limits = self.budgets.limits(tenant, call.tier.name if call.tier else call.api_key.tier)
        if not limits:
            return
        at = _arrival(call)
        try:
            spend = await self.budgets.store.spend(tenant, at)
        except Exception as exc:
            log.warning("spend store unavailable, admitting the request: %s", exc)
            self.budgets.metrics.errors.labels("budget_unavailable").inc()
            return
        for budget, limit in limits.items():
            period = BUDGET_PERIOD[budget]
            spent = spend[period]
            if spent < limit:
                continue
            reset = resets_at(period, at)
            wait = max(1, int((reset - datetime.now(UTC)).total_seconds() + 0.999))
            self.budgets.metrics.budget_rejected.labels(budget).inc()
            raise ApiError(
                429,
                f"budget exceeded for tenant {tenant!r}: its {budget} budget is USD {limit:.6f} and it has spent "
                f"USD {spent:.6f} this {period} ({period_keys(at)[period]}, UTC); the budget resets at "
                f"{reset.strftime('%Y-%m-%dT%H:%M:%SZ')} (in {wait} s)",
                kind="insufficient_quota",
                code="budget_exceeded",
                headers={"Retry-After": str(wait)},
            )


class Charge:
    """Prices the call's tokens (:class:`~serving.gateway.costs.PriceBook`) into its row's ``cost_usd`` and adds
    them to its tenant's spend; alerts once the spend reaches ``alert_share`` of a budget. After
    :class:`~serving.gateway.steps.Account`, before the row is written. The spend is added in a task of its own,
    so that it completes even when the call's task is being cancelled (a client gone mid-stream)."""

    def __init__(self, budgets: Budgets, prices: PriceBook):
        self.budgets, self.prices = budgets, prices

    async def __call__(self, call: "Call") -> None:
        row = call.row
        if call.api_key is None or call.row.role != "primary" or row.cache == "hit":
            return  # a hit of the response cache (serving.gateway.cache) took no engine time: it costs nothing
        row.cost_usd = self.prices.cost(row.model_version, row.engine, row.prompt_tokens, row.completion_tokens)
        if row.cost_usd <= 0:
            return
        self.budgets.metrics.cost.labels(call.api_key.tenant, row.model_version).inc(row.cost_usd)
        tier = call.tier.name if call.tier else call.api_key.tier
        task = asyncio.get_running_loop().create_task(
            self._add(call.api_key.tenant, tier, row.cost_usd, _arrival(call))
        )
        self.budgets._tasks.add(task)
        task.add_done_callback(self.budgets._tasks.discard)
        # A cancellation here (the client left) must not skip the call's log row, which is written next.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    async def _add(self, tenant: str, tier: str, usd: float, at: datetime) -> None:
        budgets = self.budgets
        try:
            spend = await budgets.store.add(tenant, usd, at)
            budgets.observe(tenant, spend)
            for budget, limit in budgets.limits(tenant, tier).items():
                period = BUDGET_PERIOD[budget]
                if spend[period] >= budgets.settings.alert_share * limit and await budgets.store.claim_alert(
                    tenant, budget, period_keys(at)[period]
                ):
                    budgets.alert(tenant, budget, limit, spend[period], at)
        except Exception as exc:
            log.warning("spend store unavailable, USD %.6f of %s not counted: %s", usd, tenant, exc)
            budgets.metrics.errors.labels("budget_unavailable").inc()
