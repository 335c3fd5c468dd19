"""Routing by request: the rules alone, then through the gateway as its own process in front of the real CPU
engine serving two versions (the tiny model as "1", a smaller one as "2", the cheaper version), reached under
two engine names, driven by the ``openai`` client."""

import time

import openai
import pytest
from pydantic import ValidationError

from crawl2serve.resources.feast_store import FeastStore
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.storage import DataRoot
from crawl2serve.serving.gateway.logstore import read_rows
from crawl2serve.serving.gateway.request_router import RequestFacts, RoutingRules, matches
from crawl2serve.serving.gateway.settings import GatewaySettings, RoutingRuleSettings, parse_rules
from tests.serving.helpers import metric, start_gateway


def rule(**kw) -> RoutingRuleSettings:
    return RoutingRuleSettings(**{"name": "r", "version": "2", **kw})


def test_a_rule_matches_when_every_condition_it_gives_holds_bounds_inclusive():
    facts = RequestFacts(prompt_tokens=10, max_tokens=32, tier="free")
    assert matches(rule(), facts)  # no condition: every request
    assert matches(rule(max_prompt_tokens=10, min_prompt_tokens=10, max_requested_tokens=32, tiers=["free"]), facts)
    assert not matches(rule(max_prompt_tokens=9), facts) and not matches(rule(min_prompt_tokens=11), facts)
    assert not matches(rule(max_requested_tokens=31), facts) and not matches(rule(tiers=["pro", "enterprise"]), facts)
    assert not matches(rule(max_prompt_tokens=64, tiers=["pro"]), facts)  # one condition failing is enough


def test_the_first_matching_rule_wins_and_only_rules_on_prompts_count_tokens():
    rules = RoutingRules([rule(name="a", max_requested_tokens=8), rule(name="b", tiers=["free"]), rule(name="c")])
    assert not rules.needs_prompt_tokens
    assert rules.first_match(RequestFacts(None, 8, "free")).name == "a"
    assert rules.first_match(RequestFacts(None, 9, "free")).name == "b"
    assert rules.first_match(RequestFacts(None, 9, "pro")).name == "c"
    assert RoutingRules([rule(name="a", tiers=["pro"])]).first_match(RequestFacts(None, 9, "free")) is None
    assert RoutingRules([rule(min_prompt_tokens=100)]).needs_prompt_tokens


def test_bad_rules_are_refused_naming_the_problem():
    with pytest.raises(ValueError, match="rule name 'a' is used twice"):
        RoutingRules([rule(name="a"), rule(name="a", tiers=["free"])])
    with pytest.raises(ValidationError, match="give a version, engines or both"):
        RoutingRuleSettings(name="nowhere", max_prompt_tokens=10)
    with pytest.raises(ValidationError, match="'none' is reserved"):
        rule(name="none")
    with pytest.raises(ValidationError, match="max_prompt_tokens"):
        rule(max_prompt_tokens=-1)
    with pytest.raises(ValidationError, match="routing_rules.0.tier"):  # a misspelt condition
        GatewaySettings.model_validate(
            {
                "routing_file": "r",
                "keys_file": "k",
                "log_dir": "l",
                "engines": [],
                "routing_rules": [{"name": "x", "version": "2", "tier": ["free"]}],
            }
        )


def test_rules_from_the_serving_resource_reach_the_gateway_settings(tmp_path):
    assert parse_rules(["short-free=version:2,max_prompt_tokens:64,tiers:free|pro", "cpu=engines:fallback"]) == [
        RoutingRuleSettings(name="short-free", version="2", max_prompt_tokens=64, tiers=["free", "pro"]),
        RoutingRuleSettings(name="cpu", engines=["fallback"]),
    ]
    with pytest.raises(
        ValueError, match=r"routing rule 'x=version:2,max_tokens:4': max_tokens: Extra inputs are not permitted"
    ):
        parse_rules(["x=version:2,max_tokens:4"])
    with pytest.raises(ValueError, match="expected 'name=field:value,...', got 'version'"):
        parse_rules(["x=version"])
    root = DataRoot(url=str(tmp_path))
    engine = ServingEngine(
        data_root=root, feast_store=FeastStore(data_root=root), feast_tiers=False, routing_rules=["a=version:2"]
    )
    settings = engine.gateway_settings()
    assert settings.routing_rules == [RoutingRuleSettings(name="a", version="2")]
    assert settings.cache.enabled and settings.cache.redis_url is None  # the embedded default: in memory


