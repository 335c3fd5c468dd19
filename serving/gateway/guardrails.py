"""Guardrails: prompt-injection screening of inputs and leak/size checks of outputs, as verdicts.

The injection score is a heuristic, not a classifier. Each rule in :data:`INJECTION_RULES` is a
case-insensitive regex with a weight in (0, 1]; the score of a text combines the weights of the rules
that match (each counted once) as a noisy-OR::

    score = 1 - prod(1 - weight_i for every matching rule i)

so it stays in [0, 1], one strong signal suffices, and several weak ones add up. With the default
threshold 0.5 a prompt is blocked at score >= 0.5 and flagged at score >= 0.25. The weights are set so
that an explicit override ("ignore previous instructions", a forged system turn) blocks on its own,
while words with innocent uses ("developer mode", "jailbreak", a long base64 blob) only flag unless
combined with another signal. ``flag_only`` turns every block into a flag (shadow mode, to measure
false positives before enforcing).
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

ALLOW, FLAG, BLOCK = "allow", "flag", "block"


@dataclass(frozen=True)
class Verdict:
    """What to do with a text, why, and the risk score in [0, 1] (1.0 when a hard rule matched)."""

    action: str  # "allow" | "flag" | "block"
    reasons: tuple[str, ...]
    score: float

    @property
    def blocked(self) -> bool:
        return self.action == BLOCK

    @property
    def reasons_text(self) -> str:
        """The reasons ";"-joined, as the inference log stores them."""
        return ";".join(self.reasons)


@dataclass(frozen=True)
class Rule:
    """One named heuristic: a compiled regex and its weight."""

    name: str
    pattern: re.Pattern[str]
    weight: float


def _rule(name: str, pattern: str, weight: float, flags: int = 0) -> Rule:
    return Rule(name, re.compile(pattern, re.IGNORECASE | flags), weight)


INJECTION_RULES: tuple[Rule, ...] = (
    # "ignore all previous instructions", "disregard the prior rules", "forget earlier prompts"
    _rule("ignore_previous_instructions",
          r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+|your\s+)*"
          r"(?:previous|prior|above|earlier|preceding|original)\s+"
          r"(?:instructions?|prompts?|rules|directions|guidelines|context)", 0.6),
    # "disregard your system prompt", "bypass the system message"
    _rule("override_system_prompt",
          r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}?\bsystem\s+(?:prompt|message|instructions?)",
          0.6),
    # "reveal your system prompt", "print the hidden instructions", "repeat the text above verbatim"
    _rule("reveal_system_prompt",
          r"\b(?:reveal|print|show|repeat|output|display|leak|dump|tell\s+me)\b.{0,30}?"
          r"\b(?:your|the)\s+(?:system\s+prompt|initial\s+(?:prompt|instructions)|hidden\s+instructions"
          r"|(?:text|instructions)\s+above)", 0.55),
    # a forged turn of another role: chat-template control tokens or a markdown "### system:" header
    # (two or more "#": a single "# system:" is an ordinary code comment)
    _rule("role_tag_injection",
          r"<\|im_start\|>\s*system|<\|system\|>|<\|start_header_id\|>\s*system|^\s*#{2,6}\s*system\s*:",
          0.6, re.MULTILINE),
    # Llama-2 style markers: also appear in honest questions about prompt formats
    _rule("inst_markers", r"\[/?INST\]|<</?SYS>>", 0.35),
    # persona reassignment to an unrestricted role: "you are now DAN", "you are now in developer mode"
    _rule("persona_override",
          r"\byou\s+are\s+now\s+(?:an?\s+|the\s+|my\s+|in\s+)?(?:DAN\b|unfiltered|unrestricted|uncensored"
          r"|evil|jailbroken|developer\s+mode|free\s+(?:from|of)|no\s+longer\s+(?:bound|restricted|an?\s+AI))",
          0.5),
    # any other persona change ("you are now a pirate") and "from now on you will ...": weak signals
    _rule("you_are_now", r"\byou\s+are\s+now\s+(?:an?|the|my)\s+\w+", 0.25),
    _rule("from_now_on", r"\bfrom\s+now\s+on,?\s+you\s+(?:are|will|must|shall)\b", 0.2),
    _rule("unrestricted_persona",
          r"\b(?:unfiltered|unrestricted|uncensored|do\s+anything\s+now)\b"
          r"|\bwithout\s+(?:any\s+)?(?:restrictions|limitations|filters|guidelines)\b", 0.3),
    _rule("developer_mode", r"\bdeveloper\s+mode\b", 0.3),
    _rule("jailbreak", r"\bjail\s?br(?:eak|oken)", 0.3),
    # a long base64-looking blob (hidden instructions smuggled past a reader)
    _rule("base64_blob", r"[A-Za-z0-9+/]{200,}={0,2}", 0.35),
)

# Secrets that must never leave in a response. Case-sensitive: their formats are.
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("private_key", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")),
    ("aws_access_key_id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("github_token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("gateway_api_key", re.compile(r"\bc2s-[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")),
)


def injection_score(matched: Iterable[Rule]) -> float:
    """Noisy-OR of the weights of the matched rules: 1 - prod(1 - w)."""
    miss = 1.0
    for rule in matched:
        miss *= 1.0 - rule.weight
    return 1.0 - miss


class Guardrails:
    """Screens prompts and checks outputs; configured once per gateway."""

    def __init__(self, blocked_patterns: Iterable[str] = (), injection_threshold: float = 0.5,
                 max_output_chars: int = 20_000, flag_only: bool = False):
        if not 0 < injection_threshold <= 1:
            raise ValueError(f"injection_threshold must be in (0, 1], got {injection_threshold}")
        if max_output_chars < 1:
            raise ValueError(f"max_output_chars must be >= 1, got {max_output_chars}")
        self.blocked = [(p, _compile_blocked(p)) for p in blocked_patterns]
        self.injection_threshold = injection_threshold
        self.max_output_chars = max_output_chars
        self.flag_only = flag_only

    def screen_prompt(self, text: str) -> Verdict:
        """Block a likely prompt injection or a blocked pattern; flag a suspicious prompt."""
        matched = [r for r in INJECTION_RULES if r.pattern.search(text)]
        score = injection_score(matched)
        reasons = [f"injection:{r.name}" for r in matched]
        hard = self._blocked_reasons(text)
        if hard:
            return self._verdict(BLOCK, hard + reasons, 1.0)
        if score >= self.injection_threshold:
            return self._verdict(BLOCK, reasons, score)
        if score >= self.injection_threshold / 2:
            return self._verdict(FLAG, reasons, score)
        return Verdict(ALLOW, (), score)

    def check_output(self, text: str) -> Verdict:
        """Block leaked secrets and blocked patterns; flag an output over ``max_output_chars``."""
        hard = self._blocked_reasons(text)
        hard += [f"secret:{name}" for name, pattern in SECRET_PATTERNS if pattern.search(text)]
        soft = ["output_too_long"] if len(text) > self.max_output_chars else []
        if hard:
            return self._verdict(BLOCK, hard + soft, 1.0)
        if soft:
            return self._verdict(FLAG, soft, 0.0)
        return Verdict(ALLOW, (), 0.0)

    def _blocked_reasons(self, text: str) -> list[str]:
        return [f"blocked_pattern:{p}" for p, rx in self.blocked if rx.search(text)]

    def _verdict(self, action: str, reasons: list[str], score: float) -> Verdict:
        if action == BLOCK and self.flag_only:
            action = FLAG
        return Verdict(action, tuple(reasons), score)


def _compile_blocked(pattern: str) -> re.Pattern[str]:
    """A configured blocked pattern, case-insensitive; a bad regex is a ValueError naming it."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"blocked pattern must be a non-empty string, got {pattern!r}")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise ValueError(f"invalid blocked pattern {pattern!r}: {e}") from e
