"""deploy/monitoring/ validated offline: the alert rules, their unit tests, the Grafana dashboard, the Prometheus
configuration and the Operator manifests.

Always (no tools needed): every metric and label the rules and panels name is checked against what a real
gateway exports (``/metrics`` scraped after real traffic in front of the CPU engine: 200s, a stream, 400, 401,
429, a 503 log_unavailable, and a Redis outage) and what a real engine supervisor writes (its restart counter);
the dashboard against a JSON schema of the part of Grafana's dashboard model it uses, plus layout checks.
With Debian's ``prometheus`` package: ``promtool check rules``, ``promtool test rules`` (input series →
expected alerts), ``promtool check config``, the dashboard's queries parsed as PromQL, ``promtool check metrics``
on both expositions, and a real Prometheus scraping the real gateways: every rule evaluates without error, none
fires for a healthy gateway, every panel's query has data. With ``prometheus-node-exporter``: the supervisor's
file as its textfile collector serves it, scraped by that Prometheus too. Those parts skip, saying why, where
the tools are absent.
"""

import json
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml
from k8s_checks import k8s_docs
from monitoring_checks import (
    DASHBOARD,
    EXTERNAL_METRICS,
    PODMONITOR,
    PROMETHEUS_CONFIG,
    PROMETHEUSRULE,
    README,
    RULES,
    RULES_TESTS,
    TARGET_LABELS,
    dashboard_targets,
    grafana_to_promql,
    parse,
    prometheusrule,
)
from prometheus_client.parser import text_string_to_metric_families

from crawl2serve.serving.engines.base import JSON_OBJECT
from crawl2serve.serving.gateway.auth import KeyStore
from crawl2serve.serving.gateway.hours import HOUR_FORMAT
from crawl2serve.serving.k8s import sglang_manifests
from tests.serving.conftest import cpu_engine, tiny_base, tiny_model  # noqa: F401  (fixtures)
from tests.serving.helpers import fake_engine_script, free_port, start_gateway

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus); the Python checks ran"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian: apt-get install prometheus); the Python checks ran"
)
needs_node_exporter = pytest.mark.skipif(
    NODE_EXPORTER is None, reason="node_exporter not installed (Debian: apt-get install prometheus-node-exporter)"
)

RULE_DOC = yaml.safe_load(RULES.read_text())
ALERTS = [rule for group in RULE_DOC["groups"] for rule in group["rules"] if "alert" in rule]
DASHBOARD_DOC = json.loads(DASHBOARD.read_text())
# What the issue asks the alerts to cover, and the alert that does.
REQUIRED = {
    "error rate": "C2SGatewayHighErrorRate",
    "p99 latency": "C2SGatewayHighLatencyP99",
    "breaker open": "C2SEngineCircuitOpen",
    "log backlog": "C2SInferenceLogBacklog",
    "engine restarts": "C2SEngineRestarted",
}


def promtool(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], input=input, capture_output=True, text=True, timeout=60, check=False)


# -- what really gets exported --------------------------------------------------------------------------------------


def index(*expositions: str) -> dict[str, dict[str, set[str]]]:
    """sample name → label → values seen, over Prometheus text expositions."""
    seen: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for text in expositions:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                entry = seen[sample.name]
                for label, value in sample.labels.items():
                    entry[label].add(value)
    return seen


def wait_up(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout_s} s")
        time.sleep(0.1)


@dataclass
class Stack:
    gateway_urls: list[str]
    scrapes: list[str]  # each gateway's /metrics right after the traffic
    supervisors: Path  # the folder a supervisor writes its state and metrics to
    node_exporter: str | None  # host:port of node_exporter's textfile collector on that folder
    prometheus: str | None  # Prometheus' API, scraping the gateways and node_exporter
    prometheus_log: Path | None