# -- through the gateway -------------------------------------------------------------------------------------

RULES = [
    # first match wins: a rule whose version is not deployed does not apply (the request keeps its route)
    {"name": "to-undeployed", "version": "9", "max_requested_tokens": 2},
    {"name": "short-free-prompts", "version": "2", "max_prompt_tokens": 12, "tiers": ["free"]},
    {"name": "short-answers", "version": "2", "engines": ["cheap"], "max_requested_tokens": 4},
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, cpu_engine, tiny_model, small_model):
    # one CPU engine under two names: "primary" (first in order) and "cheap"; both serve both versions
    gw = start_gateway(
        tmp_path_factory.mktemp("gw-rules"),
        [("primary", cpu_engine.url), ("cheap", cpu_engine.url)],
        tiny_model,
        versions={"2": small_model},
        routing_rules=RULES,
    )
    yield gw
    gw.stop()


def test_rules_route_requests_by_prompt_length_max_tokens_and_tier(gateway):
    pro = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)
    free_key, _ = gateway.keys.add("freeco", "free")
    time.sleep(1.1)  # the gateway re-reads its key file at most once a second
    free = openai.OpenAI(base_url=gateway.url + "/v1", api_key=free_key, max_retries=0)
    short, long = "The library", "The committee reviewed the budget and the library opened late every morning"

    def ask(client, prompt=short, max_tokens=8, model="crawl2serve"):
        return client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)

    answers = {
        "pro": ask(pro),  # no rule matches
        "pro-short-answer": ask(pro, max_tokens=4),  # short-answers: version 2 on the cheap engine
        "free-short": ask(free),  # short-free-prompts
        "free-long": ask(free, prompt=long),  # too long for short-free-prompts
        "pinned": ask(pro, max_tokens=4, model="crawl2serve@1"),  # a pinned version is left alone
        "undeployed": ask(pro, max_tokens=2),  # to-undeployed matches, does not apply: stays on stable
        "v2": ask(pro, model="crawl2serve@2"),  # version 2's own answer, for comparison
    }
    time.sleep(0.3)
    rows = {r["request_id"]: r for r in read_rows(gateway.settings.log_dir)[0]}
    got = {k: (rows[a.id]["model_version"], rows[a.id]["engine"], rows[a.id]["route"], rows[a.id]["routing_rule"])
           for k, a in answers.items()}  # fmt: skip
    assert got == {
        "pro": ("1", "primary", "stable", ""),
        "pro-short-answer": ("2", "cheap", "rule", "short-answers"),
        "free-short": ("2", "primary", "rule", "short-free-prompts"),
        "free-long": ("1", "primary", "stable", ""),
        "pinned": ("1", "primary", "pinned", ""),
        "undeployed": ("1", "primary", "stable", ""),
        "v2": ("2", "primary", "pinned", ""),
    }
    # the rule's version answered: version 2's answer, not the stable one's
    assert answers["free-short"].choices[0].text == answers["v2"].choices[0].text != answers["pro"].choices[0].text
    count = lambda rule, outcome: metric(  # noqa: E731
        gateway.url, "c2s_gateway_routing_decisions_total", rule=rule, outcome=outcome
    )
    assert count("short-answers", "routed") == count("short-free-prompts", "routed") == 1
    assert count("to-undeployed", "unavailable") == 1
    assert count("none", "routed") == 2 and count("none", "skipped") == 2  # pro, free-long; the two pinned
