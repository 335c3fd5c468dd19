"""Named threshold profiles for the corpus rules, and typed overrides (framework-free).

A :class:`Profile` holds one instance of every rule, the order they run in, and the normalization
setting. Three profiles, each for one purpose:

- ``FINEWEB`` (``fineweb``): FineWeb as datatrove 0.10.1 implements it (``examples/fineweb.py``, after
  extraction and language id): ``GopherRepetitionFilter() -> GopherQualityFilter() ->
  C4QualityFilter(filter_no_terminal_punct=False) -> FineWebQualityFilter()``: that rule order, datatrove's
  thresholds (the published ones), datatrove's measures (``measure="datatrove"``: its English word tokens,
  punctuation counted as words, its line splitting and denominators) and its line-end characters. No
  length gate (datatrove has none). Use it to reproduce FineWeb's decisions on a web crawl. Measured on
  real pages (``bench/bench_datatrove.py``, README): the same keep/drop decision as datatrove on the same
  extracted text for all but the differences the README lists, each with its rule.
- ``PUBLISHED`` (``published``, the default of ``clean_documents``): every rule at its published threshold
  (Gopher, C4 with its terminal-punctuation rule, FineWeb) with crawl2serve's measures (regex words,
  stripped lines, word-character shares) and crawl2serve's order: the length gate, then C4's line filter
  first, so Gopher and FineWeb judge only the lines C4 kept (C4's own paper order: C4 cleaned pages that
  Gopher never saw). It is not FineWeb: on real pages it keeps far more than datatrove's FineWeb (README).
- ``DOCUMENTATION`` (``documentation``): for software-documentation pages (the embedded crawl is Python's
  pydoc server), where code lines, signatures and repeated per-entry listings trip rules written for web
  prose. FIELD-NOTES: Gopher quality alone drops about half of English documentation pages (datatrove's
  tokenizer counts punctuation tokens as words). Measured here on the main-content text of 206 pydoc
  pages of the standard library: ``PUBLISHED`` keeps 42 (C4 strips every code line, then repetition and
  FineWeb's 1% duplicate-line budget drop most of the rest), ``DOCUMENTATION`` keeps 155; the values below
  sit near the 85th-90th percentile of those pages. Each deviation from ``PUBLISHED`` carries a one-line
  reason. The embedded run config selects it.

Overrides (:func:`profile_with_overrides`) use ``"rule_name.field"`` keys (``"gopher_quality.min_doc_words"``)
plus ``"keep_indentation"`` and ``"order"``, and keep every value's type: a bool stays a bool, a list
becomes the tuple the field holds (``[[2, 0.3]]`` -> ``((2, 0.3),)``); a value of the wrong type raises
``ValueError`` naming the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from crawl2serve.assets.corpus.en_words import DATATROVE_TERMINALS
from crawl2serve.assets.corpus.filters import (
    RULES,
    C4Quality,
    FineWebQuality,
    GopherQuality,
    GopherRepetition,
    LengthBounds,
)
from crawl2serve.assets.corpus.filters import Rule as RuleType

RULE_TYPES: dict[str, type[RuleType]] = {cls.name: cls for cls in RULES}  # name -> class, in the default order
DEFAULT_ORDER: tuple[str, ...] = tuple(RULE_TYPES)


@dataclass(frozen=True)
class Profile:
    """One instance of each rule (attribute name == the rule's ``name``), the order the rules run in
    (names; a rule left out does not run), and normalization."""

    name: str
    length_bounds: LengthBounds = field(default_factory=LengthBounds)
    c4_quality: C4Quality = field(default_factory=C4Quality)
    gopher_repetition: GopherRepetition = field(default_factory=GopherRepetition)
    gopher_quality: GopherQuality = field(default_factory=GopherQuality)
    fineweb_quality: FineWebQuality = field(default_factory=FineWebQuality)
    keep_indentation: bool = False  # passed to normalize_text
    order: tuple[str, ...] = DEFAULT_ORDER

    def __post_init__(self) -> None:
        _check_order("order", self.order)

    @property
    def rules(self) -> dict[str, RuleType]:
        """Rule name -> rule instance, every rule (in ``DEFAULT_ORDER``)."""
        return {name: getattr(self, name) for name in DEFAULT_ORDER}

    @property
    def pipeline(self) -> tuple[RuleType, ...]:
        """The rules that run, in ``order``."""
        return tuple(getattr(self, name) for name in self.order)


def _rule_fields() -> dict[str, type]:
    """Profile's fields that hold a rule: field name -> the rule's class."""
    return {name: tp for name, tp in typing.get_type_hints(Profile).items() if tp in RULES}


# Profile spells its rule fields out (typed attributes); they must be filters.RULES, each named as its rule's
# name, in order: a rule added to RULES without its field here (or the reverse) fails at import.
if [(name, tp.name) for name, tp in _rule_fields().items()] != [(cls.name, cls.name) for cls in RULES]:
    raise TypeError(f"Profile's rule fields {list(_rule_fields())} are not filters.RULES {list(DEFAULT_ORDER)}")


def _check_order(key: str, order: tuple[str, ...]) -> None:
    unknown = [n for n in order if n not in RULE_TYPES]
    if unknown or len(set(order)) != len(order):
        raise ValueError(f"{key!r}: expected distinct rule names from {list(DEFAULT_ORDER)}, got {list(order)}")


FINEWEB = Profile(
    name="fineweb",
    order=("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"),
    gopher_repetition=GopherRepetition(measure="datatrove"),
    gopher_quality=GopherQuality(measure="datatrove"),
    c4_quality=C4Quality(measure="datatrove", filter_no_terminal_punct=False),  # FineWeb turns this C4 rule off
    fineweb_quality=FineWebQuality(measure="datatrove", line_end_chars=DATATROVE_TERMINALS),
)

PUBLISHED = Profile(name="published")

DOCUMENTATION = Profile(
    name="documentation",
    keep_indentation=True,  # Python code indentation is syntax; collapsing it corrupts every sample
    c4_quality=C4Quality(
        filter_no_terminal_punct=False,  # signatures, headings and code lines never end in . ! ? " '
        min_words_per_line=1,  # one-token lines (`abort()`, `Parameters`, `}`) are structure in API pages
        remove_citations=False,  # the citation pattern also deletes `[0]` and `[]` from code
        filter_curly_bracket=False,  # braces are ordinary in code samples (dicts, sets, f-strings, JSON)
        filter_javascript=False,  # a subject in software docs ("JavaScript Object Notation"), not a banner
    ),
    gopher_repetition=GopherRepetition(
        dup_para_frac=0.5,  # inherited and overridden members repeat their docstring paragraphs verbatim
        dup_para_char_frac=0.5,  # ... pydoc stdlib pages: 1 in 10 is above the published 0.2 (p95 0.31)
        dup_line_frac=0.5,  # API pages repeat per-entry lines (`Methods defined here:`, inherited members)
        dup_line_char_frac=0.5,  # ... and their characters; pydoc stdlib pages: median 0.07, p90 0.53
        # pydoc lists every class's inherited members verbatim: median page 0.19 of word chars in
        # repeated 5-grams (p85 0.52); keep the published shape (longer n-grams, lower share), shifted.
        dup_n_grams=((5, 0.5), (6, 0.49), (7, 0.48), (8, 0.47), (9, 0.46), (10, 0.45)),
    ),
    gopher_quality=GopherQuality(
        max_non_alpha_words_ratio=0.6,  # code tokens (`=`, `->`, `(self,`, numbers) hold no letters
    ),
    fineweb_quality=FineWebQuality(
        line_punct_thr=0.05,  # most lines are signatures or code, ending in `)` `:` or nothing
        short_line_thr=0.8,  # code and signature lines are mostly under 30 characters
        char_duplicates_ratio=0.5,  # same repeated member lines as dup_line_char_frac above
        new_line_ratio=0.4,  # one signature or statement per line: few words per newline
    ),
)

PROFILES: dict[str, Profile] = {"published": PUBLISHED, "fineweb": FINEWEB, "documentation": DOCUMENTATION}


# ----- typed overrides ---------------------------------------------------------------------------------
def field_types(rule_name: str) -> dict[str, Any]:
    """Field name -> resolved type annotation of one rule (``int``, ``float``, ``bool``, a ``Literal``,
    ``tuple[str, ...]``, ``tuple[tuple[int, float], ...]``)."""
    cls = RULE_TYPES[rule_name]
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


PROFILE_FIELD_TYPES: dict[str, Any] = {"keep_indentation": bool, "order": tuple[str, ...]}


def describe_type(tp: Any) -> str:
    """The type in words, for error messages and config descriptions."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "a bool (true/false)"
    if tp is int:
        return "an int"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"a list of {describe_type(args[0])}"
    if origin is tuple:
        return "a list [" + ", ".join(describe_type(a) for a in args) + "]"
    return str(tp)


def coerce(key: str, tp: Any, value: object) -> Any:
    """``value`` as the type ``tp`` (a list becomes a tuple; an int field takes an integral float, a float
    field an int; a bool is only a bool), or ``ValueError`` naming ``key`` and the expected type."""

    def fail() -> ValueError:
        return ValueError(f"override {key!r}: expected {describe_type(tp)}, got {value!r}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise fail()
        return value
    if isinstance(value, bool):  # True is an int to Python, never a number here
        raise fail()
    if tp is int:
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        raise fail()
    if tp is float:
        if isinstance(value, int | float):
            return float(value)
        raise fail()
    if tp is str:
        if not isinstance(value, str):
            raise fail()
        return value
    if origin is Literal:
        if value not in args:
            raise fail()
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise fail()
        if len(args) == 2 and args[1] is Ellipsis:
            items = [coerce(f"{key}[{i}]", args[0], v) for i, v in enumerate(value)]
        else:
            if len(value) != len(args):
                raise fail()
            items = [coerce(f"{key}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value))]
        return tuple(items)
    raise ValueError(f"override {key!r}: a {tp} field cannot be overridden")


def profile_with_overrides(name: str, overrides: Mapping[str, object] | None = None) -> Profile:
    """The profile ``name`` with ``overrides`` applied (see the module docstring).

    An unknown profile, rule or field, or a value of the wrong type, raises ``ValueError`` naming it.
    """
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}") from None
    top: dict[str, Any] = {}
    changes: dict[str, dict[str, Any]] = {}
    for key, value in (overrides or {}).items():
        if key in PROFILE_FIELD_TYPES:
            top[key] = coerce(key, PROFILE_FIELD_TYPES[key], value)
            if key == "order":
                _check_order(key, top[key])
            continue
        rule_name, _, field_name = key.partition(".")
        types = field_types(rule_name) if rule_name in RULE_TYPES else {}
        if field_name not in types:
            raise ValueError(
                f"unknown override key {key!r}; expected 'rule.field' with rule in {sorted(RULE_TYPES)}, "
                f"or one of {sorted(PROFILE_FIELD_TYPES)}"
            )
        changes.setdefault(rule_name, {})[field_name] = coerce(key, types[field_name], value)
    replaced: dict[str, Any] = {r: dataclasses.replace(getattr(profile, r), **f) for r, f in changes.items()}
    return dataclasses.replace(profile, **top, **replaced) if (replaced or top) else profile
