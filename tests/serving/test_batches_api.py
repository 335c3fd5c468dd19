"""The OpenAI Batch API at the gateway (``/v1/files``, ``/v1/batches``), driven by the official ``openai`` client
against the gateway process in front of the real CPU engine."""

import io
import json
import os
import signal
import time

import httpx
import openai
import pytest

from crawl2serve.serving.gateway.logstore import read_rows
from tests.serving.helpers import metric, start_gateway

PROMPTS = ["The committee reviewed", "The library", "A list comprehension is", "The json module"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, cpu_engine, tiny_model):
    gw = start_gateway(
        tmp_path_factory.mktemp("batch-gw"),
        [("primary", cpu_engine.url)],
        tiny_model,
        batch={"concurrency": 2, "chunk_size": 2, "max_open_per_tenant": 1},
        tiers={"trickle": {"requests_per_minute": 120, "tokens_per_minute": 1_000_000, "burst_requests": 1}},
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)


def jsonl(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def completion_lines(prompts, max_tokens=6) -> list[dict]:
    return [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "crawl2serve", "prompt": p, "max_tokens": max_tokens, "temperature": 0},
        }
        for i, p in enumerate(prompts)
    ]


def wait_done(client, batch_id, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled"):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} still {batch.status}")


def test_a_batch_through_the_openai_client(client, gateway):
    lines = completion_lines(PROMPTS)
    lines.append({**lines[0], "custom_id": "too-long", "body": {**lines[0]["body"], "max_tokens": 100_000}})
    uploaded = client.files.create(file=("prompts.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(lines))
    assert client.files.content(uploaded.id).content == jsonl(lines)  # stored as uploaded
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
    assert batch.status == "in_progress" and batch.request_counts.total == 5
    done = wait_done(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (4, 1)
    out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in out] == [f"req-{i}" for i in range(4)]  # in input order
    for o, prompt in zip(out, PROMPTS, strict=True):  # the same answers as the same requests sent one by one
        direct = client.completions.create(model="crawl2serve", prompt=prompt, max_tokens=6, temperature=0)
        assert o["response"]["status_code"] == 200
        assert o["response"]["body"]["choices"][0]["text"] == direct.choices[0].text
        assert o["response"]["body"]["usage"]["completion_tokens"] == 6
    (failed,) = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert failed["custom_id"] == "too-long" and failed["response"]["status_code"] == 400
    assert failed["response"]["body"]["error"]["code"] == "max_tokens_too_large"
    time.sleep(0.3)  # the log writer commits every 50 ms
    logged = [r for r in read_rows(gateway.settings.log_dir)[0] if r["batch_id"] == batch.id]
    assert sorted(r["request_id"] for r in logged) == sorted(o["response"]["request_id"] for o in [*out, failed])
    assert all(r["tenant"] == "acme" for r in logged)
    assert {r["completion_tokens"] for r in logged if r["status"] == 200} == {6}
    assert metric(gateway.url, "c2s_gateway_batch_lines_total", outcome="ok") >= 4
    listed = client.batches.list(limit=10)
    assert batch.id in [b.id for b in listed.data]


def test_bad_lines_name_the_line_and_field(client):
    lines = completion_lines(PROMPTS[:2])
    cases = [
        (jsonl(lines) + b"{not json\n", "line 3: not valid JSON", None),
        (jsonl([lines[0], lines[0]]), "line 2: custom_id 'req-0' is also on line 1", "custom_id"),
        (
            jsonl([lines[0], {**lines[1], "body": {**lines[1]["body"], "temperature": 9}}]),
            "line 2: body:",
            "body.temperature",
        ),
        (jsonl([{**lines[0], "method": "GET"}]), "line 1: method must be 'POST'", "method"),
        (
            jsonl([{**lines[0], "body": {**lines[0]["body"], "stream": True}}]),
            "line 1: body: a batch line cannot",
            "body.stream",
        ),
    ]
    for data, message, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.files.create(file=("bad.jsonl", io.BytesIO(data)), purpose="batch")
        assert err.value.body["message"].startswith(message), err.value.body
        assert err.value.body["param"] == param and err.value.body["code"] == "invalid_batch_line"
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("x.jsonl", io.BytesIO(jsonl(lines))), purpose="fine-tune")
    assert err.value.body["param"] == "purpose"
    good = client.files.create(file=("ok.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    with pytest.raises(openai.BadRequestError) as err:  # every line's url must be the batch's endpoint
        client.batches.create(input_file_id=good.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert err.value.body["message"].startswith("line 1: url must be '/v1/chat/completions'")


def test_unknown_ids_and_other_tenants_are_404(client, gateway):
    mine = client.files.create(file=("mine.jsonl", io.BytesIO(jsonl(completion_lines(PROMPTS[:1])))), purpose="batch")
    other_key, _ = gateway.keys.add("globex", "pro")
    time.sleep(1.1)  # the gateway re-reads the key file at most once a second
    other = openai.OpenAI(base_url=gateway.url + "/v1", api_key=other_key, max_retries=0)
    for attempt in (
        lambda: other.files.retrieve(mine.id),
        lambda: other.files.content(mine.id),
        lambda: other.batches.create(input_file_id=mine.id, endpoint="/v1/completions", completion_window="24h"),
        lambda: client.files.retrieve("file-" + "0" * 24),
        lambda: client.batches.retrieve("batch_" + "0" * 24),
        lambda: client.batches.cancel("batch_nope"),
    ):
        with pytest.raises(openai.NotFoundError) as err:
            attempt()
        assert err.value.body["code"] == "not_found" and "mine.jsonl" not in str(err.value.body)
    assert other.batches.list().data == []
    assert httpx.get(gateway.url + "/v1/batches").status_code == 401


def test_cancel_and_the_open_batch_limit(client):
    prompts = [f"{p} {i}" for i in range(6) for p in PROMPTS]
    uploaded = client.files.create(
        file=("many.jsonl", io.BytesIO(jsonl(completion_lines(prompts, max_tokens=16)))), purpose="batch"
    )
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
    with pytest.raises(openai.RateLimitError) as err:  # max_open_per_tenant: 1
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
    assert err.value.body["code"] == "too_many_open_batches"
    assert client.batches.cancel(batch.id).status == "cancelling"
    done = wait_done(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    counts = done.request_counts
    assert counts.completed + counts.failed < counts.total == len(prompts)
    if done.output_file_id:
        answered = client.files.content(done.output_file_id).text.splitlines()
        assert len(answered) == counts.completed


def test_batch_lines_wait_for_the_tenants_rate_limit(gateway):
    """A tenant allowed one request at a time (2 a second): its batch lines are refused (429), wait the
    Retry-After, and are all answered; the refusals are counted."""
    key, _ = gateway.keys.add("slowco", "trickle")
    time.sleep(1.1)  # the gateway re-reads the key file at most once a second
    slow = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    before = metric(gateway.url, "c2s_gateway_batch_lines_total", outcome="rate_limited")
    f = slow.files.create(
        file=("s.jsonl", io.BytesIO(jsonl(completion_lines(PROMPTS[:3], max_tokens=2)))), purpose="batch"
    )
    done = wait_done(
        slow, slow.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h").id
    )
    assert (done.status, done.request_counts.completed) == ("completed", 3)
    assert metric(gateway.url, "c2s_gateway_batch_lines_total", outcome="rate_limited") > before
    time.sleep(0.3)
    rows = [r for r in read_rows(gateway.settings.log_dir)[0] if r["batch_id"] == done.id]
    assert {r["status"] for r in rows} == {200, 429}  # the refused attempts are logged like any request's


def test_a_killed_gateway_resumes_its_batch(tmp_path, cpu_engine, tiny_model):
    """SIGKILL the gateway mid-batch; the next gateway on the same folder finishes it: every line once."""
    gw = start_gateway(tmp_path, [("primary", cpu_engine.url)], tiny_model, batch={"concurrency": 1, "chunk_size": 2})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    prompts = [f"{p} {i}" for i in range(2) for p in PROMPTS]
    f = client.files.create(
        file=("r.jsonl", io.BytesIO(jsonl(completion_lines(prompts, max_tokens=4)))), purpose="batch"
    )
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")
    deadline = time.monotonic() + 60
    while (seen := client.batches.retrieve(batch.id)).request_counts.completed < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(gw.pid, signal.SIGKILL)
    assert seen.status == "in_progress" and seen.request_counts.completed < len(prompts)  # killed mid-batch
    with pytest.raises(openai.APIConnectionError):
        client.batches.retrieve(batch.id)
    again = start_gateway(
        tmp_path, [("primary", cpu_engine.url)], tiny_model, batch={"concurrency": 1, "chunk_size": 2}
    )
    try:
        client = openai.OpenAI(base_url=again.url + "/v1", api_key=again.key, max_retries=0)  # same tenant, new key
        done = wait_done(client, batch.id)
        assert (done.status, done.request_counts.completed) == ("completed", len(prompts))
        out = [json.loads(x)["custom_id"] for x in client.files.content(done.output_file_id).text.splitlines()]
        assert out == [f"req-{i}" for i in range(len(prompts))]  # each line once, none missing
    finally:
        again.stop()