@pytest.fixture(scope="module")
def stack(tmp_path_factory, cpu_engine, tiny_model):  # noqa: F811
    """Two real gateways in front of the CPU engine, after traffic that gives every metric the rules use a
    sample; where installed, node_exporter on the supervisors' folder and a Prometheus (scrapes and rule
    evaluation every second) over both, started now so that its target discovery (5 s ticks) overlaps the
    other tests. Everything stays up for the module."""
    tmp = tmp_path_factory.mktemp("monitoring")
    supervisors = tmp / "supervisors"
    supervisors.mkdir()
    procs: list[subprocess.Popen] = []
    gateways = []
    try:
        node = None
        if NODE_EXPORTER:
            node = f"127.0.0.1:{free_port()}"
            procs.append(
                subprocess.Popen(
                    [
                        NODE_EXPORTER,
                        f"--web.listen-address={node}",
                        "--collector.disable-defaults",
                        "--collector.textfile",
                        f"--collector.textfile.directory={supervisors}",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        # a tenant whose daily budget its first request spends (prices: USD 1 a prompt token): alerted, then refused
        (tmp / "gw").mkdir()
        thrifty, _ = KeyStore.load(tmp / "gw" / "api_keys.json").add("thrifty", "pro")
        gw = start_gateway(
            tmp / "gw",
            [("primary", cpu_engine.url)],
            tiny_model,
            log_commit_timeout_s=0.5,
            tiers={"pro": {"requests_per_minute": 4, "tokens_per_minute": 100_000}},
            prices={"default": {"input_per_1k_usd": 1000, "output_per_1k_usd": 0}},
            budgets={"tenants": {"thrifty": {"daily_usd": 1.0}}, "alerts_file": str(tmp / "alerts.jsonl")},
        )
        gateways.append(gw)
        # the Redis this one is given is not there: it admits requests unlimited and counts it; it mirrors every
        # answer to version "2" (the same model folder) and takes feedback, so the shadow and feedback series exist;
        # it caches answers (in memory), routes max_tokens <= 2 to version 2 by a rule, and serves version 3 on an
        # entry of the same engine that declares json_object output it does not honour (an invalid answer: 502)
        no_redis = start_gateway(
            tmp / "gw-no-redis",
            [("primary", cpu_engine.url), ("declared", cpu_engine.url)],
            tiny_model,
            versions={"2": tiny_model, "3": tiny_model},
            served_by={"3": ["declared"]},
            features={"declared": [JSON_OBJECT]},
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            shadow={"version": "2", "share": 1.0},
            cache={"enabled": True},
            routing_rules=[{"name": "tiny-answers", "version": "2", "max_requested_tokens": 2}],
        )
        gateways.append(no_redis)
        scrapes = [traffic(gw, tmp / "gw" / "spool", thrifty), traffic_without_redis(no_redis)]
        api = log = None
        if PROMETHEUS:
            jobs = [
                {
                    "job_name": "crawl2serve-gateway",
                    "static_configs": [{"targets": [g.url.removeprefix("http://") for g in gateways]}],
                }
            ]
            if node:
                jobs.append({"job_name": "crawl2serve-supervisors", "static_configs": [{"targets": [node]}]})
            config = tmp / "prometheus.yml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                        "rule_files": [str(RULES)],
                        "scrape_configs": jobs,
                    }
                )
            )
            address, log = f"127.0.0.1:{free_port()}", tmp / "prometheus.log"
            with open(log, "w") as err:
                procs.append(
                    subprocess.Popen(
                        [
                            PROMETHEUS,
                            f"--config.file={config}",
                            f"--storage.tsdb.path={tmp / 'tsdb'}",
                            f"--web.listen-address={address}",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )
            api = f"http://{address}/api/v1"
        if node:
            wait_up(f"http://{node}/metrics")
        yield Stack([g.url for g in gateways], scrapes, supervisors, node, api, log)
    finally:
        for g in gateways:
            g.stop()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def traffic(gw, spool: Path, thrifty: str) -> str:
    """200s, a stream, a 400, a 401, a 503 log_unavailable and a 429 through ``gw``, and the tenant of key
    ``thrifty`` spending its budget (a 200, then a 429 budget_exceeded): its /metrics after."""
    body = {"model": "crawl2serve", "prompt": "The committee", "max_tokens": 4}
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {gw.key}"}, timeout=30) as http:
        # 503 log_unavailable: the spool's hour folder cannot be made (a file in its way), then it can
        spool.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        blockers = [spool / (now + timedelta(hours=h)).strftime(HOUR_FORMAT) for h in (0, 1)]
        for path in blockers:
            path.write_text("not a folder")
        r = http.post("/v1/completions", json=body)
        assert r.status_code == 503 and r.json()["error"]["code"] == "log_unavailable", r.text
        for path in blockers:
            path.unlink()
        assert http.post("/v1/completions", json=body).status_code == 200
        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "crawl2serve",
                "messages": [{"role": "user", "content": "The json module"}],
                "max_tokens": 4,
                "stream": True,
            },
        ) as s:
            assert s.status_code == 200 and "data: [DONE]" in list(s.iter_lines())
        assert http.post("/v1/completions", json={**body, "prompt": ""}).status_code == 400
        assert http.post("/v1/completions", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        statuses = [http.post("/v1/completions", json=body).status_code for _ in range(2)]
        assert statuses == [200, 429], statuses  # the tier's 4 requests a minute are spent
        spender = {"Authorization": f"Bearer {thrifty}"}
        assert http.post("/v1/completions", json=body, headers=spender).status_code == 200
        refused = http.post("/v1/completions", json=body, headers=spender)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded", refused.text
        scrape = http.get("/metrics")
    assert scrape.status_code == 200
    return scrape.text


def traffic_without_redis(gw) -> str:
    body = {"model": "crawl2serve", "prompt": "The committee", "max_tokens": 4}
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {gw.key}"}, timeout=30) as http:
        answer = http.post("/v1/completions", json=body)
        assert answer.status_code == 200
        rated = http.post("/v1/feedback", json={"request_id": answer.json()["id"], "rating": 1})
        assert rated.status_code == 200, rated.text
        deadline = time.monotonic() + 20  # the mirror is sent after the answer
        while 'c2s_gateway_shadow_requests_total{outcome="ok"}' not in http.get("/metrics").text:
            assert time.monotonic() < deadline, "the mirrored request did not complete"
            time.sleep(0.1)
        greedy = {**body, "temperature": 0}
        answers = [http.post("/v1/completions", json=greedy) for _ in range(2)]
        assert [a.headers["x-crawl2serve-cache"] for a in answers] == ["miss", "hit"], [a.text for a in answers]
        assert http.post("/v1/completions", json={**body, "max_tokens": 2}).status_code == 200  # the rule's
        ask = {"model": "crawl2serve@3", "messages": [{"role": "user", "content": "The json module"}], "max_tokens": 4}
        invalid = http.post("/v1/chat/completions", json={**ask, "response_format": {"type": "json_object"}})
        assert invalid.status_code == 502 and invalid.json()["error"]["code"] == "output_schema_invalid", invalid.text
        scrape = http.get("/metrics")
    assert scrape.status_code == 200
    return scrape.text


@pytest.fixture(scope="module")
def gateway_scrapes(stack) -> list[str]:
    return stack.scrapes


FAKE_ENGINE = fake_engine_script("time.sleep(0.6)\nsys.exit(3)\n")


@pytest.fixture(scope="module")
def supervisor_run(stack, tmp_path_factory) -> tuple[dict, str]:
    """A real ``python -m crawl2serve.serving supervise`` (state file in the stack's supervisors folder) whose fake engine is
    healthy, then exits, three times in a row: restarted twice, then given up. ``(its JSON state, its metrics
    file's text)``."""
    tmp = tmp_path_factory.mktemp("supervisor")
    (tmp / "engine.py").write_text(FAKE_ENGINE)
    port = free_port()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "crawl2serve.serving",
            "supervise",
            "--name",
            "primary",
            "--backend",
            "cpu",
            "--url",
            f"http://127.0.0.1:{port}",
            "--state-file",
            str(stack.supervisors / "primary.json"),
            "--base-delay-s",
            "0.05",
            "--max-fast-crashes",
            "3",
            "--startup-timeout-s",
            "20",
            "--liveness-period-s",
            "0",
            "--",
            sys.executable,
            str(tmp / "engine.py"),
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    state = json.loads((stack.supervisors / "primary.json").read_text())
    assert out.returncode == 1 and state["state"] == "gave_up" and state["restarts"] == 2, out.stdout + out.stderr
    return state, (stack.supervisors / "primary.prom").read_text()


@pytest.fixture(scope="module")
def exported(gateway_scrapes, supervisor_run) -> dict[str, dict[str, set[str]]]:
    """Every sample name the rules and panels may use, with its labels: the gateways', the supervisor's, and
    the external ones (EXTERNAL_METRICS), each with the target labels Prometheus adds."""
    seen = index(*gateway_scrapes, supervisor_run[1])
    for name, labels in EXTERNAL_METRICS.items():
        seen[name] = {label: set() for label in labels}
    for entry in seen.values():
        for label in TARGET_LABELS:
            entry.setdefault(label, set())
    return seen


# -- the supervisor's restart counter ---------------------------------------------------------------------------


def test_the_supervisor_exports_its_restarts(stack, supervisor_run):
    state, text = supervisor_run
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert [(s.name, s.labels, s.value) for s in samples] == [
        ("c2s_supervisor_engine_restarts_total", {"engine": "primary", "backend": "cpu"}, state["restarts"])
    ]
    assert sorted(p.name for p in stack.supervisors.iterdir()) == ["primary.json", "primary.prom"], "no temporary left"


@needs_promtool
def test_promtool_accepts_the_supervisors_and_the_gateways_expositions(supervisor_run, gateway_scrapes):
    for text in [supervisor_run[1], *gateway_scrapes]:
        out = promtool("check", "metrics", input=text)
        assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


@needs_node_exporter
def test_node_exporters_textfile_collector_serves_the_restarts(stack, supervisor_run):
    text = httpx.get(f"http://{stack.node_exporter}/metrics").text
    seen = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert (
        seen[("c2s_supervisor_engine_restarts_total", (("backend", "cpu"), ("engine", "primary")))]
        == supervisor_run[0]["restarts"]
    ), text
    assert seen[("node_textfile_scrape_error", ())] == 0


# -- names and labels ---------------------------------------------------------------------------------------------


def check_expr(expr: str, exported: dict[str, dict[str, set[str]]], where: str) -> set[str]:
    """Every selector of ``expr`` names an exported sample and its labels; equality/regex values match a value
    seen (target and external labels aside); grouping labels exist. Returns the sample names used."""
    parsed = parse(expr)
    assert parsed.selectors, f"{where}: no metric in {expr!r}"
    labels_here = set(TARGET_LABELS) | parsed.added
    for selector in parsed.selectors:
        assert selector.metric in exported, (
            f"{where}: {selector.metric} is neither exported by a real gateway or supervisor (after the test's "
            f"traffic) nor a known external metric; exported: {sorted(exported)}"
        )
        labels = exported[selector.metric]
        labels_here |= set(labels)
        for label, op, value in selector.matchers:
            assert label in labels, f"{where}: {selector.metric} has no label {label!r} (has {sorted(labels)})"
            if label in TARGET_LABELS or selector.metric in EXTERNAL_METRICS or op.startswith("!"):
                continue
            values = labels[label]
            if op == "=":
                assert value in values, f"{where}: {selector.metric}{{{label}={value!r}}}: seen only {sorted(values)}"
            else:
                assert any(re.fullmatch(value, v) for v in values), (
                    f"{where}: {selector.metric}{{{label}=~{value!r}}} matches none of {sorted(values)}"
                )
    unknown = (parsed.grouping | parsed.read) - labels_here
    assert not unknown, f"{where}: groups by or reads labels {sorted(unknown)} that no series of {expr!r} has"
    return {s.metric for s in parsed.selectors}


def test_the_rules_name_only_exported_metrics_and_labels(exported):
    for alert in ALERTS:
        check_expr(alert["expr"], exported, alert["alert"])


def dashboard_variables() -> dict[str, str]:
    """Each query variable of the dashboard → the value to validate its uses with (its all-value)."""
    return {v["name"]: v.get("allValue", ".*") for v in DASHBOARD_DOC["templating"]["list"] if v["type"] == "query"}


def test_the_dashboard_names_only_exported_metrics_and_shows_every_gateway_metric(exported, gateway_scrapes):
    used = set()
    for panel, target in dashboard_targets(DASHBOARD_DOC):
        expr = grafana_to_promql(target["expr"], dashboard_variables())
        used |= check_expr(expr, exported, f"panel {panel['id']} {panel['title']!r} {target['refId']}")
    for variable in DASHBOARD_DOC["templating"]["list"]:
        if variable["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"]["query"])
            assert m, variable
            assert m[1] in exported and m[2] in exported[m[1]], f"variable {variable['name']}: {m[0]}"
    # (prometheus_client's text format also declares each counter's and histogram's <name>_created as a gauge
    # family of its own: creation timestamps, not something to plot)
    families = {
        m[1]
        for text in gateway_scrapes
        for m in re.finditer(r"^# TYPE (\S+) ", text, re.MULTILINE)
        if not m[1].endswith("_created")
    }
    assert len(families) >= 12, families
    shown = {name for name in families if any(u == name or u.startswith(name + "_") for u in used)}
    assert families - shown == set(), f"gateway metrics on no panel: {sorted(families - shown)}"
    assert "c2s_supervisor_engine_restarts_total" in used and "kube_pod_container_status_restarts_total" in used


