"""Deterministic assignment to A/B arms (serving/gateway/experiments.py) and the experiment settings."""

import pytest
from pydantic import ValidationError

from crawl2serve.serving.gateway.experiments import Arm, Experiment, unit_fraction
from crawl2serve.serving.gateway.settings import ExperimentSettings, parse_arms


def test_assignment_is_deterministic_and_follows_the_weights():
    exp = Experiment("e1", "tenant", [Arm("control", "3", 3), Arm("treat", "4", 1)])
    again = Experiment("e1", "tenant", [Arm("control", "3", 3), Arm("treat", "4", 1)])
    units = [f"tenant-{i}" for i in range(20_000)]
    arms = [exp.assign(u).name for u in units]
    assert arms == [again.assign(u).name for u in units]  # the same in every process, no state
    assert abs(arms.count("control") / len(units) - 0.75) < 0.01
    # another experiment's assignment is independent of this one's
    other = Experiment("e2", "tenant", [Arm("control", "3", 3), Arm("treat", "4", 1)])
    both = sum(a == "treat" and other.assign(u).name == "treat" for u, a in zip(units, arms)) / len(units)
    assert abs(both - 0.25 * 0.25) < 0.01
    assert 0 <= unit_fraction("s", "u") < 1 and unit_fraction("s", "u") == unit_fraction("s", "u")


def test_bad_experiments_are_rejected_naming_the_problem():
    with pytest.raises(ValueError, match="at least 2 arms"):
        Experiment("e", "tenant", [Arm("a", "1", 1)])
    with pytest.raises(ValueError, match="unit must be"):
        Experiment("e", "key", [Arm("a", "1", 1), Arm("b", "2", 1)])
    with pytest.raises(ValueError, match="arm 'b' has weight <= 0"):
        Experiment("e", "tenant", [Arm("a", "1", 1), Arm("b", "2", 0)])
    with pytest.raises(ValidationError, match="arms"):
        ExperimentSettings(name="e", arms={"a": {"version": "1", "weight": 1}})
    with pytest.raises(ValidationError, match="weight"):
        ExperimentSettings(name="e", arms={"a": {"version": "1", "weight": 0}, "b": {"version": "2", "weight": 1}})


def test_parse_arms_from_the_resource_config():
    arms = parse_arms(["control=3:2", "treat=4"])
    assert list(arms) == ["control", "treat"] and (arms["control"].version, arms["control"].weight) == ("3", 2.0)
    assert arms["treat"].weight == 1.0
    exp = Experiment.from_settings(ExperimentSettings(name="x", arms=arms))
    assert [a.name for a in exp.arms] == ["control", "treat"]
    with pytest.raises(ValueError, match="'control': expected 'arm=version"):
        parse_arms(["control"])
    with pytest.raises(ValueError, match="'b=4:heavy'"):
        parse_arms(["b=4:heavy"])


def test_a_full_shadow_queue_sheds_and_counts_without_blocking():
    """The mirror queue is bounded: with nobody draining it, the first request waits and the rest are shed."""
    import asyncio

    from crawl2serve.serving.gateway.call import Call
    from crawl2serve.serving.gateway.metrics import GatewayMetrics
    from crawl2serve.serving.gateway.settings import ShadowSettings
    from crawl2serve.serving.gateway.shadow import Shadow

    class Named:
        model_name = "crawl2serve"

    async def offer_three():
        metrics = GatewayMetrics()
        shadow = Shadow(ShadowSettings(version="2", share=1.0, queue_size=1), Named(), None, None, None, metrics)
        for _ in range(3):
            call = Call(None, "completions")
            call.row.status, call.row.model_version = 200, "1"
            call.engine_payload, call.engine_path = {"prompt": "x", "max_tokens": 2}, "/v1/completions"
            shadow.offer(call)  # returns at once: nothing is awaited
        return shadow.queue.qsize(), metrics

    size, metrics = asyncio.run(offer_three())
    count = metrics.registry.get_sample_value
    assert size == 1
    assert count("c2s_gateway_shadow_requests_total", {"outcome": "queued"}) == 1
    assert count("c2s_gateway_shadow_requests_total", {"outcome": "shed"}) == 2
