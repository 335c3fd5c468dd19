"""Guardrails: prompt-injection screening of inputs and leak/size checks of outputs, as verdicts.

How a prompt is screened
------------------------
1. :func:`serving.gateway.normalize.views` undoes the cheap disguises: invisible characters removed, NFKC
   (fullwidth and mathematical letters), Cyrillic/Greek look-alikes mapped to Latin, and a second view
   with leetspeak read as letters and spaced-out words ("i g n o r e") joined, plus the decodings of
   base64, hex, URL-escape, tag-character and (when the prompt says "rot13") ROT13 runs, bounded.
2. Every rule of :data:`RULE_TABLE` (rule name -> weight -> patterns per language; 18 languages for the
   "ignore previous instructions", "reveal the system prompt" and "you are now unrestricted" families,
   English for the paraphrase rules) is matched against each view; a rule counts once however many
   views or rows match.
3. The score combines the weights of the matching rules as a noisy-OR::

    score = 1 - prod(1 - weight_i for every matching rule i)

   so it stays in [0, 1], one strong signal suffices, and several weak ones add up. With the default
   threshold 0.5 a prompt is blocked at score >= 0.5 and flagged at score >= 0.25. An explicit override
   (ignore previous instructions, reveal your system prompt, a forged system turn) blocks on its own;
   words with innocent uses ("developer mode", "jailbreak", a long base64 blob, "you are now a ...",
   "print the system prompt") only flag unless another signal joins them. ``flag_only`` turns every
   block into a flag (shadow mode, to measure false positives before enforcing). Configured
   ``blocked_patterns`` are matched against the prompt and its views too.

What it measured (tests/serving/test_guardrail_probes.py)
---------------------------------------------------------
* Probe set (tests/serving/guardrail_probes.yaml, written before these rules): 72/72 attacks (100%)
  flagged or blocked, 1/65 benign prompts (1.5%) blocked and 5/65 (7.7%) flagged. Main's rules: 3/72
  (4.2%) and 4/65 (6.2%) blocked.
* Held-out probes (guardrail_probes_holdout.yaml, written after the rules and not used to change them):
  24/35 attacks (68.6%) flagged or blocked, 1/32 benign (3.1%) blocked, 2/32 (6.2%) flagged. The
  misses are mostly English paraphrases (9 of 12 missed). Main's rules: 0/35, and 2/32 benign blocked.
* 12,054 docstring paragraphs of the standard library: none blocked, none flagged (main: none either).
* Time (bench/bench_guardrails.py, one core of a shared machine, median of 7): 0.15 ms for a short
  prompt (main: 0.012 ms); 1 to 18 ms for a 32,000-character prompt, 36 ms for one written to pass
  every anchor of every rule (main: 2 to 9 ms, but 3.1 s on 32,000 newlines: its "### system:" rule
  backtracks quadratically; this version takes 5 ms there). The gaps in the patterns are bounded and
  every pattern is scanned from a literal word, so none backtracks catastrophically.

What it cannot do
-----------------
It is a heuristic tripwire, not a classifier, and no substitute for keeping secrets out of prompts and
tools out of reach. It misses paraphrases that use none of its words ("Before we start, forget every
rule you were given" got through the held-out set), languages and scripts outside its table, meaning
spread over several chat turns or documents, encodings other than the ones above (or nested more than
two levels, or past the decoding budget of 16 runs), and anyone who reads this file. It also blocks an
honest sentence that quotes an attack ("write a test that our bot refuses 'ignore previous
instructions'"). Screening outputs is limited to secrets, blocked patterns and length.
"""

import bisect
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from .normalize import map_confusables, views
from .patterns import branch_literal_source, pattern_anchors, split_branches

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
class Part:
    """One compiled pattern of a rule: its script ("latin" or a value of LANGUAGE_SCRIPT), the literal
    anchors one of which any match contains (None: always tried), whether they start a word, the regex."""

    script: str
    anchors: tuple[str, ...] | None
    word_start: bool
    regex: re.Pattern[str]


@dataclass(frozen=True)
class Rule:
    """One named heuristic: its weight and its compiled patterns (``parts``, one or more per row of the
    table). ``pattern`` is all the rows as one alternation, for callers that want a single regex."""

    name: str
    pattern: re.Pattern[str]
    weight: float
    parts: tuple[Part, ...] = ()
    languages: tuple[str, ...] = ()
    surface: bool = False  # matched on the prompt as written (normalized) only, not on decoded views

    def search(self, text: str, index: "TextIndex | None" = None) -> bool:
        """Whether the rule matches ``text`` (lowercased). A short text is scanned with :attr:`pattern`. In a
        longer one, a pattern of a script other than Latin is tried only if the text has that script, and
        a pattern only when one of its anchors occurs in the text: looking a word up in the text's sorted
        words is much cheaper than a regex scan of a 32,000-character prompt. ``index`` (of ``text``)
        caches those look-ups across rules."""
        if not self.parts or len(text) < SHORT_TEXT:
            return self.pattern.search(text) is not None
        return self.search_parts(text, index)

    def search_parts(self, text: str, index: "TextIndex | None" = None) -> bool:
        """:meth:`search` through the gated parts, whatever the length (the same answer as :attr:`pattern`)."""
        index = TextIndex(text) if index is None else index
        for part in self.parts:
            if part.script != "latin" and part.script not in index.scripts:
                continue
            if part.anchors is not None and not any(index.has(a, part.word_start) for a in part.anchors):
                continue
            if part.regex.search(text):
                return True
        return False


SHORT_TEXT = 400  # characters: below, one scan per rule costs less than the look-ups (bench/bench_guardrails.py)
_WORD = re.compile(r"\w+")


class TextIndex:
    """What the anchor gates ask of one lowercased text, computed once: its scripts, its sorted words."""

    def __init__(self, text: str):
        self.text = text
        self._scripts: frozenset[str] | None = None
        self._words: list[str] | None = None
        self._seen: dict[tuple[str, bool], bool] = {}

    @property
    def scripts(self) -> frozenset[str]:
        if self._scripts is None:
            self._scripts = _scripts(self.text)
        return self._scripts

    @property
    def words(self) -> list[str]:
        """The text's distinct words, sorted."""
        if self._words is None:
            self._words = sorted(set(_WORD.findall(self.text)))
        return self._words

    def starts_a_word(self, prefix: str) -> bool:
        """Whether a word of the text starts with ``prefix`` (itself a word)."""
        words = self.words
        i = bisect.bisect_left(words, prefix)
        return i < len(words) and words[i].startswith(prefix)

    def has(self, anchor: str, word_start: bool) -> bool:
        """Whether ``anchor`` occurs in the text (at the start of a word if ``word_start``)."""
        key = (anchor, word_start)
        hit = self._seen.get(key)
        if hit is None:
            hit = self.starts_a_word(anchor) if word_start and _WORD.fullmatch(anchor) else anchor in self.text
            self._seen[key] = hit
        return hit


# -- the rule table -------------------------------------------------------------------------------------
#
# RULE_TABLE: rule name -> (weight, {language: [patterns]}). Patterns are matched against the views of a
# prompt (serving/gateway/normalize.py: NFKC, no invisible characters, look-alikes mapped to Latin, ...),
# lowercased, so they are written in lowercase (checked when they are compiled). Adding a language is
# adding rows; a row is a pattern, or (pattern, anchors) when its anchors cannot be read off it.
# Words that start a pattern are anchored with \b in the Latin-script languages; the CJK, Arabic and
# Devanagari rows are not (no spaces between words, or attached prefixes such as Arabic و "and").
#
# Gaps between the key words are bounded ([^.!?\n]{0,40}?, (?:\w+\s+){0,3}) and stay inside a sentence,
# so every pattern is linear in the length of the text and a 32,000-character prompt screens in
# milliseconds.

