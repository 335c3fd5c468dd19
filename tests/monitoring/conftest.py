"""The monitoring tests' tokenizer: byte-level BPE (as the pipeline trains it) on a small English corpus."""

import pytest
from monitoring_traffic import bpe_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return bpe_tokenizer()
