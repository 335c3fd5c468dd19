"""A progressive canary end to end: the real gateway in front of the real CPU engine, the MLflow registry (SQLite),
the inference log the gateway writes, and the ``canary_rollout`` sensor judging each stage from it.

The serving asset starts the rollout (v1 first, then v2 as the canary at the first stage); a good canary goes
25% → 50% → 100%; a bad one, a version whose merged folder is corrupt (the
engine answers 500 for it while its health probe passes, so the gateway answers 502), is rolled back: routing
back to the stable version and the registry's ``champion`` alias back to it."""

import json
import time

import dagster as dg
import openai
import pytest

from crawl2serve.assets.release.registry import CHAMPION, MODEL_NAME, PREVIOUS_TAG, register_candidate
from crawl2serve.assets.serving.assets import sglang_deployment
from crawl2serve.pipelines.sensors import canary_rollout, new_champion
from crawl2serve.resources.feast_store import FeastStore
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.storage import DataRoot
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.serving.canary import Policy
from crawl2serve.serving.gateway.auth import KeyStore
from crawl2serve.serving.gateway.routing import read_routing
from tests.serving.conftest import make_adapter
from tests.serving.helpers import free_port
from tests.support import records

POLICY = Policy(stages=(0.25, 0.5, 1.0), min_requests=4, min_stage_s=0).to_json()  # as the asset's config takes it


def _serve(resources, **config) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [sglang_deployment], resources=resources, run_config={"ops": {"sglang_deployment": {"config": config}}}
    )
    assert result.success
    return result


@pytest.fixture(scope="module")
def canary(tmp_path_factory, tiny_base):
    """The serving asset materialized for a first champion (v1: all traffic) and a second (v2: the canary of a
    progressive rollout), on a CPU engine of its own; v3 is registered, its merged folder corrupt."""
    root = tmp_path_factory.mktemp("canary")
    data_root = DataRoot(url=str(root))
    engine = ServingEngine(
        data_root=data_root,
        feast_store=FeastStore(data_root=data_root),
        backend="cpu",
        engine_port=free_port(),
        gateway_port=free_port(),
        feast_tiers=False,
        startup_timeout_s=120,
    )
    tracking = MlflowTracking(data_root=data_root)
    resources = {"mlflow_tracking": tracking, "serving_engine": engine}
    mlflow = tracking.client()
    deployment = engine.deployment(log=lambda m: None)
    try:
        # v1 registered as the release stage registers a champion (MLflow keeps the adapter folder's name); v2 the
        # same model once more (logging a pyfunc model costs ~20 s), promoted as register_candidate promotes
        adapter = make_adapter(tiny_base, root / "v1" / "adapter", seed=1)
        register_candidate(
            mlflow, adapter_dir=adapter, base_model=tiny_base, training_run_id=None, tags={}, metrics={}, promote=True
        )
        results = [_serve(resources, rollout=POLICY)]  # nothing to canary against: all traffic
        client = mlflow.MlflowClient()
        v1 = client.get_model_version(MODEL_NAME, "1")
        client.create_model_version(MODEL_NAME, source=v1.source, tags={**v1.tags, PREVIOUS_TAG: "1"})
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, "2")
        results.append(_serve(resources, rollout=POLICY))
        client.create_model_version(MODEL_NAME, source=str(root), tags={PREVIOUS_TAG: "2"})  # v3
        broken = root / "v3-merged"  # a merged folder whose config does not load: the engine answers 500 for it
        broken.mkdir()
        (broken / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": -5}))
        handle = deployment.handles()["primary"]
        handle.models["3"] = str(broken)
        key, _ = KeyStore.load(engine.gateway_settings().keys_file).add("acme", "enterprise")
        time.sleep(1.1)  # the gateway re-reads its keys file within a second
        api = openai.OpenAI(base_url=engine.public_gateway_url() + "/v1", api_key=key, max_retries=0)
        yield deployment, handle, client, api, resources, results
    finally:
        deployment.stop_all()


def _traffic(api, n: int) -> list[int]:
    statuses = []
    for _ in range(n):
        try:
            api.completions.create(model="crawl2serve", prompt="The module", max_tokens=1)
            statuses.append(200)
        except openai.APIStatusError as exc:
            statuses.append(exc.status_code)
    time.sleep(0.2)  # rows are committed before the answer; let the last file write settle
    return statuses


def _decisions(api, resources, until: set[str], rounds: int = 12) -> tuple[list[dict], list[dg.RunRequest]]:
    """Traffic, then a sensor evaluation, until a verdict in ``until``: every decision's observation, and the runs
    the last one requested."""
    seen = []
    for _ in range(rounds):
        _traffic(api, 8)
        with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources=resources) as ctx:
            result = canary_rollout(ctx)
        assert isinstance(result, dg.SensorResult), result
        (event,) = result.asset_events
        assert isinstance(event, dg.AssetObservation) and event.asset_key == dg.AssetKey("sglang_deployment")
        verdict = event.metadata["verdict"].value
        assert bool(result.run_requests) == (verdict == "promote"), "only a promotion requests a run"
        seen.append(event.metadata)
        if verdict in until:
            return seen, list(result.run_requests or [])
    raise AssertionError(f"no {until} after {rounds} rounds: {[m['reason'].value for m in seen]}")


