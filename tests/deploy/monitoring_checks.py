"""Helpers of tests/deploy/test_monitoring.py: the monitoring files under deploy/monitoring/, the metric selectors
of a PromQL expression, Grafana's template macros, and the PrometheusRule rendered from the rule file.

``python tests/deploy/monitoring_checks.py --write-prometheusrule`` rewrites deploy/monitoring/prometheusrule.yaml
from prometheus-rules.yaml (the test fails until they agree).
"""

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
RULES_TESTS = MONITORING / "prometheus-rules.test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
PODMONITOR = MONITORING / "podmonitor.yaml"
PROMETHEUSRULE = MONITORING / "prometheusrule.yaml"
README = REPO / "deploy" / "README.md"

# Labels Prometheus adds to every scraped series (the target's), whatever the exporter exports.
TARGET_LABELS = {"job", "instance"}

# Metrics that neither the gateway nor the supervisors export, with the labels the rules may use and who exports
# them. kube-state-metrics: kube_pod_container_status_restarts_total{namespace, pod, container, uid} (its docs,
# "Pod metrics"); up: Prometheus' own per-target series.
EXTERNAL_METRICS = {
    "kube_pod_container_status_restarts_total": {"namespace", "pod", "container", "uid"},
    "up": set(),
}


# -- PromQL selectors ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<dur>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*\b)
  | (?P<num>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?:Inf|NaN)\b)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<lbrace>\{) | (?P<rbrace>\}) | (?P<lparen>\() | (?P<rparen>\))
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,@])
""",
    re.VERBOSE,
)
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}


def tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 30]!r} (in {expr!r})")
        pos = m.end()
        if m.lastgroup not in ("ws", "comment"):
            out.append((m.lastgroup, m.group()))
    return out


def _unquote(s: str) -> str:
    return s[1:-1].encode().decode("unicode_escape") if s[0] != "`" else s[1:-1]


@dataclass
class Selector:
    metric: str
    matchers: list[tuple[str, str, str]] = field(default_factory=list)  # (label, op, value)


@dataclass
class Parsed:
    selectors: list[Selector]
    grouping: set[str]  # labels named in by/without/on/ignoring/group_left/group_right
    added: set[str]  # labels label_replace writes
    read: set[str]  # labels label_replace reads


def parse(expr: str) -> Parsed:
    """The series selectors of ``expr`` (metric name and label matchers), and the labels it groups by or
    rewrites. Enough PromQL for the rules and panels here: no offset/@ modifiers, no nameless selectors."""
    toks = tokens(expr)
    result = Parsed([], set(), set(), set())
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else (None, None)
        if kind == "lbrace":
            raise ValueError(f"a selector without a metric name in {expr!r}")
        if kind != "ident":
            i += 1
            continue
        if text in GROUPING:
            i += 1
            if nxt[0] == "lparen":
                i += 1
                while toks[i][0] != "rparen":
                    if toks[i][0] == "ident":
                        result.grouping.add(toks[i][1])
                    i += 1
                i += 1
            continue
        if text in AGGREGATIONS and nxt[0] == "ident" and nxt[1] in GROUPING:  # sum by (...) (...)
            i += 1
            continue
        if nxt[0] == "lparen":  # a function or an aggregation
            if text in ("label_replace", "label_join"):
                args, depth, j = [], 0, i + 1
                while True:
                    k, t = toks[j]
                    depth += {"lparen": 1, "rparen": -1}.get(k, 0)
                    if depth == 0:
                        break
                    if depth == 1 and k == "str":
                        args.append(_unquote(t))
                    j += 1
                result.added.add(args[0])
                result.read.update(args[2:3] if text == "label_replace" else args[2:])
            i += 1
            continue
        if text.lower() in KEYWORDS:
            i += 1
            continue
        selector = Selector(text)
        i += 1
        if i < len(toks) and toks[i][0] == "lbrace":
            i += 1
            while toks[i][0] != "rbrace":
                if toks[i][0] == "op" and toks[i][1] == ",":
                    i += 1
                    continue
                (lk, label), (ok, op), (vk, value) = toks[i : i + 3]
                if lk != "ident" or ok != "op" or vk != "str":
                    raise ValueError(f"cannot read the matchers of {text} in {expr!r}")
                selector.matchers.append((label, op, _unquote(value)))
                i += 3
            i += 1
        result.selectors.append(selector)
    return result


# -- Grafana ------------------------------------------------------------------------------------------------------

# Grafana's interval macros, as a fixed duration, to make a panel's query plain PromQL.
GRAFANA_MACROS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "${__rate_interval}": "1m",
    "${__interval}": "1m",
    "${__range}": "1h",
}


def grafana_to_promql(expr: str, variables: dict[str, str]) -> str:
    """``expr`` with Grafana's macros and the dashboard's ``variables`` substituted (a variable inside a quoted
    regex, ``job=~"$job"``, becomes its all-value). Raises on any other ``$name`` outside ``$1``-style
    label_replace replacements."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    for name, value in variables.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    left = re.findall(r"\$\{?[A-Za-z_]\w*", expr)
    if left:
        raise AssertionError(f"unknown Grafana variables {left} in {expr!r}")
    return expr


def dashboard_targets(dashboard: dict):
    """``(panel, target)`` for every query of every panel (rows' nested panels too)."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner, target


# -- the PrometheusRule -------------------------------------------------------------------------------------------

PROMETHEUSRULE_HEADER = """\
# The alerts of prometheus-rules.yaml as a Prometheus Operator PrometheusRule: spec.groups is exactly that file's
# groups (tests/deploy/test_monitoring.py checks it). After editing the rules, regenerate it:
#   python tests/deploy/monitoring_checks.py --write-prometheusrule
# kube-prometheus-stack selects only its own release's rules unless
# prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false (or add its `release: <name>` label here).
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def prometheusrule() -> dict:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "crawl2serve",
            "namespace": "crawl2serve",
            "labels": {"app.kubernetes.io/part-of": "crawl2serve"},
        },
        "spec": {"groups": groups},
    }


def write_prometheusrule() -> None:
    text = yaml.dump(prometheusrule(), Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
    PROMETHEUSRULE.write_text(PROMETHEUSRULE_HEADER + text)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-prometheusrule"]:
        raise SystemExit(__doc__)
    write_prometheusrule()
    print(f"wrote {PROMETHEUSRULE.relative_to(REPO)}")