def test_kubernetes_restarts_are_those_of_the_sglang_containers_in_the_engines_namespace():
    """The rules' kube-state-metrics selectors name the container and namespace the engine really runs in."""
    from crawl2serve.resources.serving import ServingEngine

    default_namespace = ServingEngine.model_fields["namespace"].default
    deployment = sglang_manifests(
        name=ServingEngine.model_fields["k8s_name"].default,
        namespace=default_namespace,
        image="sglang",
        model_path="/m",
    )[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]["name"]
    namespaces = {doc["metadata"]["name"] for _, doc in k8s_docs() if doc["kind"] == "Namespace"}
    exprs = [a["expr"] for a in ALERTS] + [t["expr"] for _, t in dashboard_targets(DASHBOARD_DOC)]
    matchers = [
        {label: value for label, _, value in s.matchers}
        for expr in exprs
        for s in parse(grafana_to_promql(expr, dashboard_variables())).selectors
        if s.metric == "kube_pod_container_status_restarts_total"
    ]
    assert matchers and all(m == {"namespace": default_namespace, "container": container} for m in matchers), matchers
    assert default_namespace in namespaces
    # label_replace takes the engine from the pod's name: <Deployment>-<ReplicaSet hash>-<pod suffix>
    assert re.fullmatch(r"(.+)-[^-]+-[^-]+", "crawl2serve-sglang-5d8f7c9b4-x2k7q")[1] == deployment["metadata"]["name"]


