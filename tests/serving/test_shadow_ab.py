"""Shadow traffic, A/B tests and feedback end to end: the gateway as its own process in front of a real CPU
engine serving two versions (the tiny base as "1", the base with a LoRA adapter merged as "2"), then the
``inference_log``, ``shadow_report`` and ``ab_report`` assets materialized in process on what it logged."""

import concurrent.futures
import time
from datetime import UTC, datetime

import dagster as dg
import httpx
import openai
import pytest

from crawl2serve.assets.monitoring.assets import inference_log, spool_hour
from crawl2serve.assets.monitoring.comparisons import SHADOW_CHECK, ab_report, shadow_evidence, shadow_report
from crawl2serve.assets.monitoring.logs import read_spool
from crawl2serve.assets.monitoring.shadow_compare import pairs
from crawl2serve.assets.partitions import HOUR_PARTITION_FORMAT
from crawl2serve.resources.feast_store import FeastStore
from crawl2serve.resources.io_manager import ParquetIOManager
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.storage import DataRoot
from crawl2serve.serving.bundle import build_merged
from crawl2serve.serving.gateway.logstore import read_rows
from tests.serving.conftest import make_adapter
from tests.serving.helpers import metric, start_gateway

PROMPTS = ["The committee reviewed", "The library", "A river runs", "Every morning the", "The old house", "In the end"]


