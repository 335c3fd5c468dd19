"""One document through the corpus rules: normalize, filter, scrub (framework-free).

``clean_document`` runs ``normalize_text``, then the profile's rules in the profile's ``order``, then
``scrub_pii``. The default order (``thresholds.DEFAULT_ORDER``, the order of ``filters.RULES``; profiles
``published`` and ``documentation``)::

    normalize_text -> length_bounds -> c4_quality (line filter, then document rules)
    -> gopher_repetition -> gopher_quality -> fineweb_quality -> scrub_pii

and FineWeb's (profile ``fineweb``, as datatrove's FineWeb pipeline runs them)::

    normalize_text -> gopher_repetition -> gopher_quality -> c4_quality -> fineweb_quality -> scrub_pii

The first failing rule drops the document; later rules are not evaluated. Rules before C4 read the
normalized text; C4 removes lines, and the rules after it read the text C4 kept. Rules share one
:class:`TextStats` per text, so a text is tokenized once. PII scrubbing runs last so that the rules
judge the real text (a placeholder such as ``<EMAIL>`` would change word, symbol and line statistics), and
only kept documents pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crawl2serve.assets.corpus.filters import C4Quality, normalize_text, quality_score, scrub_pii
from crawl2serve.assets.corpus.languages import profile_for_language
from crawl2serve.assets.corpus.text_stats import TextStats
from crawl2serve.assets.corpus.thresholds import Profile


@dataclass(frozen=True)
class CleanResult:
    """Outcome for one document.

    ``text``: the cleaned, PII-scrubbed text, or None when dropped. ``dropped_by``/``reason``: the
    failing rule's name and reason (None when kept). ``quality``: :func:`quality_score` of the
    final text, or of the normalized input when dropped. ``pii``: replacements per kind (empty when
    dropped: nothing was scrubbed). ``flags``: rule name -> passed, for every rule evaluated (rules
    after the dropping one are absent). ``lines_removed``: lines the C4 line filter removed.
    ``words``: words of the final text as the rules count them (CJK and Thai segmented; 0 when
    dropped).
    """

    text: str | None
    dropped_by: str | None
    reason: str | None
    quality: float
    pii: dict[str, int] = field(default_factory=dict)
    flags: dict[str, bool] = field(default_factory=dict)
    lines_removed: int = 0
    words: int = 0


def clean_document(text: str, profile: Profile, language: str | None = None) -> CleanResult:
    """Normalize ``text`` and run it through ``profile``'s rules in ``profile.order``; see the module doc.

    ``language`` (a CLD2 code, the document's detected language) selects that language's stop words
    and thresholds (:func:`assets.corpus.languages.profile_for_language`); None, English, ``unknown``
    and languages outside the table run ``profile`` as it is."""
    profile = profile_for_language(profile, language)
    normalized = normalize_text(text, keep_indentation=profile.keep_indentation)
    normalized_stats = TextStats(normalized)
    stats = normalized_stats
    flags: dict[str, bool] = {}
    lines_removed = 0
    for rule in profile.pipeline:
        if isinstance(rule, C4Quality):
            stats, lines_removed, reason = rule.apply(stats)
        else:
            reason = rule.check(stats)
        flags[rule.name] = reason is None
        if reason is not None:
            return CleanResult(None, rule.name, reason, quality_score(normalized_stats), {}, flags, lines_removed)

    scrubbed, pii = scrub_pii(stats.text)
    final_stats = stats if not any(pii.values()) else TextStats(scrubbed)
    return CleanResult(scrubbed, None, None, quality_score(final_stats), pii, flags, lines_removed, final_stats.n_words)
