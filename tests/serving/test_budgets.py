"""Cost accounting and budgets through the real gateway and CPU engine, with the ``openai`` client: every
answered request's cost is in its log row and in /metrics; a tenant that spends its daily budget is refused with
a 429 ``budget_exceeded`` naming the budget, the spend and the reset; the spend survives a gateway restart
(rebuilt from the inference log); the 80% alert goes out once, to the alerts file and the webhook, even across
the restart."""

import time
from datetime import UTC, datetime, timedelta

import openai
import pytest

from crawl2serve.serving.alerts import read_alerts
from crawl2serve.serving.gateway.auth import KeyStore
from crawl2serve.serving.gateway.logstore import read_rows
from crawl2serve.serving.gateway.tokens import TokenCounter
from tests.serving.helpers import metric, start_gateway
from tests.support import webhook_receiver

PROMPT = "The committee reviewed the budget and asked for a shorter report on the harbour."


@pytest.fixture
def webhook():
    with webhook_receiver() as hook:
        yield hook


def complete(client: openai.OpenAI, stream: bool = False):
    if stream:
        chunks = list(
            client.completions.create(
                model="crawl2serve", prompt=PROMPT, max_tokens=4, stream=True, stream_options={"include_usage": True}
            )
        )
        return [c.usage for c in chunks if c.usage][-1]
    return client.completions.create(model="crawl2serve", prompt=PROMPT, max_tokens=4).usage


def test_a_tenant_spends_its_daily_budget_keeps_it_across_a_restart_and_is_alerted_once(
    tmp_path, cpu_engine, tiny_model, webhook
):
    url, received = webhook
    # Price prompt tokens so that one request of PROMPT costs USD 1 (completions are free: their length varies);
    # the daily budget of 4.5 then alerts at the 4th request (4 >= 0.8 * 4.5), serves the 5th and refuses the 6th.
    prompt_tokens = TokenCounter().count(tiny_model, prompt=PROMPT)
    tenant = "thrifty"
    overrides = dict(
        prices={"default": {"input_per_1k_usd": 1000 / prompt_tokens, "output_per_1k_usd": 0}},
        budgets={
            "tenants": {tenant: {"daily_usd": 4.5, "monthly_usd": 100}},
            "alerts_file": str(tmp_path / "alerts" / "alerts.jsonl"),
            "alert_webhook": url,
        },
    )
    key, _ = KeyStore.load(tmp_path / "api_keys.json").add(tenant, "pro")  # the gateway's keys file
    gw = start_gateway(tmp_path, [("primary", cpu_engine.url)], tiny_model, **overrides)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=60)
        for i in range(4):
            usage = complete(client, stream=i % 2 == 1)
            assert usage.prompt_tokens == prompt_tokens
        assert metric(gw.url, "c2s_gateway_tenant_spend_usd", tenant=tenant, period="day") == pytest.approx(4)
        assert metric(gw.url, "c2s_gateway_cost_usd_total", tenant=tenant, model_version="1") == pytest.approx(4)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        gw.stop()
    assert [a["budget"] for a in received] == ["daily"], received

    rows = [r for r in read_rows(gw.settings.log_dir)[0] if r["tenant"] == tenant]
    assert len(rows) == 4 and all(r["cost_usd"] == pytest.approx(1) for r in rows)

    gw = start_gateway(tmp_path, [("primary", cpu_engine.url)], tiny_model, **overrides)  # same spool, alerts
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=60)
        assert metric(gw.url, "c2s_gateway_tenant_spend_usd", tenant=tenant, period="day") == pytest.approx(4)
        complete(client)  # 4 spent before the restart < 4.5: served, now 5
        assert metric(gw.url, "c2s_gateway_tenant_spend_usd", tenant=tenant, period="day") == pytest.approx(5)
        with pytest.raises(openai.RateLimitError) as refused:
            complete(client)
        error = refused.value.body
        assert refused.value.status_code == 429 and error["code"] == "budget_exceeded", error
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
        message = error["message"]
        assert "daily budget is USD 4.500000" in message and "spent USD 5.000000" in message, message
        assert f"resets at {tomorrow}" in message, message
        assert 0 < int(refused.value.response.headers["retry-after"]) <= 86400
        assert metric(gw.url, "c2s_gateway_budget_rejected_total", budget="daily") == 1
        time.sleep(0.5)
    finally:
        gw.stop()
    assert len(received) == 1, f"the alert went out again after the restart: {received}"
    (alert,) = [a for a in read_alerts(tmp_path / "alerts" / "alerts.jsonl") if a["kind"] == "budget"]
    assert alert["tenant"] == tenant and alert["budget"] == "daily" and alert["spend_usd"] == pytest.approx(4)
    assert alert["limit_usd"] == 4.5 and alert["resets_at"] == tomorrow
    last = [r for r in read_rows(gw.settings.log_dir)[0] if r["tenant"] == tenant][-1]
    assert last["status"] == 429 and last["error"] == "budget_exceeded" and last["cost_usd"] == 0
