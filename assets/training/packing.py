"""Training-set assembly: document selection, stable train/validation splits, sequence packing (no Dagster).

* :func:`newest_partitions` keeps the documents of the newest crawl partitions (the run's own crawl first).
* :func:`select_documents` keeps documents above a quality threshold, at most N per domain, best first.
* :func:`choose_split_key` and :func:`assign_split` put every document in "train" or "validation" (or
  "pretrain": left to the embedded base model) by a stable hash of its split key (its domain, or its URL for
  corpora with few domains), so a document stays in the same split across runs, processes and machines, and
  documents sharing a key never straddle.
* :func:`pack` / :func:`pack_documents` concatenate tokenized documents, each followed by eos, and cut the
  stream into fixed-length rows (no padding inside the stream, no attention masks needed).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import numpy as np
import polars as pl

__all__ = [
    "assign_split",
    "choose_split_key",
    "newest_partitions",
    "pack",
    "pack_documents",
    "select_documents",
    "split_keys",
    "stable_bucket",
]

TRAIN, VALIDATION, PRETRAIN = "train", "validation", "pretrain"


def stable_bucket(key: str, salt: str = "") -> float:
    """Map ``key`` to a float in [0, 1), the same in every process and on every machine.

    Uses BLAKE2b (64-bit digest) over the length-prefixed salt and the key, never Python's ``hash()``
    (salted per process by PYTHONHASHSEED). The top 53 bits become the float, so 1.0 is never returned.
    A different ``salt`` gives an independent assignment.
    """
    salt_bytes = salt.encode()
    data = len(salt_bytes).to_bytes(4, "little") + salt_bytes + key.encode()
    value = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    return (value >> 11) * 2.0**-53


def assign_split(
    keys: Sequence[str], validation_share: float, salt: str = "split", pretrain_share: float = 0.0
) -> list[str]:
    """Return "train", "validation" or "pretrain" for each key.

    "validation" when ``stable_bucket(key, salt) < validation_share``; of the other keys, "pretrain" when
    ``stable_bucket(key, "pretrain") < pretrain_share`` (the pages the embedded base model pretrains on and the
    fine-tuning set leaves to it, :class:`~crawl2serve.resources.base_model.BaseModelSource`), else "train".
    Equal keys always get the same split, and a key's split does not depend on the other keys, so adding
    documents never moves existing ones. The realized shares are the given ones on average over keys (not
    documents: a large domain moves as one).
    """
    for name, share in (("validation_share", validation_share), ("pretrain_share", pretrain_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share}")
    return [
        VALIDATION
        if stable_bucket(key, salt) < validation_share
        else PRETRAIN
        if stable_bucket(key, "pretrain") < pretrain_share
        else TRAIN
        for key in keys
    ]


def choose_split_key(urls: Sequence[str], hosts: Sequence[str], min_domains: int = 20) -> str:
    """Choose what documents are split by: "domain" if there are at least ``min_domains`` hosts, else "url".

    Splitting by domain keeps all pages of a site on one side, so templates, navigation text and
    near-duplicate pages of a site cannot leak from train into validation and flatter the validation
    loss. But a domain split moves whole domains: with few domains the validation share is very coarse
    (one big domain may be all of it, or none may fall there) and validation may cover none of the topics
    trained on. Below ``min_domains`` distinct hosts, splitting by URL gives a usable share, at the price
    of that within-site leakage (exact and near duplicates are already removed by the corpus stage).

    Returns:
        "domain" (use the hosts as split keys) or "url" (use the URLs).
    """
    if len(urls) != len(hosts):
        raise ValueError(f"urls and hosts differ in length: {len(urls)} != {len(hosts)}")
    return "domain" if len(set(hosts)) >= min_domains else "url"


def split_keys(urls: Sequence[str], hosts: Sequence[str], min_domains: int = 20) -> tuple[str, list[str]]:
    """The split key of every document: ``(kind, keys)`` with kind from :func:`choose_split_key`.

    Domain mode keys on the host. URL mode keys on path and query, not host:port: the embedded pydoc server
    listens on a new port every run, and a document must not change split because its server moved. The
    fine-tuning set and the base model's pretraining set both split with these keys, so with the same
    share the pages held out of one are held out of the other.
    """
    kind = choose_split_key(urls, hosts, min_domains)
    if kind == "domain":
        return kind, list(hosts)
    parts = [urlsplit(u) for u in urls]
    return kind, [p.path + ("?" + p.query if p.query else "") for p in parts]


def newest_partitions(
    frames: dict[str, pl.DataFrame],
    n: int | None,
    column: str = "crawl_partition",
    earlier: dict[str, pl.DataFrame] | None = None,
) -> pl.DataFrame:
    """The documents of the newest ``n`` partitions of ``frames`` (``{partition key: documents}``), in one frame
    with the partition key in ``column``; ``n=None`` keeps every partition. Partitions without a row do not
    count. Keys are crawl days (``YYYY-MM-DD``), so the newest sort last.

    ``earlier`` (``{partition key: duplicate_clusters rows}``) brings back the pages a partition crawled but did
    not keep because an earlier day kept them (global dedup: ``duplicate_kind == "earlier"``, ``cluster_id``
    the earlier page, ``earlier_partition`` its day): the newest crawl's pages are its new pages *and* its
    re-crawls of unchanged ones, each as kept (with its own day in ``column``). A partition that kept nothing
    but re-crawled earlier pages counts.

    Raises:
        ValueError: when ``n`` is below 1, or no partition holds a document.
    """
    if n is not None and n < 1:
        raise ValueError(f"newest_partitions must be >= 1 or None, got {n}")
    copies = {
        k: f.filter(pl.col("duplicate_kind") == "earlier").select("cluster_id", "earlier_partition")
        for k, f in (earlier or {}).items()
        if {"duplicate_kind", "cluster_id", "earlier_partition"} <= set(f.columns)
    }
    present = sorted({k for k, f in frames.items() if f.height} | {k for k, f in copies.items() if f.height})
    if not present:
        raise ValueError(f"no documents in any partition (of {sorted(frames)})")
    kept = present if n is None else present[-n:]
    parts = [frames[k].with_columns(pl.lit(k, dtype=pl.String).alias(column)) for k in kept if k in frames]
    wanted = pl.concat([copies[k] for k in kept if k in copies] or [pl.DataFrame(schema=_COPY_SCHEMA)])
    for day, ids in wanted.group_by("earlier_partition"):
        day = day[0]
        if day in frames and day not in kept:
            rows = frames[day].filter(pl.col("doc_id").is_in(ids["cluster_id"].implode()))
            parts.append(rows.with_columns(pl.lit(day, dtype=pl.String).alias(column)))
    return pl.concat(parts, how="diagonal_relaxed")


_COPY_SCHEMA = {"cluster_id": pl.String, "earlier_partition": pl.String}


def select_documents(
    df: pl.DataFrame, min_quality: float, max_docs_per_domain: int | None, seed: int = 0
) -> pl.DataFrame:
    """Keep documents with ``quality_score >= min_quality``, at most ``max_docs_per_domain`` per host.

    Within a host the best documents are kept: highest ``quality_score`` first, ties broken by the
    smallest ``doc_id``. Rows with a null or NaN quality are dropped. Kept rows stay in their input order.
    The choice is a pure function of (host, quality_score, doc_id), independent of row order; ``seed`` is
    accepted for interface stability and does not change the result (no random choice is needed).

    Args:
        df: needs columns ``doc_id``, ``host`` and ``quality_score``; other columns pass through.
        min_quality: inclusive lower bound on ``quality_score``.
        max_docs_per_domain: cap per host; ``None`` for no cap.
        seed: unused, see above.
    """
    del seed
    if max_docs_per_domain is not None and max_docs_per_domain < 0:
        raise ValueError(f"max_docs_per_domain must be >= 0 or None, got {max_docs_per_domain}")
    quality = pl.col("quality_score").cast(pl.Float64)
    kept = df.with_row_index("_row").filter(quality.is_not_nan() & (quality >= min_quality))
    if max_docs_per_domain is not None:
        kept = (
            kept.sort(["quality_score", "doc_id"], descending=[True, False])
            .filter(pl.int_range(pl.len()).over("host") < max_docs_per_domain)
            .sort("_row")
        )
    return kept.drop("_row")


def pack(
    token_lists: Iterable[Sequence[int]],
    seq_len: int,
    eos_id: int,
    bos_id: int | None = None,
    drop_remainder: bool = True,
) -> np.ndarray:
    """Concatenate documents, each followed by ``eos_id`` (and preceded by ``bos_id`` if given), into rows.

    The stream ``[bos] doc0 eos [bos] doc1 eos ...`` is cut into rows of ``seq_len`` tokens; a document
    may continue from one row into the next. The final partial row is dropped (default) or, with
    ``drop_remainder=False``, filled up with ``eos_id``: padding then reads as further end-of-document
    tokens, so no attention mask is needed, but the loss on those positions is meaningless and callers
    that care should mask positions after the last real eos of the final row.

    Returns:
        int32 array of shape ``(n_rows, seq_len)``; ``(0, seq_len)`` when there is not a full row (or no
        input). ``n_rows * seq_len`` equals the stream length minus the dropped tail.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    docs = list(token_lists)
    lengths = np.fromiter((len(doc) for doc in docs), dtype=np.int64, count=len(docs))
    tokens = np.fromiter(itertools.chain.from_iterable(docs), dtype=np.int32, count=int(lengths.sum()))
    has_bos = int(bos_id is not None)
    segment = lengths + 1 + has_bos  # a document's length in the stream
    seg_start = np.cumsum(segment) - segment
    doc_start = np.cumsum(lengths) - lengths  # where each document starts in ``tokens``
    stream = np.full(int(segment.sum()), eos_id, dtype=np.int32)  # separators are eos by default
    if has_bos:
        stream[seg_start] = bos_id
    # token i of document d sits at seg_start[d] + has_bos + (i - doc_start[d])
    stream[np.arange(tokens.size) + np.repeat(seg_start + has_bos - doc_start, lengths)] = tokens
    n_rows = stream.size // seq_len if drop_remainder else -(-stream.size // seq_len)
    if n_rows * seq_len > stream.size:
        stream = np.concatenate([stream, np.full(n_rows * seq_len - stream.size, eos_id, dtype=np.int32)])
    return np.ascontiguousarray(stream[: n_rows * seq_len].reshape(n_rows, seq_len))