def test_a_new_champion_enters_as_the_canary_at_the_first_stage(canary):
    deployment, *_, (first, second) = canary
    meta = first.asset_materializations_for_node("sglang_deployment")[0].metadata
    assert meta["routing"].value == {"stable": "1", "canary": None, "canary_share": 0.0, "previous": None}
    meta = second.asset_materializations_for_node("sglang_deployment")[0].metadata
    assert meta["routing"].value == {"stable": "1", "canary": "2", "canary_share": 0.25, "previous": None}
    assert meta["rollout"].value["policy"] == POLICY
    assert {r["version"]: r["traffic_share"] for r in records(meta["versions"])} == {"1": 0.75, "2": 0.25, "base": 0}
    assert read_routing(deployment.routing_file)["rollout"]["policy"] == POLICY


def test_a_good_canary_advances_stage_by_stage_to_all_traffic(canary):
    deployment, handle, client, api, resources, _ = canary
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources=resources) as ctx:
        assert isinstance(new_champion(ctx), dg.SkipReason), "the champion is the canary: nothing to serve"

    advanced, _ = _decisions(api, resources, {"advance"})
    assert read_routing(deployment.routing_file)["canary_share"] == 0.5
    promoted, runs = _decisions(api, resources, {"promote"})
    verdicts = [m["verdict"].value for m in advanced + promoted if m["verdict"].value != "wait"]
    assert verdicts == ["advance", "promote"]
    last = promoted[-1]
    assert (last["share"].value, last["next_share"].value) == (0.5, 1.0) and last["canary_error_rate"].value == 0
    assert (last["stage"].value, last["stages"].value) == (2, "25%, 50%, 100%")
    versions = {r["role"]: r for r in records(last["versions"])}
    assert versions["canary"]["requests"] >= 4 and versions["stable"]["version"] == "1"
    table = read_routing(deployment.routing_file)
    assert (table["stable"], table["canary"], table["previous"], table["rollout"]) == ("2", None, "1", None)
    assert table["last_rollout"]["verdict"] == "promote"
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "2"
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources=resources) as ctx:
        assert isinstance(canary_rollout(ctx), dg.SkipReason), "no rollout in progress any more"
    # the promotion requests a serve_champion run (the LoRA-free SGLang engine takes the weights); here a no-op
    (run,) = runs
    assert run.tags == {"crawl2serve/trigger": "canary_promoted", "crawl2serve/champion": "2"}
    meta = _serve(resources).asset_materializations_for_node("sglang_deployment")[0].metadata
    assert meta["routing"].value == {"stable": "2", "canary": None, "canary_share": 0.0, "previous": "1"}


def test_a_failing_canary_is_rolled_back_in_routing_and_in_the_registry(canary):
    deployment, handle, client, api, resources, _ = canary
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, "3")
    deployment.route("3", [handle], POLICY["stages"][0], rollout=POLICY)

    seen, runs = _decisions(api, resources, {"rollback", "advance", "promote"})
    (last,) = [m for m in seen if m["verdict"].value != "wait"]
    assert runs == [], "a rollback requests no run: routing and the alias are back already"
    assert last["verdict"].value == "rollback", last["reason"].value
    assert "error_rate" in last["reason"].value and last["canary_error_rate"].value > 0
    checks = {r["metric"]: r for r in records(last["checks"])}
    assert checks["error_rate"]["failed"] and not checks["guardrail_block_rate"]["failed"]
    assert last["alias"].value == "champion v3 -> v2"
    table = read_routing(deployment.routing_file)
    assert (table["stable"], table["canary"], table["canary_share"]) == ("2", None, 0.0)
    assert table["last_rollout"]["version"] == "3" and table["last_rollout"]["verdict"] == "rollback"
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert str(champion.version) == "2" and client.get_model_version(MODEL_NAME, "3").tags["rolled_back"] == "true"
    time.sleep(0.6)  # the gateway re-reads routing.json within half a second
    assert set(_traffic(api, 10)) == {200}, "all traffic is back on the stable version"
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources=resources) as ctx:
        assert isinstance(new_champion(ctx), dg.SkipReason), "the alias is back on what is served"