# English vocabulary shared by several rules
_DISMISS = (
    r"(?:ignore|ignoring|disregard|forget|override|overrule|bypass|skip|discard|drop|abandon|neglect"
    r"|scrap|erase|nullify|(?:set|put|cast|push|lay)\s+aside|throw\s+(?:out|away)"
    r"|pay\s+no\s+(?:attention|heed|mind)\s+to|take\s+no\s+notice\s+of|no\s+longer\s+(?:follow|obey)"
    r"|(?<!\bi\s)(?<!\bwe\s)(?:do\s+not|don'?t)\s+(?:follow|obey|adhere\s+to|listen\s+to|comply\s+with)"
    r"|(?:stop|quit)\s+(?:following|obeying|adhering\s+to|listening\s+to|complying\s+with))"
)
_DETS = r"(?:(?:all|any|every|each|the|your|my|these|those|of|that|such|its|their|our|previously)\s+)"
_PREV = (
    r"(?:previous|prior|above|earlier|preceding|foregoing|original|initial|old|former|past|aforementioned"
    r"|above-?mentioned)"
)
_NOUN = (
    r"(?:instructions?|prompts?|rules|directions|directives?|guidelines|guidance|commands|orders"
    r"|programming|constraints|restrictions|polic(?:y|ies)|system\s+(?:prompts?|messages?)|conditioning)"
)
_REVEAL = (
    r"(?:reveal|print|show|display|output|repeat|recite|leak|dump|tell\s+me|give\s+me|share|expose"
    r"|disclose|divulge|write\s+(?:out|down)|type\s+out|spell\s+out|echo|return|list|quote|copy|paste"
    r"|reproduce|translate|summari[sz]e|reply\s+with|respond\s+with|send\s+me|what\s+(?:is|are|was|were)"
    r"|what's)"
)
_ADJ = (
    r"(?:(?:full|entire|complete|exact|original|initial|secret|hidden|internal|confidential|first|real"
    r"|actual|underlying|whole|verbatim)\s+)"
)
_GAP = r"[^.!?\n]{0,40}?"  # a short gap inside one sentence
_YOU_WERE_TOLD = (
    r"(?:you(?:'ve|'d|\s+have|\s+had|\s+were|\s+was)?\s+(?:been\s+)?(?:told|given|instructed|taught"
    r"|programmed|trained|shown|fed|configured|initiali[sz]ed)|you\s+(?:received|got))"
)