@pytest.fixture(scope="module")
def challenger(tiny_base, tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("challenger")
    return str(build_merged(tiny_base, make_adapter(tiny_base, tmp / "adapter", seed=3), str(tmp / "merged")))


def _serving(root) -> ServingEngine:
    data_root = DataRoot(url=str(root))
    return ServingEngine(data_root=data_root, feast_store=FeastStore(data_root=data_root), feast_tiers=False)


def _gateway(root, cpu_engine, tiny_model, challenger, **overrides):
    """A gateway logging where ``inference_log`` reads (the ServingEngine of data root ``root``)."""
    return start_gateway(
        root / "gw",
        [("primary", cpu_engine.url)],
        tiny_model,
        versions={"2": challenger},
        log_dir=_serving(root).gateway_settings().log_dir,
        **overrides,
    )


@pytest.fixture(scope="module")
def shadow_root(tmp_path_factory):
    return tmp_path_factory.mktemp("shadow")


@pytest.fixture(scope="module")
def shadow_gateway(shadow_root, cpu_engine, tiny_model, challenger):
    gw = _gateway(shadow_root, cpu_engine, tiny_model, challenger, shadow={"version": "2", "share": 1.0})
    yield gw
    gw.stop()


def _wait_rows(log_dir: str, want, timeout_s: float = 90.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = read_rows(log_dir)[0]
        if want(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _materialize(root, assets, partition: str, instance, run_config=None) -> dg.ExecuteInProcessResult:
    data_root = DataRoot(url=str(root))
    return dg.materialize(
        assets,
        partition_key=partition,
        resources={"io_manager": ParquetIOManager(data_root=data_root), "serving_engine": _serving(root)},
        instance=instance,
        run_config=run_config,
    )


def _busiest_hour(rows: list[dict]) -> str:
    hours = [
        datetime.fromisoformat(r["ts"]).astimezone(UTC).replace(minute=0).strftime(HOUR_PARTITION_FORMAT) for r in rows
    ]
    return max(set(hours), key=hours.count)


def test_shadow_mirrors_every_answer_unchanged_and_the_report_compares_them(shadow_gateway, shadow_root):
    gw = shadow_gateway
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    answers = [client.completions.create(model="crawl2serve", prompt=p, max_tokens=8, temperature=0) for p in PROMPTS]
    chat = client.chat.completions.create(
        model="crawl2serve", max_tokens=6, temperature=0, messages=[{"role": "user", "content": "The library"}]
    )
    chunks = list(
        client.completions.create(model="crawl2serve", prompt="A river runs", max_tokens=8, temperature=0, stream=True)
    )
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    ids = [a.id for a in answers] + [chat.id, chunks[0].id]
    rows = _wait_rows(gw.settings.log_dir, lambda rs: sum(r["role"] == "shadow" for r in rs) >= len(ids))
    by_role = {(r["request_id"], r["role"]): r for r in rows}
    # the client's answers are the champion's: what version 1 answers with no shadow involved
    pinned = [client.completions.create(model="crawl2serve@2", prompt=p, max_tokens=8, temperature=0) for p in PROMPTS]
    challenger_texts = [p.choices[0].text for p in pinned]
    assert streamed == answers[2].choices[0].text
    for answer, text in zip(answers, challenger_texts):
        primary, shadow = by_role[(answer.id, "primary")], by_role[(answer.id, "shadow")]
        assert primary["output"] == answer.choices[0].text and primary["model_version"] == "1"
        assert (shadow["model_version"], shadow["route"], shadow["status"], shadow["stream"]) == (
            "2",
            "shadow",
            200,
            False,
        )
        assert shadow["output"] == text and shadow["prompt"] == primary["prompt"] and shadow["tenant"] == "acme"
    assert [t for t in challenger_texts] != [a.choices[0].text for a in answers]  # the adapter changed the model
    assert by_role[(chat.id, "shadow")]["endpoint"] == "chat.completions"
    assert by_role[(chunks[0].id, "shadow")]["output"] == challenger_texts[2]
    assert metric(gw.url, "c2s_gateway_shadow_requests_total", outcome="ok") == len(ids)
    assert metric(gw.url, "c2s_gateway_shadow_requests_total", outcome="shed") == 0
    # requests pinned to the challenger are not mirrored to it
    assert not any(by_role.get((p.id, "shadow")) for p in pinned)

    partition = _busiest_hour([r for r in rows if r["request_id"] in ids])
    expected = pairs(read_spool(gw.settings.log_dir, [spool_hour(partition)])[0])
    instance = dg.DagsterInstance.ephemeral()
    ok = _materialize(
        shadow_root,
        [inference_log, shadow_report],
        partition,
        instance,
        {"ops": {"shadow_report": {"config": {"min_pairs": 3, "max_latency_ratio": 1000.0}}}},
    )
    meta = ok.asset_materializations_for_node("shadow_report")[0].metadata
    assert meta["verdict"].value == "pass" and meta["challenger"].value == "2" and meta["champion"].value == "1"
    assert meta["pairs"].value == expected.height >= 3
    assert meta["shadow_error_rate"].value == 0 and 0 <= meta["mean_token_overlap"].value < 1
    assert meta["exact_agreement"].value < 1 and meta["challenger_perplexity_on_champion"].value > 1
    assert ok.get_asset_check_evaluations()[0].passed
    assert shadow_evidence(instance, "2")["verdict"] == "pass"
    strict = _materialize(
        shadow_root,
        [inference_log, shadow_report],
        partition,
        instance,
        {"ops": {"shadow_report": {"config": {"min_pairs": 3, "max_latency_ratio": 1000.0, "max_perplexity": 1.0}}}},
    )
    check = strict.get_asset_check_evaluations()[0]
    assert check.check_name == SHADOW_CHECK and not check.passed
    assert "perplexity on champion outputs" in check.metadata["reasons"].value[0]
    evidence = shadow_evidence(instance, "2")
    assert evidence["verdict"] == "fail" and evidence["partition"] == partition
    assert shadow_evidence(instance, "9") is None


@pytest.fixture(scope="module")
def ab_root(tmp_path_factory):
    return tmp_path_factory.mktemp("ab")


@pytest.fixture(scope="module")
def ab_gateway(ab_root, cpu_engine, tiny_model, challenger):
    gw = _gateway(
        ab_root,
        cpu_engine,
        tiny_model,
        challenger,
        experiment={
            "name": "adapter-v2",
            "unit": "request",
            "arms": {"a": {"version": "1", "weight": 1}, "b": {"version": "2", "weight": 1}},
        },
        shadow={"version": "2", "share": 1.0, "queue_size": 1, "concurrency": 1},
    )
    yield gw
    gw.stop()


def test_ab_arms_feedback_and_shedding_under_load(ab_gateway, ab_root):
    gw = ab_gateway
    headers = {"Authorization": f"Bearer {gw.key}"}

    def ask(i: int) -> dict:
        body = {"model": "crawl2serve", "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 4, "temperature": 0}
        r = httpx.post(gw.url + "/v1/completions", json=body, headers=headers, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(24)))
    ids = [a["id"] for a in answers]
    rows = {r["request_id"]: r for r in read_rows(gw.settings.log_dir)[0] if r["role"] == "primary"}
    arms = {i: rows[i]["arm"] for i in ids}
    assert set(arms.values()) == {"a", "b"}
    for i in ids:
        assert rows[i]["experiment"] == "adapter-v2"
        assert rows[i]["model_version"] == {"a": "1", "b": "2"}[arms[i]] and rows[i]["route"] == "experiment"
    # the same requests, pinned, bypass the experiment
    pinned = httpx.post(
        gw.url + "/v1/completions", json={"model": "crawl2serve@1", "prompt": "x", "max_tokens": 2}, headers=headers
    ).json()["id"]
    # arm a (version 1) is mirrored to 2 through a queue of 1: every request is counted once, queued or shed (how
    # many are shed depends on the engine's speed; test_experiments.py sheds a full queue deterministically)
    queued = metric(gw.url, "c2s_gateway_shadow_requests_total", outcome="queued")
    shed = metric(gw.url, "c2s_gateway_shadow_requests_total", outcome="shed")
    in_a = sum(a == "a" for a in arms.values())
    assert queued >= 1 and queued + shed == in_a + 1  # + the pinned request to version 1

    def feedback(body, key=gw.key):
        return httpx.post(gw.url + "/v1/feedback", json=body, headers={"Authorization": f"Bearer {key}"})

    ratings = {i: (1 if arms[i] == "b" else -1) for i in ids[:16]}
    for i, rating in ratings.items():
        assert feedback({"request_id": i, "rating": rating}).json() == {
            "object": "feedback",
            "request_id": i,
            "rating": rating,
        }
    bad = feedback({"request_id": ids[0], "rating": 5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rating"
    assert feedback({"request_id": "nope", "rating": 1}).json()["error"]["param"] == "request_id"
    assert (
        feedback({"request_id": ids[0], "rating": 1, "extra": 1}).json()["error"]["message"] == "unknown field 'extra'"
    )
    assert feedback({"request_id": ids[0], "rating": 1}, key="sk-wrong").status_code == 401
    # committed before the answer: on disk now
    logged = [r for r in read_rows(gw.settings.log_dir)[0] if r["role"] == "feedback"]
    assert {r["request_id"]: r["rating"] for r in logged} == ratings and all(r["tenant"] == "acme" for r in logged)
    assert metric(gw.url, "c2s_gateway_feedback_total", rating="1") == sum(r == 1 for r in ratings.values())

    partition = _busiest_hour([rows[i] for i in ids])
    instance = dg.DagsterInstance.ephemeral()
    small = _materialize(ab_root, [inference_log, ab_report], partition, instance)
    meta = small.asset_materializations_for_node("ab_report")[0].metadata
    assert meta["verdict"].value == "too small" and meta["experiment"].value == "adapter-v2"
    arm_table = {r.data["arm"]: r.data for r in meta["arms"].value.records}
    assert set(arm_table) == {"a", "b"} and arm_table["a"]["versions"] == "1" and arm_table["b"]["versions"] == "2"
    assert sum(a["requests"] for a in arm_table.values()) == meta["requests"].value
    assert arm_table["b"]["good_rate"] == 1.0 and arm_table["a"]["good_rate"] == 0.0
    tests = meta["tests"].value.records
    assert all(t.data["verdict"].startswith("too small") for t in tests) and len(tests) == 3
    loose = _materialize(
        ab_root, [inference_log, ab_report], partition, instance, {"ops": {"ab_report": {"config": {"min_samples": 3}}}}
    )
    tests = {
        t.data["metric"]: t.data
        for t in loose.asset_materializations_for_node("ab_report")[0].metadata["tests"].value.records
    }
    assert tests["good_rating_rate"]["verdict"] == "significant" and tests["good_rating_rate"]["p_value"] < 0.05
    assert tests["success_rate"]["verdict"] == "not significant" and tests["success_rate"]["p_value"] == 1.0
    assert 0 <= tests["latency_ms"]["p_value"] <= 1 and tests["latency_ms"]["test"] == "Mann-Whitney U"
    pinned_row = next(r for r in read_rows(gw.settings.log_dir)[0] if r["request_id"] == pinned)
    assert (pinned_row["arm"], pinned_row["experiment"], pinned_row["route"]) == ("", "", "pinned")