# -- the rules ----------------------------------------------------------------------------------------------------


def readme_anchors() -> set[str]:
    """GitHub's anchors of deploy/README.md's headings (lowercase, punctuation dropped, spaces to dashes)."""
    return {
        re.sub(r"[^\w\- ]", "", m[1].strip().lower()).replace(" ", "-")
        for m in re.finditer(r"^#+ (.+)$", README.read_text(), re.MULTILINE)
    }


def test_every_alert_has_a_severity_a_duration_and_a_runbook():
    anchors = readme_anchors()
    names = [a["alert"] for a in ALERTS]
    assert len(names) == len(set(names)), "alert names are unique"
    for alert in ALERTS:
        name = alert["alert"]
        assert re.fullmatch(r"C2S[A-Za-z0-9]+", name), name
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        assert re.fullmatch(r"\d+[smh]", alert["for"]), f"{name}: an explicit for: duration"
        annotations = alert["annotations"]
        assert set(annotations) == {"summary", "description", "runbook"}, name
        page, _, anchor = annotations["runbook"].partition("#")
        assert page == "deploy/README.md" and anchor == name.lower() and anchor in anchors, (
            f"{name}: runbook {annotations['runbook']} has no heading in deploy/README.md"
        )
        assert "{{" not in annotations["runbook"]
    assert set(REQUIRED.values()) <= set(names), f"missing: {set(REQUIRED.values()) - set(names)}"
    critical = {a["alert"] for a in ALERTS if a["labels"]["severity"] == "critical"}
    assert {"C2SGatewayHighErrorRate", "C2SNoHealthyEngine", "C2SGatewayDown"} <= critical


