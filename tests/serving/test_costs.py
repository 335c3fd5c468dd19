"""Pricing (serving.gateway.costs) and the spend stores (serving.gateway.budgets) without a gateway: the
GPU-hour formula against a hand computation, the price lookup order, settings that mix two kinds of price,
period edges, the rebuild from a spool, and the Redis store against the local Redis."""

import asyncio
import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from crawl2serve.serving.gateway.budgets import (
    BudgetLimits,
    Budgets,
    BudgetSettings,
    MemorySpendStore,
    RedisSpendStore,
    period_keys,
    rebuild,
    resets_at,
)
from crawl2serve.serving.gateway.costs import GpuHourPrice, PriceBook, PriceSettings, TokenPrice, cost_usd
from crawl2serve.serving.gateway.logrow import LogRow
from crawl2serve.serving.gateway.metrics import GatewayMetrics

REDIS_URL = "redis://127.0.0.1:6379/4"


def test_a_list_price_charges_per_1k_tokens():
    assert cost_usd(TokenPrice(0.5, 1.5), 2000, 400) == pytest.approx(2 * 0.5 + 0.4 * 1.5)
    assert cost_usd(TokenPrice(0.5, 1.5), 0, 0) == 0


def test_a_gpu_hour_price_is_the_engine_seconds_the_tokens_take():
    # an H200 at USD 3.60/h is USD 0.001 a second; at 2,000 completion and 20,000 prompt tokens/s,
    # 1,000 completion tokens take 0.5 s (USD 0.0005) and 1,000 prompt tokens 0.05 s (USD 0.00005)
    price = GpuHourPrice(gpu_hour_usd=3.60, completion_tokens_per_s=2000, prompt_tokens_per_s=20000)
    assert price.per_1k() == pytest.approx((0.00005, 0.0005))
    assert cost_usd(price, 4000, 1000) == pytest.approx(4 * 0.00005 + 0.0005)
    two = GpuHourPrice(gpu_hour_usd=3.60, completion_tokens_per_s=2000, prompt_tokens_per_s=20000, gpus=2)
    assert two.per_1k() == pytest.approx((0.0001, 0.001))
    # no measured prefill throughput: prompt tokens cost what completion tokens cost
    assert GpuHourPrice(3.60, 2000).per_1k() == pytest.approx((0.0005, 0.0005))


def test_prices_are_looked_up_by_version_then_engine_then_default():
    book = PriceBook(
        {
            "3": PriceSettings(input_per_1k_usd=1, output_per_1k_usd=2),
            "primary": PriceSettings(gpu_hour_usd=3.6, completion_tokens_per_s=1000),
            "default": PriceSettings(input_per_1k_usd=0.1, output_per_1k_usd=0.1),
        }
    )
    assert book.cost("3", "primary", 1000, 1000) == pytest.approx(3)
    assert book.cost("4", "primary", 1000, 1000) == pytest.approx(2 * 0.001)
    assert book.cost("4", "fallback", 1000, 1000) == pytest.approx(0.2)
    assert PriceBook({}).cost("4", "cpu", 1000, 1000) == 0


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"input_per_1k_usd": 1}, "needs both"),
        ({"input_per_1k_usd": 1, "output_per_1k_usd": 1, "gpu_hour_usd": 2}, "not both"),
        ({"gpu_hour_usd": 2}, "completion_tokens_per_s"),
        ({"gpu_hour_usd": 2, "completion_tokens_per_s": 0}, "greater than 0"),
        ({"input_per_1k_usd": -1, "output_per_1k_usd": 1}, "greater than or equal to 0"),
    ],
)
def test_a_price_setting_that_is_neither_kind_is_refused_with_the_reason(fields, problem):
    with pytest.raises(ValidationError, match=problem):
        PriceSettings(**fields)


