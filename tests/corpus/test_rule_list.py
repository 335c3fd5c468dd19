"""The corpus rule list has one source (``filters.Rule`` / ``filters.RULES``): names, profiles, the known_rules
check, the launchpad's override classes and the docs' rule orders derive from it or are checked against it."""

import ast
import re
import typing
from pathlib import Path

import polars as pl

from crawl2serve.assets.corpus import cleaning, filters
from crawl2serve.assets.corpus.cleaned import _RULE_OVERRIDES, LANGUAGE_RULE, REJECTED
from crawl2serve.assets.corpus.filters import RULES
from crawl2serve.assets.corpus.thresholds import DEFAULT_ORDER, FINEWEB, PROFILES, PUBLISHED, RULE_TYPES, Profile

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMES = [cls.name for cls in RULES]


def test_names_and_order_derive_from_rules():
    assert typing.get_args(filters.Rule) == RULES
    assert list(RULE_TYPES) == NAMES and list(RULE_TYPES.values()) == list(RULES)
    assert DEFAULT_ORDER == tuple(NAMES) == PUBLISHED.order
    assert set(_RULE_OVERRIDES) == set(NAMES)  # one typed override class per rule in the launchpad


def test_profile_holds_one_field_per_rule_named_as_the_rule():
    hints = typing.get_type_hints(Profile)
    assert [(name, tp) for name, tp in hints.items() if tp in RULES] == [(cls.name, cls) for cls in RULES]
    for profile in PROFILES.values():
        assert list(profile.rules) == NAMES
        assert all(rule.name == name for name, rule in profile.rules.items())


def test_known_rules_check_accepts_exactly_the_rules_and_language():
    check = next(d for d in REJECTED.distributions if d.name == "known_rules")
    assert check.measure(pl.DataFrame({"rule": [LANGUAGE_RULE, *NAMES]}), {}) == 0
    assert check.measure(pl.DataFrame({"rule": ["c4", "gopher"]}), {}) == 2


def test_no_second_list_of_every_rule_name():
    """Only filters.Rule lists every rule: no tuple/list literal of all the rule names elsewhere in the code
    (main spelled them out again in thresholds.DEFAULT_ORDER)."""
    found = []
    for folder in ("assets", "pipelines", "resources", "serving"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Tuple | ast.List | ast.Set):
                    strings = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                    if set(NAMES) <= strings:
                        found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert found == []


def _chains(text: str) -> list[tuple[str, ...]]:
    """Rule orders written as ``a -> b -> c`` (several lines joined) in a docstring."""
    joined = re.sub(r"\s*\n\s*->", " ->", text)
    return [tuple(re.split(r"\s*->\s*", m.strip())) for m in re.findall(r"normalize_text ->[^\n]*", joined)]


def test_cleaning_docstring_states_the_profiles_orders():
    chains = [tuple(re.sub(r" \(.*\)$", "", step) for step in chain) for chain in _chains(cleaning.__doc__)]
    assert chains == [
        ("normalize_text", *PUBLISHED.order, "scrub_pii"),
        ("normalize_text", *FINEWEB.order, "scrub_pii"),
    ]


def test_readme_profile_table_states_each_profiles_order():
    rows = {}
    for line in (REPO_ROOT / "README.md").read_text().splitlines():
        m = re.match(r"\| `(\w+)`[^|]*\|[^|]*\| ([^|]*) \|", line)
        if m and m.group(1) in PROFILES:
            rows[m.group(1)] = m.group(2)
    assert set(rows) == set(PROFILES)
    for name, cell in rows.items():
        profile = PROFILES[name]
        if cell.startswith("as `"):
            profile_named = cell.removeprefix("as `").removesuffix("`")
            assert PROFILES[profile_named].order == profile.order, name
        else:
            assert tuple(re.findall(r"`(\w+)`", cell)) == profile.order, name