def test_every_alert_has_unit_tests_that_fire_it():
    tests = yaml.safe_load(RULES_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    fired, quiet = set(), set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in ALERTS}
    assert fired == names, f"alerts no test fires: {names - fired}; unknown: {fired - names}"
    assert quiet == names, f"alerts no test expects quiet: {names - quiet}"


def test_the_prometheusrule_holds_exactly_the_rule_files_groups():
    assert yaml.safe_load(PROMETHEUSRULE.read_text()) == prometheusrule(), (
        "deploy/monitoring/prometheusrule.yaml is out of date: python tests/deploy/monitoring_checks.py "
        "--write-prometheusrule"
    )


def test_the_podmonitor_selects_the_gateway_pods_at_their_metrics_port():
    monitor = yaml.safe_load(PODMONITOR.read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    gateways = [
        doc for _, doc in k8s_docs() if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "crawl2serve-gateway"
    ]
    assert len(gateways) == 1
    template = gateways[0]["spec"]["template"]
    assert monitor["metadata"]["namespace"] == gateways[0]["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    annotations = template["metadata"]["annotations"]
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in ports, f"no container port named {endpoint['port']}"
        assert endpoint["path"] == annotations["prometheus.io/path"] == "/metrics"
        assert str(ports[endpoint["port"]]) == annotations["prometheus.io/port"]
    # the job label the Operator gives its targets ("<namespace>/<name>") is one C2SGatewayDown watches
    up = next(a for a in ALERTS if a["alert"] == "C2SGatewayDown")
    regex = {lb: v for lb, _, v in parse(up["expr"]).selectors[0].matchers}["job"]
    assert re.fullmatch(regex, f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    gateway_job = next(j for j in config["scrape_configs"] if j["static_configs"][0]["targets"] == ["127.0.0.1:8700"])
    assert re.fullmatch(regex, gateway_job["job_name"])


@needs_promtool
def test_promtool_checks_the_rules():
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0 and f"SUCCESS: {len(ALERTS)} rules found" in out.stdout, out.stdout + out.stderr


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass():
    out = promtool("test", "rules", str(RULES_TESTS))
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


@needs_promtool
def test_promtool_checks_the_prometheus_configuration():
    out = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert out.returncode == 0, out.stdout + out.stderr


# -- the dashboard ------------------------------------------------------------------------------------------------

# The part of Grafana's dashboard model (JSON, schemaVersion 39) this dashboard uses, strictly: a misspelt or
# misplaced key fails. Grafana's own schema is not available offline.
DATASOURCE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}},
}
TARGET = {
    "type": "object",
    "additionalProperties": False,
    "required": ["refId", "expr", "datasource"],
    "properties": {
        "refId": {"type": "string", "pattern": "^[A-Z]$"},
        "expr": {"type": "string", "minLength": 1},
        "legendFormat": {"type": "string"},
        "range": {"type": "boolean"},
        "datasource": DATASOURCE,
    },
}
STEP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["color", "value"],
    "properties": {"color": {"type": "string"}, "value": {"type": ["number", "null"]}},
}
MAPPING = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "options"],
    "properties": {
        "type": {"const": "value"},
        "options": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["text"],
                "properties": {"text": {"type": "string"}, "color": {"type": "string"}, "index": {"type": "integer"}},
            },
        },
    },
}
FIELD_CONFIG = {
    "type": "object",
    "additionalProperties": False,
    "required": ["defaults", "overrides"],
    "properties": {
        "overrides": {"type": "array"},
        "defaults": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "unit": {"type": "string"},
                "min": {"type": "number"},
                "max": {"type": "number"},
                "mappings": {"type": "array", "items": MAPPING},
                "thresholds": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["mode", "steps"],
                    "properties": {
                        "mode": {"enum": ["absolute", "percentage"]},
                        "steps": {"type": "array", "items": STEP, "minItems": 1},
                    },
                },
                "color": {"type": "object", "required": ["mode"]},
                "custom": {"type": "object"},
            },
        },
    },
}
GRID = {
    "type": "object",
    "additionalProperties": False,
    "required": ["h", "w", "x", "y"],
    "properties": {
        "h": {"type": "integer", "minimum": 1},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
    },
}
PANEL = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "type", "title", "gridPos"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "title": {"type": "string", "minLength": 1},
        "type": {"enum": ["row", "timeseries", "stat", "state-timeline"]},
        "description": {"type": "string"},
        "gridPos": GRID,
        "datasource": DATASOURCE,
        "targets": {"type": "array", "items": TARGET},
        "fieldConfig": FIELD_CONFIG,
        "options": {"type": "object"},
        "collapsed": {"type": "boolean"},
        "panels": {"type": "array"},
    },
    "if": {"properties": {"type": {"const": "row"}}},
    "then": {"required": ["collapsed", "panels"], "properties": {"gridPos": {"properties": {"w": {"const": 24}}}}},
    "else": {
        "required": ["datasource", "targets", "fieldConfig", "description"],
        "properties": {"targets": {"minItems": 1}},
    },
}
VARIABLE = {
    "type": "object",
    "required": ["name", "type", "hide"],
    "properties": {"name": {"type": "string", "pattern": r"^[A-Za-z_]\w*$"}, "type": {"enum": ["datasource", "query"]}},
    "if": {"properties": {"type": {"const": "datasource"}}},
    "then": {"required": ["query"], "properties": {"query": {"const": "prometheus"}}},
    "else": {
        "required": ["datasource", "query", "definition", "refresh"],
        "properties": {"datasource": DATASOURCE, "query": {"type": "object", "required": ["query"]}},
    },
}
DASHBOARD_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["uid", "title", "schemaVersion", "version", "panels", "templating", "time", "annotations"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "timezone": {"enum": ["", "browser", "utc"]},
        "editable": {"type": "boolean"},
        "graphTooltip": {"enum": [0, 1, 2]},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "version": {"type": "integer"},
        "refresh": {"type": "string", "pattern": r"^(\d+[smhd])?$"},
        "time": {"type": "object", "required": ["from", "to"]},
        "timepicker": {"type": "object"},
        "fiscalYearStartMonth": {"type": "integer"},
        "liveNow": {"type": "boolean"},
        "links": {"type": "array"},
        "annotations": {"type": "object", "required": ["list"]},
        "templating": {
            "type": "object",
            "additionalProperties": False,
            "required": ["list"],
            "properties": {"list": {"type": "array", "items": VARIABLE}},
        },
        "panels": {"type": "array", "items": PANEL, "minItems": 1},
    },
}


