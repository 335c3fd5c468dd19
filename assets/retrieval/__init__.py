"""The retrieval stage: a versioned hybrid (BM25 + dense) index over the corpus, its evaluation, its release."""
