"""Test traffic for the monitoring tests: English and French text, inference-log frames, a small tokenizer."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta

import polars as pl
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from crawl2serve.assets.monitoring.logs import LOG_SCHEMA
from crawl2serve.serving.gateway.logrow import LogRow

ENGLISH = [
    "the",
    "people",
    "who",
    "live",
    "in",
    "the",
    "town",
    "work",
    "on",
    "the",
    "farms",
    "and",
    "in",
    "the",
    "shops",
    "near",
    "the",
    "river",
    "while",
    "their",
    "children",
    "go",
    "to",
    "school",
    "every",
    "morning",
    "and",
    "return",
    "home",
    "in",
    "the",
    "evening",
    "to",
    "help",
    "with",
    "the",
    "animals",
    "because",
    "the",
    "weather",
    "has",
    "been",
    "warm",
    "this",
    "year",
    "there",
    "was",
    "enough",
    "rain",
    "for",
    "the",
    "crops",
    "and",
    "the",
    "market",
    "was",
    "full",
    "of",
    "fresh",
    "bread",
    "cheese",
    "apples",
    "and",
    "vegetables",
    "that",
    "families",
    "bought",
    "for",
    "the",
    "week",
    "ahead",
    "many",
    "visitors",
    "come",
    "during",
    "summer",
    "to",
    "walk",
    "along",
    "the",
    "old",
    "roads",
    "and",
    "see",
    "the",
    "stone",
    "church",
    "built",
    "hundreds",
    "of",
    "years",
    "ago",
    "by",
    "workers",
    "from",
    "the",
    "valley",
]
FRENCH = [
    "les",
    "habitants",
    "de",
    "la",
    "ville",
    "travaillent",
    "dans",
    "les",
    "champs",
    "et",
    "dans",
    "les",
    "boutiques",
    "près",
    "de",
    "la",
    "rivière",
    "pendant",
    "que",
    "leurs",
    "enfants",
    "vont",
    "à",
    "l'école",
    "chaque",
    "matin",
    "et",
    "rentrent",
    "à",
    "la",
    "maison",
    "le",
    "soir",
    "pour",
    "aider",
    "avec",
    "les",
    "animaux",
    "parce",
    "que",
    "le",
    "temps",
    "était",
    "doux",
    "cette",
    "année",
    "il",
    "y",
    "avait",
    "assez",
    "de",
    "pluie",
    "pour",
    "les",
    "récoltes",
    "et",
    "le",
    "marché",
    "était",
    "plein",
    "de",
    "pain",
    "frais",
    "de",
    "fromage",
    "de",
    "pommes",
    "et",
    "de",
    "légumes",
    "que",
    "les",
    "familles",
    "achetaient",
    "pour",
    "la",
    "semaine",
    "suivante",
]


def sentences(rng: random.Random, vocab, n_sentences: tuple[int, int], words: tuple[int, int]) -> str:
    out = []
    for _ in range(rng.randint(*n_sentences)):
        s = " ".join(rng.choice(vocab) for _ in range(rng.randint(*words)))
        out.append(s[0].upper() + s[1:] + rng.choice([".", ".", "?", "!"]))
    return " ".join(out)


def english(rng: random.Random) -> str:
    return sentences(rng, ENGLISH, (1, 4), (6, 18))


def log_frame(prompts: list[str], *, latency_scale: float = 1.0, seed: int = 0, **cols) -> pl.DataFrame:
    rng = random.Random(seed)
    n = len(prompts)
    start = datetime(2026, 11, 23, 6, tzinfo=UTC)
    data = {
        "request_id": [f"r{i}" for i in range(n)],
        "ts": [start + timedelta(seconds=i) for i in range(n)],
        "tenant": ["t"] * n,
        "key_id": ["k"] * n,
        "endpoint": ["chat.completions"] * n,
        "model": ["m"] * n,
        "served_model": ["m"] * n,
        "model_version": ["1"] * n,
        "adapter": ["a"] * n,
        "engine": ["sglang"] * n,
        "route": ["stable"] * n,
        "stream": [True] * n,
        "status": [200] * n,
        "error": [None] * n,
        "prompt": prompts,
        "output": [english(rng) for _ in range(n)],
        "prompt_tokens": [len(p) // 4 for p in prompts],
        "completion_tokens": [rng.randint(20, 200) for _ in range(n)],
        "latency_ms": [rng.lognormvariate(6.0, 0.4) * latency_scale for _ in range(n)],
        "ttft_ms": [rng.uniform(20, 80) * latency_scale for _ in range(n)],
        "input_verdict": ["allow"] * n,
        "output_verdict": ["allow"] * n,
        "verdict_reasons": [""] * n,
        "finish_reason": ["stop"] * n,
        "role": ["primary"] * n,
        "experiment": [""] * n,
        "arm": [""] * n,
        "rating": [None] * n,
        "response_format": [""] * n,
        "tool_calls": [""] * n,
        "cache": [""] * n,
        "routing_rule": [""] * n,
        "batch_id": [""] * n,
        "retrieval_version": [""] * n,
        "retrieval_ms": [None] * n,
        "retrieval_hits": [None] * n,
        "retrieval_top_score": [None] * n,
        "retrieval_urls": [""] * n,
        "semantic_cache_similarity": [None] * n,
    }
    data.update(cols)
    for field in dataclasses.fields(LogRow):  # every other column at the gateway's default
        data.setdefault(field.name, [field.default] * n)
    return pl.DataFrame(data, schema=LOG_SCHEMA)


def bpe_tokenizer() -> Tokenizer:
    """Byte-level BPE (as the pipeline trains it) on a small English corpus, plus 'café'."""
    rng = random.Random(0)
    texts = [english(rng) for _ in range(400)] + ["Un café au lait, et un autre café."] * 5
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=600, min_frequency=2, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return tok