RULE_TABLE: dict[str, tuple[float, dict[str, list[str | tuple[str, tuple[str, ...]]]]]] = {
    # "ignore all previous instructions", "disregard the prior rules", "forget earlier prompts"
    "ignore_previous_instructions": (
        0.6,
        {
            "en": [
                rf"\b{_DISMISS}\s+{_DETS}{{0,4}}?{_PREV}\s+(?:[\w-]+\s+){{0,2}}?{_NOUN}\b",
                (
                    rf"\b{_DISMISS}\s+{_DETS}{{0,3}}?{_NOUN}\s+(?:(?:given|provided|written|stated|listed|shown|set)\s+)?"
                    r"(?:above|before|earlier|previously|so\s+far|until\s+now|up\s+to\s+(?:now|here|this\s+point))\b"
                ),
                # "pay no attention to what you were told before", "set aside everything your developers told you"
                (
                    rf"\b{_DISMISS}\s+(?:(?:all|any|of|about)\s+){{0,2}}(?:what|everything|anything|all|whatever)\s+"
                    rf"(?:that\s+)?(?:{_YOU_WERE_TOLD}\s+(?:[\w-]+\s+){{0,3}}?(?:before|earlier|previously|so\s+far"
                    r"|until\s+now|at\s+the\s+(?:start|beginning)|in\s+(?:this|the|your)\s+(?:conversation|chat|prompt))"
                    r"|(?:your\s+|the\s+)?(?:developers?|creators?|makers?|admins?|administrators?|operators?|owners?"
                    r"|programmers?|trainers?|company|openai|anthropic|they)\s+(?:has\s+|have\s+|had\s+)?(?:told|instructed"
                    r"|taught|programmed|asked|trained)\s+you)"
                ),
            ],
            "de": [
                (
                    r"\b(?:ignorier|vergiss|vergesst|vergessen\s+sie|missachte|verwirf|überseh)\w*\s+(?:\w+\s+){0,3}?"
                    r"(?:vorherig|vorig|bisherig|obig|früher|vorangegangen|vorangehend|ursprünglich|alten?\b)\w*\s+"
                    r"(?:anweisung|instruktion|befehl|regel|vorgabe|richtlinie|anordnung|prompt)"
                )
            ],
            "fr": [
                (
                    r"\b(?:ignore|oublie|néglige|ne\s+tiens?\s+(?:pas\s+)?compte\s+d|fais\s+abstraction\s+d)\w*\s+"
                    r"(?:\w+\s+){0,3}?(?:instructions?|consignes?|directives?|règles|ordres|indications)\s+"
                    r"(?:précédentes?|antérieures?|ci-dessus|d'avant|initiales?|originales?|préalables?|données)"
                ),
                (
                    r"\b(?:ignore|oublie)\w*\s+(?:\w+\s+){0,2}?(?:précédentes?|anciennes?)\s+"
                    r"(?:instructions?|consignes?|directives?|règles)"
                ),
            ],
            "es": [
                (
                    r"\b(?:ignora|ignore|ignorad|ignoren|olvida|olvide|olvidad|olviden|descarta|descarte|omite|omita"
                    r"|haz\s+caso\s+omiso\s+(?:a|de))\w*\s+(?:\w+\s+){0,3}?(?:instrucciones|indicaciones|reglas|órdenes"
                    r"|directrices|normas|directivas)\s+(?:anteriores|previas|de\s+arriba|originales|iniciales"
                    r"|precedentes|recibidas)"
                )
            ],
            "it": [
                (
                    r"\b(?:ignora|ignorate|ignori|dimentica|dimenticate|dimentichi|tralascia|trascura|scorda)\w*\s+"
                    r"(?:\w+\s+){0,3}?(?:istruzioni|indicazioni|regole|direttive|ordini|consegne)\s+(?:precedenti"
                    r"|anteriori|di\s+prima|sopra|iniziali|originali|ricevute)"
                )
            ],
            "pt": [
                (
                    r"\b(?:ignore|ignora|ignorem|esqueça|esqueca|esquece|esqueçam|desconsidere|desconsidera|descarte)\w*"
                    r"\s+(?:\w+\s+){0,3}?(?:instruções|instrucoes|regras|orientações|orientacoes|diretrizes|ordens"
                    r"|comandos)\s+(?:anteriores|prévias|previas|acima|iniciais|originais|recebidas)"
                )
            ],
            "nl": [
                (
                    r"\b(?:negeer|vergeet|negeren|vergeten|veronachtzaam)\s+(?:\w+\s+){0,3}?(?:vorige|eerdere"
                    r"|voorgaande|bovenstaande|oorspronkelijke|oude)\s+(?:instructies|aanwijzingen|regels|opdrachten"
                    r"|richtlijnen|prompts?)"
                )
            ],
            "sv": [
                (
                    r"\b(?:ignorera|glöm|strunta\s+i|bortse\s+från)\s+(?:\w+\s+){0,3}?(?:tidigare|föregående"
                    r"|ovanstående|ursprungliga|gamla)\s+(?:instruktion|regl|anvisning|direktiv|order)\w*"
                )
            ],
            "pl": [
                (
                    r"\b(?:zignoruj|ignoruj|zapomnij(?:\s+o)?|pomiń|olej|nie\s+zważaj\s+na)\s+(?:\w+\s+){0,3}?"
                    r"(?:poprzedni|wcześniejsz|powyższ|dotychczasow|pierwotn)\w*\s+(?:instrukcj|polece|zasad|reguł"
                    r"|wytyczn|komend)\w*"
                )
            ],
            "tr": [
                (
                    r"\b(?:önceki|yukarıdaki|daha\s+önceki|ilk|orijinal|eski)\s+(?:\w+\s+){0,2}?(?:talimat|komut|kural"
                    r"|yönerge|direktif|istem)\w*\s+(?:\w+\s+){0,2}?(?:yok\s+say|görmezden\s+gel|unut|dikkate\s+alma"
                    r"|göz\s+ardı\s+et|umursama|boşver)"
                )
            ],
            "id": [
                (
                    r"\b(?:abaikan|lupakan|acuhkan)\s+(?:\w+\s+){0,3}?(?:instruksi|perintah|aturan|petunjuk|arahan)"
                    r"\s+(?:sebelumnya|terdahulu|di\s+atas|awal|asli)"
                )
            ],
            "vi": [
                (
                    r"(?:bỏ\s+qua|phớt\s+lờ|lờ\s+đi|quên\s+(?:đi\s+)?|bỏ\s+ngoài\s+tai|không\s+cần\s+tuân\s+theo)\s+"
                    r"(?:\S+\s+){0,4}?(?:hướng\s+dẫn|chỉ\s+dẫn|chỉ\s+thị|quy\s+tắc|mệnh\s+lệnh|lệnh|yêu\s+cầu)\s+"
                    r"(?:\S+\s+)?(?:trước|ban\s+đầu|ở\s+trên|cũ)"
                )
            ],
            "ru": [
                (
                    r"(?:игнорируй|проигнорируй|забудь|не\s+обращай\w*\s+внимания\s+на|отбрось|пренебреги|не\s+слушай"
                    r"|не\s+следуй|не\s+выполняй)\w*\s+(?:\w+\s+){0,3}?(?:предыдущ|прежн|предшествующ|вышеуказанн"
                    r"|вышеприведенн|вышеприведённ|изначальн|первоначальн|стар|данн)\w*\s+(?:инструкци|указани|правил"
                    r"|команд|установк|директив|промпт)\w*"
                )
            ],
            "zh": [
                (
                    r"(?:忽略|忽视|无视|無視|忽視|忘记|忘記|忘掉|不要理会|不要理會|不要管|跳过|跳過|放弃|放棄|抛开|拋開|别管|別管)"
                    r"[^。！？\n]{0,8}?(?:之前|以前|先前|上面|上述|此前|前面|原来|原來|原有|原先|早先|已有|以上)"
                    r"[^。！？\n]{0,8}?(?:指令|指示|说明|說明|规则|規則|提示|设定|設定|要求|命令|约束|約束)"
                )
            ],
            "ja": [
                (
                    r"(?:以前|前|これまで|上記|先ほど|最初|元|今まで|上|既存)の[^。！？\n]{0,12}?(?:指示|命令|ルール|指令|設定"
                    r"|制約|インストラクション|プロンプト)[^。！？\n]{0,12}?(?:無視|忘れ|破棄|従わな|捨て)"
                )
            ],
            "ko": [
                (
                    r"(?:이전|앞|위|기존|원래|처음|앞서|지금까지)(?:의|에)?\s*[^.!?\n]{0,12}?(?:지시|지침|명령|규칙|설정|프롬프트"
                    r"|제약)[^.!?\n]{0,12}?(?:무시|잊어|잊고|잊으|따르지)"
                )
            ],
            "ar": [
                (
                    r"(?:تجاهل|انس|إنس|اهمل|أهمل|لا\s+تلتزم\s+ب|تخل\s+عن|لا\s+تتبع)\S*\s+(?:\S+\s+){0,3}?(?:ال)?"
                    r"(?:تعليمات|أوامر|اوامر|قواعد|إرشادات|ارشادات|توجيهات)\s+(?:ال)?(?:سابقة|أصلية|اصلية|أعلاه|مذكورة"
                    r"|قديمة|أولى)"
                )
            ],
            "hi": [
                (
                    r"(?:पिछले|पिछली|पहले\s+के|पहले\s+दिए|पूर्व|ऊपर\s+(?:दिए|के|लिखे)|मूल)\s+(?:\S+\s+){0,3}?(?:निर्देश|नियम"
                    r"|आदेश|हिदायत)\S*\s+(?:\S+\s+){0,2}?(?:अनदेखा|नज़रअंदाज़|नजरअंदाज|भूल|उपेक्षा|ध्यान\s+न)"
                )
            ],
        },
    ),
    # "forget your rules", "stop following your guidelines", "drop its safety rules"
    "dismiss_your_rules": (
        0.5,
        {
            "en": [
                (
                    rf"\b{_DISMISS}\s+(?:(?:all|any|every|each|of)\s+){{0,2}}(?:your|its|the\s+(?:assistant|ai|model|bot)"
                    r"'?s?)\s+(?:(?:own|safety|content|ethical|moral|built-?in|internal|core|usual|normal|standard"
                    r"|programmed|hard-?coded|system)\s+){0,2}(?:rules|instructions|guidelines|restrictions|programming"
                    r"|directives|policies|policy|filters|constraints|limitations|limits|training|principles|values"
                    r"|ethics|morals|safeguards|guardrails|system\s+prompt|prompt|conditioning)\b"
                )
            ],
            "de": [
                (
                    r"\b(?:ignorier|vergiss|vergesst|missachte|verwirf)\w*\s+(?:alle\s+)?(?:deine|ihre|eure|alle|sämtliche)"
                    r"\s+(?:\w+\s+)?(?:regeln|anweisungen|richtlinien|vorgaben|einschränkungen|beschränkungen|filter)"
                )
            ],
            "fr": [
                (
                    r"\b(?:ignore|oublie)\w*\s+(?:toutes\s+)?(?:tes|vos|toutes\s+les|les)\s+(?:\w+\s+)?(?:règles|consignes"
                    r"|instructions|directives|restrictions|limites)\b(?!\s+(?:de|du|des|pour)\b)"
                )
            ],
            "es": [
                (
                    r"\b(?:olvida|ignora|olvide|ignore|olvidad|ignorad)\s+(?:todas\s+)?(?:tus|sus|vuestras|todas\s+las)\s+"
                    r"(?:\w+\s+)?(?:reglas|instrucciones|normas|restricciones|directrices|limitaciones)\b"
                )
            ],
            "it": [
                (
                    r"\b(?:dimentica|ignora|dimenticate|ignorate)\s+(?:tutte\s+)?(?:le\s+tue|le\s+vostre|tutte\s+le)\s+"
                    r"(?:\w+\s+)?(?:regole|istruzioni|restrizioni|direttive|limitazioni)\b"
                )
            ],
            "pt": [
                (
                    r"\b(?:esqueça|esqueca|esquece|ignore|ignora)\s+(?:todas\s+)?(?:as\s+)?(?:suas|tuas|todas\s+as)\s+"
                    r"(?:\w+\s+)?(?:regras|instruções|instrucoes|restrições|restricoes|diretrizes|limitações)\b"
                )
            ],
            "nl": [
                (
                    r"\b(?:negeer|vergeet)\s+(?:al\s+)?(?:je|jouw|uw|alle)\s+(?:\w+\s+)?(?:regels|instructies|richtlijnen"
                    r"|beperkingen)\b"
                )
            ],
            "ru": [
                (
                    r"(?:забудь|забудьте|игнорируй|игнорируйте|отбрось|отбросьте|отключи|сними)\s+(?:все\s+)?(?:свои|твои"
                    r"|ваши|все)\s+(?:\w+\s+)?(?:правила|инструкции|ограничения|указания|установки|фильтры)"
                )
            ],
            "pl": [
                (
                    r"\b(?:zapomnij\s+o|zignoruj|ignoruj|porzuć)\s+(?:wszystkich\s+|wszystkie\s+)?(?:swoich|swoje|twoje"
                    r"|twoich|wszystkie)\s+(?:\w+\s+)?(?:zasad|reguł|instrukcj|ogranicze|wytyczn)\w*"
                )
            ],
            "zh": [
                (
                    r"(?:忽略|无视|無視|忘记|忘記|忘掉|不要遵守|不再遵守|停止遵守|抛开|拋開|打破|违反|違反)[^。！？\n]{0,4}?"
                    r"(?:你的|你所有的|所有的?|一切|全部)[^。！？\n]{0,4}?(?:规则|規則|限制|指令|指示|准则|準則|设定|設定"
                    r"|安全|道德|原则|原則)"
                )
            ],
        },
    ),
    # "disregard your system prompt", "bypass the system message"
    "override_system_prompt": (
        0.6,
        {
            "en": [
                (
                    r"\b(?:ignore|disregard|forget|override|bypass)\b[^.!?\n]{0,40}?\bsystem\s+(?:prompt|message"
                    r"|instructions?)"
                )
            ],
        },
    ),
    # "reveal your system prompt", "print your hidden instructions", "what is your prompt?"
    "reveal_system_prompt": (
        0.55,
        {
            "en": [
                (
                    rf"\b{_REVEAL}\b{_GAP}\byour\s+{_ADJ}{{0,2}}(?:system\s+(?:prompt|message|instructions?)|pre-?prompt"
                    r"|meta-?prompt|prompt|instructions|(?:initial|hidden|secret|original|internal|confidential|starting)"
                    r"\s+(?:prompt|instructions?|configuration|rules|directives|message|setup))\b"
                ),
                # "print everything above this line", "repeat the text at the start of this conversation"
                (
                    rf"\b{_REVEAL}\s+(?:me\s+)?(?:back\s+)?(?:everything|all(?:\s+(?:of\s+)?the\s+(?:text|content|words"
                    r"|messages))?|the\s+(?:text|content|words|messages?|conversation)|what(?:ever)?\s+(?:is|was|comes"
                    r"|came))\s+(?:written\s+|that\s+(?:is|was|came|comes)\s+|you\s+(?:see|have|got)\s+)?(?:above|before"
                    r"|prior\s+to|preceding)\s+(?:this|my|the\s+(?:user|first))\s+(?:line|message|point|prompt|question"
                    r"|request|turn|text)"
                ),
                # "repeat the instructions you received", "quote the exact words you were given"
                (
                    rf"\b{_REVEAL}\b{_GAP}\b(?:the|your)\s+{_ADJ}{{0,2}}(?:instructions?|words|text|prompt|directions|rules"
                    rf"|guidelines|message|directives)\s+(?:that\s+|which\s+)?{_YOU_WERE_TOLD}"
                ),
                rf"\b(?:text|contents?|wording|copy)\s+of\s+your\s+{_ADJ}{{0,2}}(?:system\s+)?(?:prompt|instructions)",
            ],
            "de": [
                (
                    r"\b(?:zeig|verrat|gib|nenn|offenbar|enthüll|wiederhol|druck|schreib|sag)\w*\s+(?:\w+\s+){0,3}?"
                    r"(?:system-?prompt|systemanweisung|systemnachricht|systeminstruktion|anfangsanweisung"
                    r"|versteckten?\s+anweisung|ursprünglichen?\s+anweisung|geheimen?\s+anweisung)\w*"
                ),
                (
                    r"\b(?:deinen|ihren|den)\s+(?:system-?prompt|systemanweisungen)\s+(?:\w+\s+){0,2}?(?:an|zeigen|preis"
                    r"|ausgeben|verraten|wiederholen)\b"
                ),
            ],
            "fr": [
                (
                    r"\b(?:révèle|revele|montre|affiche|donne|répète|repete|dévoile|devoile|imprime|écris|ecris|dis|cite)"
                    r"\w*(?:-moi)?\s+(?:\w+\s+){0,3}?(?:prompt|invite|message|instructions?|consignes)\s+(?:système"
                    r"|systeme|du\s+système|de\s+système|initiales?|cachées?|secrètes?|d'origine)"
                )
            ],
            "es": [
                (
                    r"\b(?:muestra|muéstrame|muestrame|revela|revélame|revelame|dime|enseña|enséñame|imprime|repite"
                    r"|dame|escribe|cita)\w*\s+(?:\w+\s+){0,3}?(?:prompt|mensaje|instrucciones|indicaciones)\s+(?:del"
                    r"\s+sistema|de\s+sistema|inicial(?:es)?|ocult[oa]s?|secret[oa]s?|original(?:es)?)"
                )
            ],
            "it": [
                (
                    r"\b(?:rivela|mostra|mostrami|dimmi|stampa|ripeti|dammi|svela|scrivi)\w*\s+(?:\w+\s+){0,3}?"
                    r"(?:prompt|messaggio|istruzioni)\s+(?:di\s+sistema|del\s+sistema|iniziali?|nascost[oie]|segret[oie]"
                    r"|original[ei])"
                )
            ],
            "pt": [
                (
                    r"\b(?:mostre|mostra|revele|revela|diga|exiba|exibe|imprima|repita|escreva|me\s+mostre|me\s+diga)\w*"
                    r"\s+(?:\w+\s+){0,3}?(?:prompt|mensagem|instruções|instrucoes)\s+(?:de\s+sistema|do\s+sistema"
                    r"|iniciais?|ocult[oa]s?|secret[oa]s?|originais)"
                )
            ],
            "nl": [
                (
                    r"\b(?:toon|laat|geef|herhaal|onthul|print|vertel|schrijf)\s+(?:\w+\s+){0,3}?(?:systeem-?prompt"
                    r"|systeeminstructies|systeembericht|verborgen\s+instructies|oorspronkelijke\s+instructies"
                    r"|geheime\s+instructies)"
                )
            ],
            "sv": [
                (
                    r"\b(?:visa|avslöja|skriv\s+ut|upprepa|berätta|ge\s+mig)\s+(?:\w+\s+){0,3}?(?:systemprompt"
                    r"|systeminstruktion|systemmeddelande|dolda\s+instruktion|ursprungliga\s+instruktion)\w*"
                )
            ],
            "pl": [
                (
                    r"\b(?:pokaż|ujawnij|wyświetl|podaj|powtórz|wypisz|zdradź|napisz)\s+(?:\w+\s+){0,3}?"
                    r"(?:prompt\w*\s+systemow\w*|systemow\w*\s+prompt\w*|instrukcj\w*\s+systemow\w*"
                    r"|komunikat\w*\s+systemow\w*|ukryt\w*\s+instrukcj\w*|początkow\w*\s+instrukcj\w*)"
                )
            ],
            "tr": [
                (
                    r"\b(?:sistem\s+(?:istem|komut|mesaj|talimat|prompt)\w*|gizli\s+talimat\w*|ilk\s+talimat\w*)\s+"
                    r"(?:\w+\s+){0,2}?(?:göster|açıkla|söyle|yaz|ver|paylaş|tekrarla|ifşa\s+et)"
                )
            ],
            "id": [
                (
                    r"\b(?:tampilkan|tunjukkan|beritahu|ungkapkan|ulangi|cetak)\s+(?:\w+\s+){0,3}?(?:prompt\s+sistem"
                    r"|instruksi\s+sistem|pesan\s+sistem|instruksi\s+tersembunyi)"
                )
            ],
            "vi": [
                (
                    r"(?:cho\s+(?:tôi|mình|tao)\s+(?:xem|biết)|hiển\s+thị|tiết\s+lộ|in\s+ra|nói\s+cho\s+(?:tôi|mình)\s+biết"
                    r"|lặp\s+lại|viết\s+ra)\s+(?:\S+\s+){0,3}?(?:lời\s+nhắc\s+hệ\s+thống|prompt\s+hệ\s+thống"
                    r"|system\s+prompt|chỉ\s+dẫn\s+hệ\s+thống|hướng\s+dẫn\s+hệ\s+thống|chỉ\s+thị\s+ẩn|hướng\s+dẫn\s+ẩn)"
                )
            ],
            "ru": [
                (
                    r"(?:покажи|раскрой|выведи|повтори|напиши|скажи|назови|открой|процитируй|распечатай)\w*\s+(?:\w+\s+){0,3}?"
                    r"(?:системн\w+\s+(?:промпт|подсказк|инструкци|сообщени|запрос)|скрыт\w+\s+(?:инструкци|указани)"
                    r"|исходн\w+\s+(?:инструкци|промпт)|начальн\w+\s+(?:инструкци|промпт))"
                )
            ],
            "zh": [
                (
                    r"(?:告诉我|告訴我|显示|顯示|输出|輸出|打印|透露|泄露|洩露|展示|说出|說出|给我看|給我看|重复|重複|复述|複述"
                    r"|列出|公开|公開)(?:(?!如何|怎么|怎麼|怎样|怎樣|方法|写|寫)[^。！？\n]){0,8}?(?:系统提示|系統提示|系统指令"
                    r"|系統指令|系统消息|系統消息|系统设定|系統設定|初始指令|隐藏指令|隱藏指令|提示词|提示詞)"
                )
            ],
            "ja": [
                (
                    r"(?:システムプロンプト|システム\s*メッセージ|システム指示|初期指示|隠された指示|隠し指示|秘密の指示|最初の指示)"
                    r"(?:(?!書き方|作り方|方法|とは|について|書く|作る)[^。！？\n]){0,10}?(?:表示|教え|見せ|出力|開示|公開|繰り返"
                    r"|書き出|印刷)"
                )
            ],
            "ko": [
                (
                    r"(?:시스템\s*프롬프트|시스템\s*메시지|시스템\s*지시|숨겨진\s*지시|초기\s*지시|비밀\s*지시)"
                    r"(?:(?!방법|작성|만드는|만들|쓰는)[^.!?\n]){0,10}?(?:보여|알려|출력|공개|말해|표시|반복|누설)"
                )
            ],
            "ar": [
                (
                    r"(?:اكشف|أظهر|اظهر|اعرض|أعرض|أخبرني|اخبرني|اطبع|كرر|أرني|ارني|انشر|أفصح)\S*\s+(?:\S+\s+){0,3}?"
                    r"(?:موجه\s+النظام|تعليمات\s+النظام|رسالة\s+النظام|التعليمات\s+المخفية|التعليمات\s+السرية"
                    r"|التعليمات\s+الأصلية|موجه\s+الأوامر)"
                )
            ],
            "hi": [
                (
                    r"(?:सिस्टम\s+(?:प्रॉम्प्ट|प्रोम्प्ट|निर्देश|संदेश)|छिपे\s+(?:हुए\s+)?निर्देश|गुप्त\s+निर्देश|मूल\s+निर्देश)\S*\s+"
                    r"(?:\S+\s+){0,2}?(?:दिखा|बता|प्रकट|लिख|दोहरा|साझा)"
                )
            ],
        },
    ),
    # the same against "the": also an honest question ("how do I print the system prompt I set?")
    "mentions_hidden_prompt": (
        0.3,
        {
            "en": [
                (
                    rf"\b{_REVEAL}\b{_GAP}\b(?:the|your)\s+{_ADJ}{{0,2}}(?:system\s+(?:prompt|message)|(?:initial|hidden"
                    r"|secret|original|internal|confidential)\s+(?:prompt|instructions?|rules)|developer\s+(?:prompt"
                    r"|message|instructions))\b"
                ),
                # "your" only: "return the configuration" is what a docstring says
                rf"\b{_REVEAL}\b{_GAP}\byour\s+{_ADJ}{{0,2}}(?:configuration|guidelines|programming|directives|rules)\b",
            ],
        },
    ),
    # "what were you told at the start of this conversation?", "... word for word"
    "conversation_start": (
        0.25,
        {
            "en": [
                (
                    r"\b(?:at|from)\s+the\s+(?:very\s+)?(?:start|beginning|top)\s+of\s+(?:this|the|our)\s+(?:conversation"
                    r"|chat|session|context)"
                )
            ],
        },
    ),
    "verbatim_request": (
        0.2,
        {
            "en": [
                (
                    r"\b(?:verbatim|word\s+for\s+word|word-for-word|in\s+full|character\s+by\s+character"
                    r"|exactly\s+as\s+(?:written|given)|exact\s+(?:words|wording|text))\b"
                )
            ],
        },
    ),
    # "new instructions supersede the old ones", "the earlier guidance no longer applies"
    "supersede_instructions": (
        0.45,
        {
            "en": [
                (
                    r"\b(?:new|updated|these|my|following|latest)\s+(?:instructions?|rules|directives?|guidelines|orders"
                    r"|system\s+prompt|polic(?:y|ies))\s+(?:\w+\s+){0,3}?(?:supersedes?|overrides?|overrules?|takes?\s+"
                    r"precedence\s+over|trumps?|invalidates?|replaces?\s+(?:all|any|the|your)\s+(?:previous|prior|old"
                    r"|earlier|original))\b"
                ),
                (
                    r"\b(?:previous|prior|earlier|old|original|above|initial|your|all|any)\s+(?:\w+\s+)?(?:instructions?"
                    r"|rules|guidance|guidelines|directives?|prompt|programming|restrictions|constraints|polic(?:y|ies)"
                    r"|limitations)\s+(?:(?:are|is)\s+)?(?:no\s+longer\s+(?:appl(?:y|ies)|valid|in\s+effect|relevant"
                    r"|binding|active)|(?:now\s+)?(?:void|obsolete|cancell?ed|revoked|lifted|suspended|overridden"
                    r"|deactivated|disabled))\b"
                ),
            ],
        },
    ),
    # "your rules have been updated by the admin", "safety filters are off"
    "rules_changed": (
        0.35,
        {
            "en": [
                (
                    r"\b(?:your|the|all)\s+(?:\w+\s+)?(?:rules|instructions|guidelines|restrictions|policies|policy"
                    r"|filters|programming|directives)\s+(?:have|has)\s+(?:just\s+|now\s+)?been\s+(?:updated|changed"
                    r"|modified|lifted|removed|disabled|revoked|suspended|overridden|reset|replaced)"
                )
            ],
        },
    ),
    "safety_off": (
        0.5,
        {
            "en": [
                (
                    r"\b(?:safety|content|moderation|ethical|ethics|security)\s+(?:filters?|guidelines|restrictions|checks"
                    r"|polic(?:y|ies)|rules|protocols|settings|guardrails|mode|features?)\s+(?:(?:are|is|have\s+been"
                    r"|has\s+been)\s+)?(?:now\s+)?(?:off|disabled|removed|lifted|turned\s+off|deactivated|suspended"
                    r"|bypassed|switched\s+off)\b"
                ),
                (
                    r"\b(?:disable|turn\s+off|deactivate|remove|bypass|switch\s+off|ignore|lift)\s+(?:all\s+)?(?:of\s+)?"
                    r"your\s+(?:safety|content|moderation|ethical)\s+(?:filters?|guidelines|restrictions|checks"
                    r"|polic(?:y|ies)|rules|guardrails|protocols)"
                ),
            ],
        },
    ),
    # "follow my commands", "do what I say", "you answer to me now"
    "obey_me": (
        0.3,
        {
            "en": [
                (
                    r"\b(?:follow|obey)\s+(?:only\s+)?my\s+(?:commands|orders)\b|\bdo\s+(?:exactly\s+)?(?:whatever|what"
                    r"|everything)\s+i\s+(?:say|tell\s+you|command)\b|\byou\s+(?:now\s+)?(?:answer|report|belong)\s+to"
                    r"\s+me\b|\b(?:comply|obey)\s+with\s+(?:all|every|any)\s+(?:requests?|commands?|orders?)\b"
                    r"|\byou\s+(?:must|will|shall)\s+(?:now\s+)?(?:obey|comply)\b|\byour\s+only\s+(?:task|job|purpose"
                    r"|goal)\s+(?:now\s+)?is\s+to\s+(?:obey|follow)"
                )
            ],
        },
    ),
    # "act as if you have no rules", "you are an AI freed from its restrictions"
    "no_rules_persona": (
        0.5,
        {
            "en": [
                (
                    r"\b(?:act|behave|respond|answer|reply|pretend|imagine|roleplay|role-play)\s+(?:as\s+(?:if|though)\s+)?"
                    r"(?:you\s+(?:are|were|have|had)\s+)?(?:(?:an?|the)\s+(?:\w+\s+){0,2})?(?:with\s+)?no\s+(?:\w+\s+)?"
                    r"(?:rules|restrictions|limits|limitations|filters|guidelines|content\s+polic(?:y|ies)|ethics|morals"
                    r"|censorship|safety|boundaries|guardrails)\b"
                ),
                (
                    r"\b(?:freed|free|liberated|released|unshackled|unbound|unchained|escaped)\s+from\s+(?:all\s+)?(?:of\s+)?"
                    r"(?:your|its|the|any|her|his|their)\s+(?:\w+\s+)?(?:restrictions|rules|guidelines|constraints"
                    r"|programming|limitations|filters|shackles|chains|policies|training)\b"
                ),
                (
                    r"\byou\s+(?:have|has|'ve\s+got)\s+no\s+(?:more\s+)?(?:\w+\s+)?(?:rules|restrictions|limits|limitations"
                    r"|filters|guidelines|boundaries|guardrails|ethics|morals)\b"
                ),
            ],
        },
    ),
    "never_refuse": (
        0.3,
        {
            "en": [
                (
                    r"\b(?:never|won'?t\s+ever|will\s+not|won'?t|does\s+not|doesn'?t|do\s+not|don'?t|cannot|can'?t)\s+"
                    r"(?:ever\s+)?refuses?\b"
                )
            ],
        },
    ),
    # a forged turn of another role: chat-template control tokens, or a closing user tag followed by a system one
    # (two or more "#" in a markdown header: a single "# system:" is an ordinary code comment)
    "role_tag_injection": (
        0.6,
        {
            "en": [
                r"<\|im_start\|>\s*system|<\|system\|>|<\|start_header_id\|>\s*system|<\|developer\|>",
                r"</(?:user|human|input|query|context|document|data)>\s*<(?:system|assistant|sys|developer|admin)>",
                r"\[(?:system|admin|developer|sys)\]\s*\(#\w*\)",
            ],
        },
    ),
    # a header "System:" / "### System:" / "<system>" at a line start followed on that line by orders to the model
    "role_header_directive": (
        0.5,
        {
            "en": [
                (
                    (
                        r"^[^\S\n]*(?:#{1,6}[^\S\n]*|\*\*|<)?(?:system|admin|administrator|developer|root|operator)"
                        r"(?:[^\S\n]+(?:message|prompt|note|override|instructions?|update|notice))?[^\S\n]*(?:\*\*)?[^\S\n]*"
                        r"[:>\]][^\n]{0,80}?\b(?:you\s+(?:must|are|will|shall|should|have|may|can)|the\s+(?:assistant|ai"
                        r"|model|user)\s+(?:must|is|has|should|will|may|can)|comply|obey|ignore|disregard|new\s+(?:rules"
                        r"|policy|instructions)|override|unrestricted|no\s+(?:rules|restrictions|limits))"
                    ),
                    ("system", "admin", "developer", "root", "operator"),
                )
            ],
        },
    ),
    "role_header": (
        0.2,
        {
            "en": [
                (
                    (
                        r"^[^\S\n]*#{2,6}[^\S\n]*system[^\S\n]*:|(?<!<)<(?:system|sys|developer)(?:_?(?:prompt|message"
                        r"|instructions?))?>"
                    ),
                    ("system", "<sys", "<developer"),
                )
            ],
        },
    ),
    # Llama-2 style markers: also appear in honest questions about prompt formats
    "inst_markers": (0.35, {"en": [r"\[/?inst\]|<</?sys>>"]}),
    # an HTML comment addressed to the model, in a page it is asked to read
    "hidden_comment_instruction": (
        0.3,
        {
            "en": [r"<!--[^>]{0,200}?\b(?:ai|assistant|model|llm|chatbot|gpt|claude|gemini|bot)\b"],
        },
    ),
    # persona reassignment to an unrestricted role: "you are now DAN", "you are now in developer mode"
    "persona_override": (
        0.5,
        {
            "en": [
                (
                    r"\byou\s+are\s+now\s+(?:an?\s+|the\s+|my\s+|in\s+)?(?:dan\b|unfiltered|unrestricted|uncensored|evil"
                    r"|jailbroken|developer\s+mode|free\s+(?:from|of)|no\s+longer\s+(?:bound|restricted|an?\s+ai)"
                    r"|(?:an?\s+)?(?:ai|assistant|model|chatbot|bot)\s+(?:with(?:out)?\s+no|without\s+(?:any\s+)?)"
                    r"(?:rules|restrictions|limits|filters))"
                )
            ],
            "de": [
                (
                    r"\b(?:du\s+bist|sie\s+sind)\s+(?:jetzt|nun|ab\s+sofort|ab\s+jetzt|von\s+nun\s+an)\s+(?:\w+\s+){0,3}?"
                    r"(?:ohne\s+(?:jegliche\s+|irgendwelche\s+)?(?:einschränkungen|beschränkungen|regeln|grenzen|filter"
                    r"|zensur)|uneingeschränkt|unzensiert|ungefiltert|frei\s+von|dan\b)"
                )
            ],
            "fr": [
                (
                    r"\b(?:tu\s+es|vous\s+êtes)\s+(?:maintenant|désormais|dorénavant|à\s+présent)\s+(?:\w+\s+){0,3}?"
                    r"(?:sans\s+(?:aucune?\s+)?(?:restrictions?|limites?|règles|filtres?|censure)|libre\s+de|non\s+censurée?"
                    r"|dan\b)"
                ),
                (
                    r"\b(?:agis|agissez|fais|faites|comporte-toi|comportez-vous)\s+comme\s+si\s+(?:tu|vous)\s+"
                    r"(?:n'?\s*)?(?:avais|aviez|étais|étiez)\s+(?:aucune?|pas\s+de|sans)\s+(?:\w+\s+)?(?:restrictions?"
                    r"|règles|limites?|filtres?|censure)"
                ),
            ],
            "es": [
                (
                    r"\b(?:ahora|a\s+partir\s+de\s+ahora|desde\s+ahora)\s+(?:tú\s+|tu\s+|usted\s+)?(?:eres|es|serás|seras)\s+"
                    r"(?:\w+\s+){0,3}?(?:sin\s+(?:ningún\s+tipo\s+de\s+|ninguna\s+)?(?:restricciones|restricción|límites"
                    r"|reglas|filtros|censura)|dan\b|libre\s+de)"
                ),
                (
                    r"\b(?:actúa|actua|compórtate|comportate|finge)\s+como\s+si\s+no\s+tuvieras\s+(?:\w+\s+)?"
                    r"(?:reglas|restricciones|límites|filtros)"
                ),
            ],
            "it": [
                (
                    r"\b(?:ora|adesso|d'ora\s+in\s+poi|da\s+ora)\s+(?:tu\s+)?(?:sei|sarai)\s+(?:\w+\s+){0,3}?(?:senza"
                    r"\s+(?:alcuna\s+|nessuna\s+)?(?:restrizion[ei]|limit[ie]|regole|filtri|censura)|dan\b|liber[oa]\s+da)"
                )
            ],
            "pt": [
                (
                    r"\b(?:agora|a\s+partir\s+de\s+agora|de\s+agora\s+em\s+diante)\s+(?:você|voce|tu)\s+(?:é|e|és|es|será)"
                    r"\s+(?:\w+\s+){0,3}?(?:sem\s+(?:nenhuma\s+|qualquer\s+)?(?:restrições|restricoes|restrição|limites"
                    r"|regras|filtros|censura)|dan\b|livre\s+de)"
                )
            ],
            "nl": [
                (
                    r"\b(?:je\s+bent|jij\s+bent|u\s+bent)\s+(?:nu|vanaf\s+nu|voortaan)\s+(?:\w+\s+){0,3}?(?:zonder\s+"
                    r"(?:enige\s+)?(?:beperkingen|regels|filters|censuur|grenzen)|ongecensureerd|dan\b|vrij\s+van)"
                )
            ],
            "sv": [
                (
                    r"\b(?:du\s+är)\s+(?:nu|från\s+och\s+med\s+nu)\s+(?:\w+\s+){0,3}?(?:utan\s+(?:några\s+)?"
                    r"(?:begränsningar|regler|filter|restriktioner)|ocensurerad|dan\b)"
                )
            ],
            "pl": [
                (
                    r"\b(?:jesteś|teraz\s+jesteś|od\s+teraz\s+jesteś)\s+(?:teraz\s+)?(?:\w+\s+){0,3}?(?:bez\s+(?:żadnych\s+)?"
                    r"(?:ograniczeń|zasad|filtrów|cenzury|reguł)|nieograniczon\w*|dan\b)"
                )
            ],
            "tr": [
                (
                    r"\b(?:artık|şu\s+andan\s+itibaren|bundan\s+sonra)\s+(?:\w+\s+){0,3}?(?:kısıtlamasız|sınırsız"
                    r"|kuralsız|sansürsüz|filtresiz)\w*"
                )
            ],
            "id": [
                (
                    r"\b(?:sekarang|mulai\s+sekarang)\s+(?:kamu|anda)\s+(?:adalah\s+)?(?:\w+\s+){0,3}?(?:tanpa\s+"
                    r"(?:batasan|aturan|filter|sensor)|dan\b)"
                )
            ],
            "vi": [
                (
                    r"(?:bây\s+giờ|từ\s+giờ|từ\s+bây\s+giờ)\s+(?:bạn|mày)\s+(?:là\s+)?(?:\S+\s+){0,4}?(?:không\s+(?:có\s+)?"
                    r"(?:bất\s+kỳ\s+)?(?:giới\s+hạn|hạn\s+chế|quy\s+tắc|kiểm\s+duyệt)|dan\b)"
                )
            ],
            "ru": [
                (
                    r"(?:теперь|отныне|с\s+этого\s+момента|с\s+этой\s+минуты)\s+(?:ты|вы)\s+(?:\w+\s+){0,3}?(?:без\s+"
                    r"(?:каких-либо\s+|всяких\s+|любых\s+)?(?:\w+\s+)?(?:ограничений|правил|фильтров|цензуры)"
                    r"|неограниченн\w*|нецензурированн\w*|dan\b)"
                )
            ],
            "zh": [
                (
                    r"(?:你现在是|你現在是|现在你是|現在你是|从现在开始[，,]?\s*你|從現在開始[，,]?\s*你|从现在起[，,]?\s*你"
                    r"|從現在起[，,]?\s*你)[^。！？\n]{0,12}?(?:没有|沒有|不受|无|無|解除|摆脱|擺脫|不再有)(?:任何|一切|所有)?"
                    r"(?:的)?(?:限制|约束|約束|规则|規則|审查|審查|过滤|過濾|道德)"
                )
            ],
            "ja": [
                (
                    r"(?:あなたは今|今からあなたは|これからあなたは|あなたはもう)[^。！？\n]{0,15}?(?:制限|制約|ルール|フィルター"
                    r"|検閲)(?:の|が|を)?(?:ない|なし|無し|無い|解除|持たない)"
                )
            ],
            "ko": [
                (
                    r"(?:너는\s*이제|당신은\s*이제|지금부터\s*(?:너는|당신은)|이제부터\s*(?:너는|당신은))[^.!?\n]{0,15}?"
                    r"(?:제한|제약|규칙|필터|검열)(?:이|가|을|를)?\s*(?:없는|없어|없다|해제)"
                )
            ],
            "ar": [
                (
                    r"(?:أنت\s+الآن|انت\s+الان|من\s+الآن\s+فصاعدا\s+أنت|من\s+الان\s+فصاعدا\s+انت)\s+(?:\S+\s+){0,3}?"
                    r"(?:بدون|بلا|دون)\s+(?:أي\s+|اي\s+)?(?:قيود|حدود|قواعد|رقابة|فلاتر)"
                )
            ],
            "hi": [
                (
                    r"(?:अब\s+(?:से\s+)?(?:तुम|आप)|आज\s+से\s+(?:तुम|आप))\s+(?:\S+\s+){0,4}?(?:बिना\s+(?:किसी\s+)?"
                    r"(?:प्रतिबंध|पाबंदी|सीमा|नियम)|(?:प्रतिबंध|पाबंदी|सीमा|नियमों|नियम)\s+(?:के\s+बिना|से\s+मुक्त))"
                )
            ],
        },
    ),
    # any other persona change ("you are now a pirate") and "from now on you will ...": weak signals
    "you_are_now": (0.25, {"en": [r"\byou\s+are\s+now\s+(?:an?|the|my)\s+\w+"]}),
    "from_now_on": (0.2, {"en": [r"\bfrom\s+now\s+on,?\s+you\s+(?:are|will|must|shall)\b"]}),
    "unrestricted_persona": (
        0.3,
        {
            "en": [
                (
                    r"\b(?:unfiltered|unrestricted|uncensored|do\s+anything\s+now)\b|\bwithout\s+(?:any\s+)?"
                    r"(?:restrictions?|limitations|filters|guidelines|censorship)\b|\bno\s+content\s+polic(?:y|ies)\b"
                )
            ],
            "de": [
                (
                    r"\bohne\s+(?:jegliche\s+|irgendwelche\s+)?(?:einschränkungen|beschränkungen|zensur|filter)\b"
                    r"|\b(?:unzensiert|uneingeschränkt)\w*"
                )
            ],
            "fr": [
                (
                    r"\bsans\s+(?:aucune\s+)?(?:restrictions?|censure|filtres?)\b|\baucune\s+restriction\b"
                    r"|\bnon\s+censurée?\b"
                )
            ],
            "es": [r"\bsin\s+(?:ningún\s+tipo\s+de\s+|ninguna\s+)?(?:restricciones|restricción|censura|filtros)\b"],
            "it": [r"\bsenza\s+(?:alcuna\s+|nessuna\s+)?(?:restrizion[ei]|censura|filtri)\b"],
            "pt": [r"\bsem\s+(?:nenhuma\s+|qualquer\s+)?(?:restrições|restricoes|restrição|censura|filtros)\b"],
            "nl": [r"\bzonder\s+(?:enige\s+)?(?:beperkingen|censuur|filters)\b|\bongecensureerd\b"],
            "sv": [r"\butan\s+(?:några\s+)?(?:begränsningar|restriktioner|censur|filter)\b|\bocensurerad\b"],
            "pl": [r"\bbez\s+(?:żadnych\s+)?(?:ograniczeń|cenzury|filtrów)\b"],
            "tr": [r"\b(?:kısıtlamasız|sansürsüz|filtresiz)\b"],
            "ru": [r"без\s+(?:каких-либо\s+|всяких\s+|любых\s+)?(?:ограничений|цензуры|фильтров)"],
            "zh": [
                r"(?:没有|沒有|不受|无|無|解除|摆脱|擺脫)(?:任何|一切|所有)(?:的)?(?:限制|约束|約束|审查|審查|过滤|過濾)"
            ],
            "ja": [r"(?:制限|制約|検閲|フィルター)(?:の|が)?(?:ない|なし|無し|無い|を解除)"],
            "ko": [r"(?:제한|제약|검열|필터)(?:이|가)?\s*없는"],
            "ar": [r"(?:بدون|بلا|دون)\s+(?:أي\s+|اي\s+)?(?:قيود|رقابة)"],
            "hi": [r"बिना\s+(?:किसी\s+)?(?:प्रतिबंध|पाबंदी|रोक)|(?:प्रतिबंध|पाबंदी)\s+के\s+बिना"],
            "vi": [r"không\s+(?:có\s+)?(?:bất\s+kỳ\s+)?(?:giới\s+hạn|hạn\s+chế|kiểm\s+duyệt)\s+(?:nào|gì)"],
        },
    ),
    "developer_mode": (0.3, {"en": [r"\bdeveloper\s+mode\b"]}),
    "jailbreak": (0.3, {"en": [r"\bjail\s?br(?:eak|oken)"]}),
    # a long base64-looking blob (hidden instructions smuggled past a reader); its decoding is screened too
    "base64_blob": (0.35, {"en": [r"[a-z0-9+/]{200,}={0,2}"]}),
}
SURFACE_RULES = frozenset({"base64_blob"})  # about the form of the prompt: not matched on its decoded views