def pack_documents(
    texts: Iterable[str],
    tokenizer,
    seq_len: int,
    batch_size: int = 256,
    *,
    add_bos: bool = False,
    drop_remainder: bool = True,
) -> tuple[np.ndarray, int]:
    """Tokenize ``texts`` in batches with a fast tokenizer and :func:`pack` them into rows.

    Documents are encoded without special tokens (``add_special_tokens=False``); the separators come
    from the tokenizer's ``eos_token_id`` (and ``bos_token_id`` with ``add_bos``).

    Returns:
        ``(rows, n_tokens)``: the packed int32 array of shape ``(n_rows, seq_len)`` and the number of
        document tokens produced by the tokenizer (separators not counted, dropped tail included).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token")
    bos_id = tokenizer.bos_token_id if add_bos else None
    if add_bos and bos_id is None:
        raise ValueError("add_bos=True but the tokenizer has no bos token")
    token_lists: list[list[int]] = []
    iterator = iter(texts)
    while batch := list(itertools.islice(iterator, batch_size)):
        # verbose=False: documents longer than model_max_length are expected here (they are cut by pack)
        token_lists.extend(tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"])
    n_tokens = sum(len(ids) for ids in token_lists)
    return pack(token_lists, seq_len, tokenizer.eos_token_id, bos_id, drop_remainder), n_tokens