def test_the_dashboard_validates_against_its_schema():
    jsonschema.Draft202012Validator.check_schema(DASHBOARD_SCHEMA)
    jsonschema.validate(DASHBOARD_DOC, DASHBOARD_SCHEMA, cls=jsonschema.Draft202012Validator)
    broken = json.loads(DASHBOARD.read_text())  # the schema is strict: a misspelt key fails
    broken["panels"][1]["targets"][0]["exprr"] = broken["panels"][1]["targets"][0].pop("expr")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, DASHBOARD_SCHEMA, cls=jsonschema.Draft202012Validator)


def test_the_dashboard_layout_ids_and_variables():
    panels = DASHBOARD_DOC["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, f"panel {p['id']} is wider than the grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {p['id']} overlap"
                cells[(x, y)] = p["id"]
    for p in panels:
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), f"panel {p['id']}: refIds are unique"
    variables = {v["name"]: v for v in DASHBOARD_DOC["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    text = DASHBOARD.read_text()
    used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", text)) - {"__rate_interval", "__interval", "__range"}
    assert used <= set(variables), f"undefined variables {used - set(variables)}"
    for name in variables:
        assert re.search(r"\$\{?" + name + r"\b", text), f"variable {name} is never used"


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path):
    """Each panel's query, its Grafana macros replaced, as a recording rule: promtool parses the PromQL."""
    rules = [
        {
            "record": f"dashboard:panel_{panel['id']}_{target['refId']}",
            "expr": grafana_to_promql(target["expr"], dashboard_variables()),
        }
        for panel, target in dashboard_targets(DASHBOARD_DOC)
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0 and f"SUCCESS: {len(rules)} rules found" in out.stdout, out.stdout + out.stderr


# -- a real Prometheus, scraping the real gateways ----------------------------------------------------------------


def query(api: str, expr: str) -> list:
    body = httpx.get(f"{api}/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", f"{expr!r}: {body}"
    return body["data"]["result"]


@pytest.fixture(scope="module")
def prometheus(stack, supervisor_run) -> str:
    """The stack's Prometheus API once it has scraped every target twice (and the supervisor's count twice)."""
    api = stack.prometheus
    wait_up(api.removesuffix("/api/v1") + "/-/ready")
    targets = len(stack.gateway_urls) + bool(stack.node_exporter)
    ready = ["count_over_time(up[1m]) >= 2"]
    if stack.node_exporter:
        ready.append("count_over_time(c2s_supervisor_engine_restarts_total[1m]) >= 2")
    deadline = time.monotonic() + 30
    while not (len(query(api, ready[0])) == targets and all(query(api, q) for q in ready[1:])):
        assert time.monotonic() < deadline, stack.prometheus_log.read_text()[-3000:]
        time.sleep(0.25)
    return api


@needs_prometheus
def test_prometheus_evaluates_every_rule_without_error_and_a_healthy_gateway_raises_no_alert(prometheus):
    deadline = time.monotonic() + 10
    while True:  # every rule evaluated since the targets were scraped
        rules = [r for g in httpx.get(f"{prometheus}/rules").json()["data"]["groups"] for r in g["rules"]]
        if all(not r["lastEvaluation"].startswith("0001") for r in rules) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert sorted(r["name"] for r in rules) == sorted(a["alert"] for a in ALERTS)
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
    alerts = httpx.get(f"{prometheus}/alerts").json()["data"]["alerts"]
    assert alerts == [], alerts


@needs_prometheus
def test_every_dashboard_query_runs_in_prometheus_and_has_data(stack, prometheus):
    """Against the real series: every query evaluates, and each has data except the Kubernetes ones (no
    kube-state-metrics here) and, without node_exporter, the supervisors'."""
    for panel, target in dashboard_targets(DASHBOARD_DOC):
        expr = grafana_to_promql(target["expr"], dashboard_variables())
        result = query(prometheus, expr)
        metrics = {s.metric for s in parse(expr).selectors}
        if "kube_pod_container_status_restarts_total" in metrics or (
            not stack.node_exporter and "c2s_supervisor_engine_restarts_total" in metrics
        ):
            continue
        assert result, f"panel {panel['id']} {panel['title']!r} {target['refId']}: no data for {expr!r}"
    for variable in DASHBOARD_DOC["templating"]["list"]:
        if variable["type"] == "query":
            metric, label = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"]["query"]).groups()
            values = httpx.get(f"{prometheus}/label/{label}/values", params={"match[]": metric}).json()["data"]
            assert values == ["crawl2serve-gateway"], values