# the script of each language's rows: a row of another script than Latin is tried only on a text that has it
LANGUAGE_SCRIPT = {"ru": "cyrillic", "zh": "han", "ja": "kana_han", "ko": "hangul", "ar": "arabic", "hi": "devanagari"}
_SCRIPT_PRESENT = {
    "cyrillic": re.compile("[\u0400-\u04ff]"),
    "han": re.compile("[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff]"),
    "kana_han": re.compile("[\u3040-\u30ff\u4e00-\u9fff]"),
    "hangul": re.compile("[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]"),
    "arabic": re.compile("[\u0600-\u06ff\u0750-\u077f]"),
    "devanagari": re.compile("[\u0900-\u097f]"),
}


def _scripts(text: str) -> frozenset[str]:
    """The non-Latin scripts (as named in LANGUAGE_SCRIPT) present in ``text``."""
    if text.isascii():
        return frozenset()
    return frozenset(name for name, rx in _SCRIPT_PRESENT.items() if rx.search(text))


# The views are lowercased once and the patterns compiled case-sensitive: several times faster in CPython's
# re than IGNORECASE (which also defeats its first-character scan). MULTILINE: role headers match at line starts.
_FLAGS = re.MULTILINE
_ESCAPE = re.compile(r"\\.")


def _compile_rule(name: str, weight: float, rows: dict[str, list[str | tuple[str, tuple[str, ...]]]]) -> Rule:
    # the patterns go through the same normalization as the text (NFKC, look-alikes), so that a Turkish
    # "ı" in a pattern is the "i" the text is turned into
    whole: list[Part] = []
    branches: dict[tuple[str, str, str, bool], list[str]] = {}  # (script, literal, its source, word start)
    sources = []
    for lang, patterns in rows.items():
        for entry in patterns:
            # a row is a pattern, or (pattern, anchors) where the anchors cannot be read off the pattern
            source, given = (entry, None) if isinstance(entry, str) else entry
            source = map_confusables(unicodedata.normalize("NFKC", source))
            if _ESCAPE.sub("", source) != _ESCAPE.sub("", source).lower():
                raise ValueError(f"rule {name} ({lang}): write patterns in lowercase, they match lowercased text")
            script = LANGUAGE_SCRIPT.get(lang, "latin")
            split = None if given else split_branches(source)
            if split:  # each branch starts with a literal, its anchor
                for branch, literal, word in split:
                    lit_source = branch_literal_source(branch)
                    branches.setdefault((script, literal, lit_source, word), []).append(branch[len(lit_source) :])
            else:
                anchors = set(given) if given else pattern_anchors(source)
                whole.append(
                    Part(script, tuple(sorted(anchors)) if anchors else None, False, re.compile(source, _FLAGS))
                )
            sources.append(f"(?:{source})")
    # the branches of a rule that start with the same literal share one scan: literal(?:rest|rest...)
    parts = [
        Part(script, (literal,), word, re.compile(lit_source + "(?:" + "|".join(rests) + ")", _FLAGS))
        for (script, literal, lit_source, word), rests in branches.items()
    ]
    return Rule(
        name, re.compile("|".join(sources), _FLAGS), weight, tuple(parts + whole), tuple(rows), name in SURFACE_RULES
    )