def test_periods_and_their_resets_at_the_edges():
    at = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert period_keys(at) == {"hour": "2026-12-31T23", "day": "2026-12-31", "month": "2026-12"}
    assert resets_at("day", at) == datetime(2027, 1, 1, tzinfo=UTC)
    assert resets_at("month", at) == datetime(2027, 1, 1, tzinfo=UTC)
    assert resets_at("month", datetime(2026, 11, 30, tzinfo=UTC)) == datetime(2026, 12, 1, tzinfo=UTC)


def test_a_tenants_own_budget_wins_over_its_tiers():
    budgets = Budgets(
        BudgetSettings(tiers={"free": BudgetLimits(daily_usd=1)}, tenants={"acme": BudgetLimits(monthly_usd=30)}),
        MemorySpendStore(),
        GatewayMetrics(),
    )
    assert budgets.limits("acme", "free") == {"monthly": 30}
    assert budgets.limits("other", "free") == {"daily": 1}
    assert budgets.limits("other", "pro") == {}


def test_the_memory_store_keeps_the_current_periods_and_rolls_the_hour():
    store = MemorySpendStore()
    t1 = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    t2 = datetime(2026, 12, 1, 11, 5, tzinfo=UTC)
    asyncio.run(store.add("acme", 0.25, t1))
    spend = asyncio.run(store.add("acme", 0.5, t2))
    assert spend == {"hour": 0.5, "day": 0.75, "month": 0.75}
    assert asyncio.run(store.spend("acme", datetime(2026, 12, 2, 0, 1, tzinfo=UTC))) == {
        "hour": 0,
        "day": 0,
        "month": 0.75,
    }


def test_rebuild_sums_this_months_primary_costs_and_the_alerts_sent(tmp_path):
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    rows = [
        ("2026-12-01T11:10:00+00:00", "acme", "primary", 0.5),
        ("2026-12-01T12:00:01+00:00", "acme", "primary", 0.25),
        ("2026-12-01T12:00:01+00:00", "acme", "shadow", 9.0),  # the challenger's answer: ours, not acme's
        ("2026-11-30T23:00:00+00:00", "acme", "primary", 7.0),  # last month
    ]
    for ts, tenant, role, usd in rows:
        folder = tmp_path / "spool" / ts[:13]
        folder.mkdir(parents=True, exist_ok=True)
        row = LogRow(request_id="req-1", ts=ts, tenant=tenant, role=role, cost_usd=usd)
        with open(folder / "host-1-1.jsonl", "ab") as f:
            f.write(row.json_line())
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text(
        json.dumps({"kind": "budget", "tenant": "acme", "budget": "daily", "period": "2026-12-01"}) + "\n"
    )
    store = MemorySpendStore()
    assert rebuild(store, str(tmp_path / "spool"), str(alerts), now=now) == 2
    assert asyncio.run(store.spend("acme", now)) == {"hour": 0.25, "day": 0.75, "month": 0.75}
    assert not asyncio.run(store.claim_alert("acme", "daily", "2026-12-01"))
    assert asyncio.run(store.claim_alert("acme", "monthly", "2026-12"))


def test_the_redis_store_adds_per_period_and_claims_an_alert_once():
    pytest.importorskip("redis")
    import redis

    prefix = f"c2s-test-cost-{datetime.now().timestamp()}:"
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    at = datetime(2026, 12, 1, 10, tzinfo=UTC)

    async def go():
        store = RedisSpendStore(REDIS_URL, prefix, timeout_s=2)
        try:
            await store.add("acme", 0.25, at)
            after = await store.add("acme", 0.5, at)
            again = RedisSpendStore(REDIS_URL, prefix, timeout_s=2)  # another replica, or a restart
            seen = await again.spend("acme", at)
            claims = [
                await store.claim_alert("acme", "daily", "2026-12-01"),
                await again.claim_alert("acme", "daily", "2026-12-01"),
            ]
            await again.aclose()
            return after, seen, claims
        finally:
            await store.aclose()

    try:
        after, seen, claims = asyncio.run(go())
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(prefix + "*"))
        if keys:
            client.delete(*keys)
    assert after == seen == {"hour": 0.75, "day": 0.75, "month": 0.75}
    assert claims == [True, False]
