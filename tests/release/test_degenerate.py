"""Unit tests for assets/release/degenerate.py on real outputs: the random-weight model's and real text."""

import pytest

from crawl2serve.assets.release.degenerate import degeneracy, distinct_n

# Greedy answers of the embedded model with random weights (+ LoRA) to the smoke prompts, as served.
RANDOM_MODEL_OUTPUTS = {
    ",,,,,,,,,,,,,,,,": {"no_words", "repeating_unit"},
    "kikikikikikiki": {"repeating_unit"},
    " 9 9 9 9 9": {"one_token_repeated", "repeating_unit"},
}

# Greedy answers of the embedded model after 60 and 200 pretraining steps (bench/bench_pretrain.py).
UNDERTRAINED_OUTPUTS = [
    " the the the the the the the the the the the the the the the the the the the the the the the the the",
    ".\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
    " the\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
    " the\n\nReturn the\nReturn the\nReturn the\nReturn the\nReturn the list.\n\n\n\n\n\n",
    " the\n\n\nReturn the new\nReturn the new\nReturn the new\nReturn the new object\nReturn the new list.\n",
]

LOOPS = [
    "the module and the module and the module and the module and",
    " of the of the of the of the of the of the",
    "\n\n\n   \t",
    "",
    "... --- ... --- ...",
    "json json json json json json json json json",
]

# Real text: Python documentation sentences (the embedded corpus) and ordinary prose.
GOOD = [
    " encode Python objects as JSON strings and decode JSON documents back into dictionaries and lists.",
    "The with statement is used to wrap the execution of a block with methods defined by a context manager.",
    "Return a new list containing all items from the iterable in ascending order.",
    " a for clause, then zero or more for or if clauses. The result is a new list.",
    "os.path.join(path, *paths): join one or more path segments intelligently.",
    "The committee reviewed the annual report and agreed that the library should extend its opening hours.",
    "3.14",
    "Yes.",
    "def read(path):\n    with open(path) as f:\n        return f.read()\n",
]


@pytest.mark.parametrize("text,expected", list(RANDOM_MODEL_OUTPUTS.items()))
def test_the_random_weight_model_outputs_are_degenerate(text, expected):
    assert set(degeneracy(text)) == expected


@pytest.mark.parametrize("text", UNDERTRAINED_OUTPUTS + LOOPS)
def test_loops_and_blank_outputs_are_degenerate(text):
    assert degeneracy(text), text


@pytest.mark.parametrize("text", GOOD)
def test_real_text_is_not_degenerate(text):
    assert degeneracy(text) == []


def test_each_rule_names_itself():
    assert degeneracy("   ") == ["empty"]
    assert degeneracy("x\n\n\n\n\n\n\n\n") == ["whitespace_filled"]
    assert "low_distinct_1" in degeneracy("a b a b a b a b a b a b")
    assert "repeated_ngram" in degeneracy("open the file, open the file, open the file and close it")


def test_distinct_n():
    assert distinct_n(["a", "b", "a", "b"], 1) == 0.5
    assert distinct_n(["a", "b", "a", "b"], 2) == 2 / 3
    assert distinct_n(["a"], 2) == 1.0