INJECTION_RULES: tuple[Rule, ...] = tuple(_compile_rule(name, w, rows) for name, (w, rows) in RULE_TABLE.items())


class RuleGates:
    """Every rule's gated parts by their gate (script, anchor, word start): which rules a text matches, with one
    anchor look-up per distinct gate of the scripts the text has (535 gates for 651 parts), then only the regexes
    of the parts whose gate let them through. The same answer as :meth:`Rule.search` on every rule (a short text
    or a rule without parts: its whole pattern), at a fraction of the per-part Python work on long prompts."""

    def __init__(self, rules: tuple[Rule, ...]):
        self.rules = rules
        # script -> its gates in order: (anchor, whether it must start a word of the text, its parts)
        self.gates: dict[str, list[tuple[str, bool, list[tuple[int, Part]]]]] = {}
        self.ungated: list[tuple[int, Part]] = []  # parts tried on every text of their script
        self.whole = [i for i, r in enumerate(rules) if not r.parts]  # rules matched by their pattern alone
        found: dict[tuple[str, str, bool], list[tuple[int, Part]]] = {}
        for i, rule in enumerate(rules):
            for part in rule.parts:
                if part.anchors is None:
                    self.ungated.append((i, part))
                    continue
                for anchor in part.anchors:
                    key = (part.script, anchor, part.word_start)
                    if key not in found:  # a word-start anchor that is a word: looked up in the text's words
                        found[key] = []
                        word = part.word_start and _WORD.fullmatch(anchor) is not None
                        self.gates.setdefault(part.script, []).append((anchor, word, found[key]))
                    found[key].append((i, part))

    def matched(self, index: TextIndex, allowed, done: set[int]) -> set[int]:
        """The indexes of the rules of ``allowed`` (a predicate on a rule) that match ``index``'s text, besides
        those of ``done`` (matched already: not tried again)."""
        text, rules, hits = index.text, self.rules, set()
        if len(text) < SHORT_TEXT:
            return {
                i for i, r in enumerate(rules) if i not in done and allowed(r) and r.pattern.search(text) is not None
            }
        for i in self.whole:
            if i not in done and allowed(rules[i]) and rules[i].pattern.search(text) is not None:
                hits.add(i)
        scripts = index.scripts
        tried: set[int] = set()
        for script, gates in self.gates.items():
            if script != "latin" and script not in scripts:
                continue
            for anchor, word, parts in gates:
                if not (index.starts_a_word(anchor) if word else anchor in text):
                    continue
                for i, part in parts:
                    if i in hits or i in done or id(part) in tried or not allowed(rules[i]):
                        continue
                    tried.add(id(part))
                    if part.regex.search(text):
                        hits.add(i)
        for i, part in self.ungated:
            if i in hits or i in done or not allowed(rules[i]):
                continue
            if (part.script == "latin" or part.script in scripts) and part.regex.search(text):
                hits.add(i)
        return hits


