"""Routing by request: rules that send a request to a cheaper version or engine, by what the request is.

The routing table (:mod:`serving.gateway.routing`) picks the version a public model name is served by (stable,
or canary for its share); the rules here (gateway settings ``routing_rules``, in order) may then move a request
elsewhere by its prompt's tokens, its requested ``max_tokens`` and its tenant's tier: the first rule whose every
given condition holds sends it to its ``version`` (a label of routing.json's ``versions``) and/or restricts it to
its ``engines``. A short free-tier request can so be served by a small model on the CPU engine while the rest
go to the champion. Requests pinned to a version (``crawl2serve@N``) and A/B-test assignments are left alone:
the client, or the experiment, chose their version. A rule whose version is not deployed (or whose engines do
not serve it) does not apply: the request keeps its route, and the miss is counted, never the request failed.

Each decision is the row's ``routing_rule`` (the rule's name; "" when none matched) and
``c2s_gateway_routing_decisions_total{rule, outcome}`` (``rule="none"``: no rule matched; ``outcome``:
``routed``, ``unavailable``, ``skipped`` for pinned and experiment requests).

Prompt tokens are counted with the routed version's tokenizer (:mod:`serving.gateway.tokens`), and only when a
rule has a prompt-token condition; the rate limit then counts them again with the tokenizer of the version the
rule chose, which is the one that will serve.
"""

import dataclasses
import logging
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from .call import Call
from .ratelimit import Tier
from .routing import Router, UnknownModel
from .schemas import ChatRequest
from .settings import RoutingRuleSettings
from .tiers import TierSource
from .tokens import TokenCounter

log = logging.getLogger("crawl2serve.gateway")


@dataclass(frozen=True)
class RequestFacts:
    """What the rules look at: the prompt's tokens (None: not counted, no rule asks), the requested (or
    default) ``max_tokens`` and the tenant's tier name."""

    prompt_tokens: int | None
    max_tokens: int
    tier: str


def matches(rule: RoutingRuleSettings, facts: RequestFacts) -> bool:
    """Whether every condition ``rule`` gives holds for ``facts`` (bounds are inclusive)."""
    tokens = facts.prompt_tokens or 0
    return (
        (rule.tiers is None or facts.tier in rule.tiers)
        and (rule.max_requested_tokens is None or facts.max_tokens <= rule.max_requested_tokens)
        and (rule.max_prompt_tokens is None or tokens <= rule.max_prompt_tokens)
        and (rule.min_prompt_tokens is None or tokens >= rule.min_prompt_tokens)
    )


class RoutingRules:
    """The configured rules, in order: :meth:`first_match` is the decision."""

    def __init__(self, rules: list[RoutingRuleSettings]):
        names = [r.name for r in rules]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"routing_rules: rule name {duplicate!r} is used twice; rule names must be unique")
        self.rules = list(rules)
        self.needs_prompt_tokens = any(
            r.max_prompt_tokens is not None or r.min_prompt_tokens is not None for r in rules
        )

    def first_match(self, facts: RequestFacts) -> RoutingRuleSettings | None:
        return next((r for r in self.rules if matches(r, facts)), None)


class RoutingMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.decisions = Counter(
            "c2s_gateway_routing_decisions",
            "Request-routing decisions by rule (none: no rule matched) and outcome (routed, unavailable, skipped)",
            ["rule", "outcome"],
            registry=registry,
        )


class RouteByRequest:
    """The gateway step (after route and A/B assignment, before the rate limit) that applies the rules."""

    def __init__(
        self,
        rules: RoutingRules,
        router: Router,
        tier_source: TierSource,
        tiers: dict[str, Tier],
        counter: TokenCounter,
        registry: CollectorRegistry,
    ):
        self.rules, self.router, self.tier_source, self.tiers, self.counter = rules, router, tier_source, tiers, counter
        self.metrics = RoutingMetrics(registry)

    async def facts(self, call: Call) -> RequestFacts:
        tier_name = await self.tier_source.tier(call.api_key.tenant, call.api_key.tier)
        prompt_tokens = None
        if self.rules.needs_prompt_tokens:
            if isinstance(call.req, ChatRequest):
                prompt_tokens = await self.counter.acount(call.route.tokenizer, messages=call.req.engine_messages())
            else:
                prompt_tokens = await self.counter.acount(call.route.tokenizer, prompt=call.prompt)
        # the tier the rate limit applies (an unknown tier name is limited as free)
        return RequestFacts(prompt_tokens, call.max_tokens, tier_name if tier_name in self.tiers else "free")

    async def __call__(self, call: Call) -> None:
        if call.route.route in ("pinned", "experiment"):
            self.metrics.decisions.labels("none", "skipped").inc()
            return
        rule = self.rules.first_match(await self.facts(call))
        if rule is None:
            self.metrics.decisions.labels("none", "routed").inc()
            return
        route = call.route
        if rule.version is not None and rule.version != route.version:
            try:
                route = self.router.pick(f"{self.router.model_name}@{rule.version}")
            except UnknownModel:
                log.warning(
                    "routing rule %r: version %s is not deployed; request keeps its route", rule.name, rule.version
                )
                self.metrics.decisions.labels(rule.name, "unavailable").inc()
                return
        models = {e: m for e, m in route.models.items() if rule.engines is None or e in rule.engines}
        if not models:
            log.warning("routing rule %r: no engine of %s serves version %s", rule.name, rule.engines, route.version)
            self.metrics.decisions.labels(rule.name, "unavailable").inc()
            return
        call.route = dataclasses.replace(route, public=call.req.model, route="rule", models=models)
        call.row.update(model_version=route.version, route="rule", routing_rule=rule.name)
        self.metrics.decisions.labels(rule.name, "routed").inc()
