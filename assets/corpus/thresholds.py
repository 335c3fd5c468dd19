"""Named threshold profiles for the corpus rules, and overrides from run config (framework-free).

A :class:`Profile` holds one instance of every rule plus the normalization setting. Two profiles:

- ``PUBLISHED``: every rule at its published default (datatrove's Gopher, C4 and FineWeb values).
- ``DOCUMENTATION``: for software-documentation pages (the embedded crawl is Python's pydoc server),
  where code lines, signatures and repeated per-entry listings trip rules written for web prose.
  FIELD-NOTES: Gopher quality alone drops about half of English documentation pages (datatrove's
  tokenizer counts punctuation tokens as words). Measured here on the main-content text of 206
  pydoc pages of the standard library: ``PUBLISHED`` keeps 42 (C4 strips every code line, then
  repetition and FineWeb's 1% duplicate-line budget drop most of the rest), ``DOCUMENTATION``
  keeps 155; the values below sit near the 85th-90th percentile of those pages. Each deviation
  from ``PUBLISHED`` carries a one-line reason.

Overrides use ``"rule_name.field"`` keys, e.g. ``{"gopher_quality.min_doc_words": 20}``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from assets.corpus.filters import C4Quality, FineWebQuality, GopherQuality, GopherRepetition, LengthBounds

RuleType = LengthBounds | C4Quality | GopherRepetition | GopherQuality | FineWebQuality


@dataclass(frozen=True)
class Profile:
    """One instance of each rule (attribute name == the rule's ``name``) plus normalization."""

    name: str
    length_bounds: LengthBounds = field(default_factory=LengthBounds)
    c4_quality: C4Quality = field(default_factory=C4Quality)
    gopher_repetition: GopherRepetition = field(default_factory=GopherRepetition)
    gopher_quality: GopherQuality = field(default_factory=GopherQuality)
    fineweb_quality: FineWebQuality = field(default_factory=FineWebQuality)
    keep_indentation: bool = False  # passed to normalize_text

    @property
    def rules(self) -> dict[str, RuleType]:
        """Rule name -> rule instance."""
        rules = (self.length_bounds, self.c4_quality, self.gopher_repetition, self.gopher_quality, self.fineweb_quality)
        return {r.name: r for r in rules}


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

PROFILES: dict[str, Profile] = {"published": PUBLISHED, "documentation": DOCUMENTATION}


def _coerce(key: str, declared: str, value: object) -> Any:
    """``value`` converted to the field's declared type (annotation string), or ValueError."""
    if declared == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"override {key!r}: expected a bool, got {value!r}")
        return value
    if isinstance(value, bool):
        raise ValueError(f"override {key!r}: expected {declared}, got {value!r}")
    if declared == "int":
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        raise ValueError(f"override {key!r}: expected an int, got {value!r}")
    if declared == "float":
        if isinstance(value, int | float):
            return float(value)
        raise ValueError(f"override {key!r}: expected a number, got {value!r}")
    if declared.startswith("tuple"):
        if isinstance(value, list | tuple):
            return tuple(tuple(v) if isinstance(v, list) else v for v in value)
        raise ValueError(f"override {key!r}: expected a list, got {value!r}")
    raise ValueError(f"override {key!r}: a {declared} field cannot be overridden")


def profile_with_overrides(name: str, overrides: dict[str, float | int] | None = None) -> Profile:
    """The profile ``name`` with ``overrides`` applied.

    Keys are ``"rule_name.field"`` (``"gopher_quality.min_doc_words"``), or ``"keep_indentation"``.
    Values are checked against the field's type (an int field takes an integral float; a float
    field takes an int). An unknown profile, rule or field, or a value of the wrong type, raises
    ``ValueError`` naming it.
    """
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}") from None
    changes: dict[str, dict[str, Any]] = {}
    for key, value in (overrides or {}).items():
        if key == "keep_indentation":
            profile = dataclasses.replace(profile, keep_indentation=_coerce(key, "bool", value))
            continue
        rule_name, _, field_name = key.partition(".")
        rule = profile.rules.get(rule_name)
        declared = {f.name: str(f.type) for f in dataclasses.fields(rule)} if rule is not None else {}
        if field_name not in declared:
            raise ValueError(
                f"unknown override key {key!r}; expected 'rule.field' with rule in {sorted(profile.rules)}"
            )
        changes.setdefault(rule_name, {})[field_name] = _coerce(key, declared[field_name], value)
    replaced: dict[str, Any] = {r: dataclasses.replace(profile.rules[r], **fields) for r, fields in changes.items()}
    return dataclasses.replace(profile, **replaced) if replaced else profile