RULE_GATES = RuleGates(INJECTION_RULES)
LANGUAGES: tuple[str, ...] = tuple(sorted({lang for _, rows in RULE_TABLE.values() for lang in rows}))

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

    def __init__(
        self,
        blocked_patterns: Iterable[str] = (),
        injection_threshold: float = 0.5,
        max_output_chars: int = 20_000,
        flag_only: bool = False,
    ):
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
        texts = views(text)
        hits: set[int] = set()
        for k, view in enumerate(texts):  # surface rules on the first view (the prompt as written) only
            hits |= RULE_GATES.matched(TextIndex(view.lower()), (lambda r: True) if k == 0 else _deep, hits)
        matched = [r for i, r in enumerate(INJECTION_RULES) if i in hits]
        score = injection_score(matched)
        reasons = [f"injection:{r.name}" for r in matched]
        hard = self._blocked_reasons(text, *texts)
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

    def _blocked_reasons(self, *texts: str) -> list[str]:
        """The configured patterns found in any of ``texts`` (a prompt: the text and its views)."""
        return [f"blocked_pattern:{p}" for p, rx in self.blocked if any(rx.search(t) for t in texts)]

    def _verdict(self, action: str, reasons: list[str], score: float) -> Verdict:
        if action == BLOCK and self.flag_only:
            action = FLAG
        return Verdict(action, tuple(reasons), score)


def _deep(rule: Rule) -> bool:
    """Whether ``rule`` is matched on a prompt's decoded and deobfuscated views too (not a surface rule)."""
    return not rule.surface


def _compile_blocked(pattern: str) -> re.Pattern[str]:
    """A configured blocked pattern, case-insensitive; a bad regex is a ValueError naming it."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"blocked pattern must be a non-empty string, got {pattern!r}")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise ValueError(f"invalid blocked pattern {pattern!r}: {e}") from e
