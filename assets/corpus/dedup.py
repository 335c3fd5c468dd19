"""Exact and near-duplicate detection for the cleaned corpus (plain numpy, no Dagster).

Two stages, both deterministic across processes, runs and machines:

* :func:`exact_duplicate_groups` groups documents by a content hash and names one representative per
  group (highest quality, ties broken by the smallest id).
* :func:`near_duplicate_clusters` finds near-duplicates with MinHash + LSH over word n-grams
  (FineWeb's recipe: word 5-grams, 14 bands x 8 rows = 112 hash functions), then **verifies every
  candidate pair with the exact Jaccard similarity of the two shingle sets**, so a band collision
  alone never removes a document. Verified pairs are joined by union-find; each cluster keeps its
  highest-quality member. Documents are processed in the order of their ids, so clusters do not
  depend on the order of the input.

**Representative rule** (:func:`representatives`, what ``deduplicated_documents`` keeps of each
final cluster, exact and near duplicates together). The kept member is the first in this order,
each rule deciding only between members the rules before it tie:

1. ``canonical``: a member whose URL another member names as its canonical URL
   (``<link rel="canonical">``) comes first.
2. ``language``: the member whose language is a target language of the run (``DedupConfig.
   target_languages``, the languages the clean stage keeps) *and* agrees with the language its URL
   names (its canonical URL's, else its own: ``/fr/``, ``en-US``, ``ch07.fr.html``, ``?hl=de``; see
   :func:`assets.corpus.language.url_language`) or whose URL names none; then a target-language
   member whose URL names another language (an untranslated copy served under a translation's
   URL); then the others in the same two steps.
3. ``quality``: higher quality score.
4. ``path``: shorter URL path (an original tends to sit above its copies: ``/page`` vs ``/fr/page``).
5. ``url``: the smallest URL (string order), then the smallest document id.

Every key is a property of the member and its cluster, so the choice does not depend on the order
of the input (tests shuffle it). Of the English copies of an untranslated page on a translated site
(``/browse/hr-HR/stable/apt.html`` holding the English text), the English original
(``/browse/en-US/stable/apt.html``) is kept by rule 2.

Speed: shingling and hashing are vectorized over a flat byte buffer (no per-word Python work), and
the 112 permutations run as ``a*x + b mod 2**64`` (high 32 bits kept) over cache-sized blocks reduced
with ``np.minimum.reduceat``; see ``bench/bench_minhash.py`` for the measured rates.

Tokenization: text is lower-cased (``str.lower``), UTF-8 encoded, and split into maximal runs of
word bytes: ASCII letters, digits, ``_`` and non-ASCII characters, except common non-ASCII punctuation
and symbols (U+0080-U+00BF, U+00D7, U+00F7, U+2000-U+2BFF, U+2E00-U+2FFF, U+3000-U+303F, U+FEFF,
U+FFFD, U+1F000-U+1FFFF), which separate words. This approximates ``re.findall(r"\\w+")`` without a
Python loop; it only has to be applied identically to every document.

Hashes: a word's UTF-8 bytes are read 8 at a time as little-endian integers and mixed with a seeded
MurmurHash3 finalizer (words of up to 8 bytes never collide); n-grams combine their word hashes with
fixed odd multipliers and the same finalizer. All constants come from a SplitMix64 stream seeded by
``cfg.seed``. Nothing depends on Python's ``hash()`` (salted per process by PYTHONHASHSEED), NumPy's
random generators, or a library's unversioned hash.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from crawl2serve.assets.corpus.language import url_language

__all__ = [
    "EMPTY_SIGNATURE_VALUE",
    "DedupResult",
    "MinHashLSH",
    "candidate_probability",
    "exact_duplicate_groups",
    "jaccard",
    "lsh_band_keys",
    "minhash_signatures",
    "near_duplicate_clusters",
    "REPRESENTATIVE_RULES",
    "representatives",
    "shingle_sets",
    "union_into",
]

EMPTY_SIGNATURE_VALUE = np.uint32(0xFFFFFFFF)
"""Every slot of an empty document's signature holds this value; empty documents are never candidates."""

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_CHUNK_BYTES = 4 << 20  # characters of text tokenized at once: keeps each work array to tens of MB
_PERM_BLOCK_BYTES = 8 << 20  # permutation block (K x shingles x 8 bytes): cache-sized, measured fastest
_HIGH_WORD = 1 if sys.byteorder == "little" else 0  # index of the high uint32 inside a uint64

# Independent SplitMix64 streams, so changing one size (ngram, rows, bands) leaves the others' constants alone.
_STREAM_WORD, _STREAM_NGRAM, _STREAM_PERM_A, _STREAM_PERM_B, _STREAM_BAND = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class MinHashLSH:
    """Near-duplicate settings (defaults: FineWeb's word 5-grams with 14 bands x 8 rows).

    A pair with shingle Jaccard similarity ``s`` becomes an LSH candidate with probability
    ``P(s) = 1 - (1 - s**rows)**bands`` (see :func:`candidate_probability`). For 14 x 8:
    P(0.5) = 0.05, P(0.6) = 0.21, P(0.7) = 0.56, P(0.75) = 0.77, P(0.8) = 0.92, P(0.85) = 0.99,
    P(0.9) = 0.9996. The 50% point is s = 0.685, from ``(1 - 0.5**(1/bands))**(1/rows)``; the
    usual rule of thumb ``(1/bands)**(1/rows)`` puts it near 0.72. So about 8% of pairs sitting
    exactly at s = 0.8 are missed, and many pairs below 0.8 become candidates: every candidate is
    then checked with the exact Jaccard similarity, and only pairs with ``jaccard >= threshold``
    are called duplicates.

    Attributes:
        ngram: words per shingle. Documents with fewer (but at least one) words get one shingle
            made of all their words.
        bands: LSH bands.
        rows: signature rows (hash functions) per band; ``bands * rows`` hash functions in all.
        threshold: exact Jaccard similarity of the shingle sets required to call two documents
            duplicates (verified for every candidate pair).
        seed: seeds every hash function (words, n-grams, permutations, band keys).
        lowercase: lower-case the text (``str.lower``) before tokenizing.
        full_pairs_max_bucket: an LSH bucket with at most this many members is expanded into all
            its ``m*(m-1)/2`` pairs; a larger bucket gets a star from its first member plus a chain
            through consecutive members (``2m - 3`` pairs). That bounds the work on huge buckets
            (template pages) and still joins all members that are pairwise similar when at most
            one member of the bucket is not (whether it is the star's hub or not). Each pair is
            verified between the two documents it names, so an edge always means ``jaccard >=
            threshold`` for that very pair; clusters then come from union-find over the edges.
    """

    ngram: int = 5
    bands: int = 14
    rows: int = 8
    threshold: float = 0.8
    seed: int = 42
    lowercase: bool = True
    full_pairs_max_bucket: int = 16

    def __post_init__(self) -> None:
        if self.ngram < 1 or self.bands < 1 or self.rows < 1:
            raise ValueError(f"ngram, bands and rows must be >= 1, got {self.ngram}, {self.bands}, {self.rows}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.full_pairs_max_bucket < 2:
            raise ValueError(f"full_pairs_max_bucket must be >= 2, got {self.full_pairs_max_bucket}")

    @property
    def num_perm(self) -> int:
        """Number of MinHash functions (signature length): ``bands * rows``."""
        return self.bands * self.rows


@dataclass(frozen=True, eq=False)
class DedupResult:
    """Per-document near-duplicate clusters plus run facts for metadata.

    Arrays are aligned with the input documents.

    Attributes:
        cluster_id: id of the member each document's cluster keeps (its own id when it is unique).
        cluster_size: number of documents in the document's cluster (1 when unique).
        is_kept: True for the member each cluster keeps (highest quality, ties: smallest id).
        max_similarity: highest verified Jaccard similarity to another member (0.0 when none).
        candidate_pairs: distinct document pairs proposed by LSH banding.
        verified_pairs: candidate pairs whose exact Jaccard similarity reached the threshold.
        rejected_pairs: candidate pairs below the threshold (band collisions, not duplicates).
        empty_documents: documents without a single word (sentinel signature, never candidates).
        largest_bucket: members of the largest LSH bucket (large values mean templated pages).
        signature_seconds, lsh_seconds, verify_seconds: wall time of the three phases
            (verify includes recomputing shingle sets and the union-find).
        band_keys: each document's LSH band keys, shape ``(n, bands)`` uint64 (:func:`lsh_band_keys`):
            what a persistent band index stores and is queried with (assets/corpus/lsh_index.py).
        empty: True for documents without a single word (their keys are the sentinel's: never used).
    """

    cluster_id: np.ndarray
    cluster_size: np.ndarray
    is_kept: np.ndarray
    max_similarity: np.ndarray
    candidate_pairs: int
    verified_pairs: int
    rejected_pairs: int
    empty_documents: int
    largest_bucket: int
    signature_seconds: float
    lsh_seconds: float
    verify_seconds: float
    band_keys: np.ndarray
    empty: np.ndarray


def candidate_probability(s: float | np.ndarray, bands: int = 14, rows: int = 8) -> float | np.ndarray:
    """Probability that LSH proposes a pair with Jaccard similarity ``s``: ``1 - (1 - s**rows)**bands``.

    Each of the ``bands`` bands agrees on all ``rows`` MinHash values with probability ``s**rows``
    (one MinHash value agrees with probability ``s``); the pair is a candidate if any band agrees.
    """
    s = np.asarray(s, dtype=np.float64)
    p = 1.0 - (1.0 - s**rows) ** bands
    return float(p) if p.ndim == 0 else p


# --------------------------------------------------------------------------------------------------
# Exact duplicates and representatives
# --------------------------------------------------------------------------------------------------


def exact_duplicate_groups(hashes: Sequence[str], quality: Sequence[float], ids: Sequence[str]) -> np.ndarray:
    """Group documents with equal content hashes and return each one's representative index.

    Returns an int64 array ``rep`` with ``rep[i]`` = index of the document kept for document ``i``'s
    hash group: the member with the highest ``quality`` (NaN counts as lowest), ties broken by the
    smallest id (string order), then by position. ``rep[i] == i`` marks the kept documents, so
    ``is_kept = rep == np.arange(len(rep))`` and ``group_size = np.bincount(rep)[rep]``.
    """
    n = _check_lengths(hashes=hashes, quality=quality, ids=ids)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, group = np.unique(np.asarray(list(hashes), dtype=object), return_inverse=True)
    return _representatives(group.reshape(-1), quality, ids)


def _representatives(group: np.ndarray, quality: Sequence[float], ids: Sequence[str]) -> np.ndarray:
    """Index of each group's best member (max quality, then smallest id, then lowest index), per document."""
    n = len(group)
    q = np.asarray(quality, dtype=np.float64).copy()
    q[np.isnan(q)] = -np.inf
    id_rank = np.empty(n, dtype=np.int64)
    id_rank[np.argsort(np.asarray(list(ids), dtype=object), kind="stable")] = np.arange(n)
    _, dense = np.unique(group, return_inverse=True)
    dense = dense.reshape(-1)
    order = np.lexsort((np.arange(n), id_rank, -q, dense))  # last key is the primary one
    first = np.ones(n, dtype=bool)
    first[1:] = dense[order[1:]] != dense[order[:-1]]
    best = np.empty(int(dense.max()) + 1, dtype=np.int64)
    best[dense[order[first]]] = order[first]
    return best[dense]


def _check_lengths(**seqs: Sequence) -> int:
    lengths = {name: len(s) for name, s in seqs.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have equal lengths, got {lengths}")
    return next(iter(lengths.values()))


# --------------------------------------------------------------------------------------------------
# Hash constants
# --------------------------------------------------------------------------------------------------


def _splitmix64(seed: int, stream: int, n: int) -> np.ndarray:
    """``n`` uint64 values of the SplitMix64 sequence for (seed, stream): fixed forever, pure integer maths."""
    state = (seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03) & _MASK64
    z = np.arange(1, n + 1, dtype=_U64) * _U64(0x9E3779B97F4A7C15) + _U64(state)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def _fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, in place on a uint64 array (returned for chaining)."""
    x ^= x >> _U64(33)
    x *= _U64(0xFF51AFD7ED558CCD)
    x ^= x >> _U64(33)
    x *= _U64(0xC4CEB9FE1A85EC53)
    x ^= x >> _U64(33)
    return x


class _Hashers:
    """All constants derived from a config (cached per config: they cost ~1 ms to draw)."""

    _cache: dict[MinHashLSH, _Hashers] = {}

    def __init__(self, cfg: MinHashLSH) -> None:
        self.word_seed, word_mult = _splitmix64(cfg.seed, _STREAM_WORD, 2)
        self.word_mult = word_mult | _U64(1)
        self.ngram_mult = _splitmix64(cfg.seed, _STREAM_NGRAM, cfg.ngram) | _U64(1)
        self.perm_a = (_splitmix64(cfg.seed, _STREAM_PERM_A, cfg.num_perm) | _U64(1)).reshape(-1, 1)
        self.perm_b = _splitmix64(cfg.seed, _STREAM_PERM_B, cfg.num_perm).reshape(-1, 1)
        self.band_mult = _splitmix64(cfg.seed, _STREAM_BAND, cfg.rows) | _U64(1)

    @classmethod
    def of(cls, cfg: MinHashLSH) -> _Hashers:
        h = cls._cache.get(cfg)
        if h is None:
            h = cls._cache[cfg] = cls(cfg)
        return h


# --------------------------------------------------------------------------------------------------
# Tokenizing and shingling (vectorized over a flat UTF-8 buffer)
# --------------------------------------------------------------------------------------------------

_WORD_BYTE = np.zeros(256, dtype=bool)
for _lo, _hi in ((ord("0"), ord("9")), (ord("A"), ord("Z")), (ord("a"), ord("z")), (0x80, 0xFF)):
    _WORD_BYTE[_lo : _hi + 1] = True
_WORD_BYTE[ord("_")] = True


def _word_mask(buf: np.ndarray) -> np.ndarray:
    """True for bytes inside words: ASCII [0-9A-Za-z_] and non-ASCII characters except punctuation/symbols."""
    isw = _WORD_BYTE[buf]
    lead = np.flatnonzero(buf >= 0xC2)  # UTF-8 lead bytes of multi-byte characters
    if lead.size:
        b1 = buf[lead]
        nxt = np.minimum(lead + 1, buf.size - 1)
        b2 = buf[nxt]
        b3 = buf[np.minimum(lead + 2, buf.size - 1)]
        two = (b1 == 0xC2) | ((b1 == 0xC3) & ((b2 == 0x97) | (b2 == 0xB7)))  # U+0080-00BF, x, /
        three = (b1 == 0xE2) & ((b2 < 0xB0) | (b2 >= 0xB8))  # U+2000-2BFF, U+2E00-2FFF
        three |= (b1 == 0xE3) & (b2 == 0x80)  # U+3000-303F CJK punctuation
        three |= (b1 == 0xEF) & (((b2 == 0xBB) & (b3 == 0xBF)) | ((b2 == 0xBF) & (b3 == 0xBD)))  # BOM, U+FFFD
        four = (b1 == 0xF0) & (b2 == 0x9F)  # U+1F000-1FFFF emoji and symbols
        width = two * 2 + three * 3 + four * 4
        hit = width > 0
        if hit.any():
            starts, width = lead[hit], width[hit].astype(np.int64)
            span = np.repeat(starts, width) + (np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width))
            isw[span[span < buf.size]] = False
    return isw


def _encode_chunk(texts: Sequence[str | None], lowercase: bool) -> tuple[bytes, np.ndarray]:
    """Join documents as UTF-8 with one space between them (and 8 after the last one).

    Returns the bytes and each document's start offset. The separators guarantee that no word runs
    across two documents and that an 8-byte read starting inside a word stays inside the buffer.
    """
    enc = []
    for t in texts:
        if not t:
            enc.append(b"")
        else:
            enc.append((t.lower() if lowercase else t).encode("utf-8", "surrogatepass"))
    lengths = np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc))
    starts = np.zeros(len(enc), dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=starts[1:])
    return b" ".join(enc) + b" " * 8, starts


_LOW_BYTES_MASK = np.array([(1 << (8 * i)) - 1 for i in range(9)], dtype=_U64)  # keep the first i bytes


def _word_hashes(raw: bytes, starts: np.ndarray, lengths: np.ndarray, h: _Hashers) -> np.ndarray:
    """Hash each word from its bytes, 8 at a time, read as little-endian uint64 (unaligned strided view).

    A word of up to 8 bytes is packed losslessly into one integer (word bytes are never 0x00) and put
    through a seeded bijection, so such words never collide; longer words fold in one 8-byte block
    per round.
    """
    blocks = np.ndarray(shape=(len(raw) - 7,), dtype="<u8", buffer=raw, strides=(1,))
    out = blocks[starts] & _LOW_BYTES_MASK[np.minimum(lengths, 8)]
    out ^= h.word_seed
    _fmix64(out)
    todo = np.flatnonzero(lengths > 8)
    k = 1
    while todo.size:
        rest = lengths[todo] - 8 * k
        block = blocks[starts[todo] + 8 * k] & _LOW_BYTES_MASK[np.minimum(rest, 8)]
        out[todo] = _fmix64(out[todo] * h.word_mult ^ block)
        todo = todo[rest > 8]
        k += 1
    return out


def _shingles_chunk(texts: Sequence[str | None], cfg: MinHashLSH, h: _Hashers) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of a few documents: (flat uint64 array, per-document offsets of length n+1).

    Not deduplicated within a document (MinHash does not need it; :func:`shingle_sets` does it).
    """
    n_docs = len(texts)
    raw, doc_starts = _encode_chunk(texts, cfg.lowercase)
    buf = np.frombuffer(raw, dtype=np.uint8)
    isw = _word_mask(buf)
    edge = isw[1:] != isw[:-1]  # the buffer starts with a document and ends with separators
    word_starts = np.flatnonzero(edge & isw[1:]) + 1
    if isw[0]:
        word_starts = np.concatenate([[0], word_starts])
    word_ends = np.flatnonzero(edge & isw[:-1]) + 1
    del isw, edge
    nw_total = word_starts.size
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    if nw_total == 0:
        return np.zeros(0, dtype=_U64), offsets
    word_hash = _word_hashes(raw, word_starts, word_ends - word_starts, h)

    doc_of_word = np.searchsorted(doc_starts, word_starts, side="right") - 1
    nw = np.bincount(doc_of_word, minlength=n_docs)
    first_word = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(nw, out=first_word[1:])

    # n-gram hashes: sum_k word_hash[j + k] * m_k (mod 2**64), then finalized.
    n = cfg.ngram
    g = word_hash * h.ngram_mult[0]
    for k in range(1, min(n, nw_total)):
        g[: nw_total - k] += word_hash[k:] * h.ngram_mult[k]
    remaining = first_word[doc_of_word + 1] - np.arange(nw_total)  # words from j to the document's end
    keep = remaining >= n
    short = np.flatnonzero((nw > 0) & (nw < n))
    if short.size:  # one shingle of all words for documents shorter than n words
        f0 = first_word[short]
        gs = word_hash[f0] * h.ngram_mult[0]
        for k in range(1, n):
            has = nw[short] > k
            gs[has] += word_hash[f0[has] + k] * h.ngram_mult[k]
        g[f0] = gs
        keep[f0] = True
    shingles = _fmix64(g[keep])
    np.cumsum(np.where(nw >= n, nw - n + 1, np.minimum(nw, 1)), out=offsets[1:])
    return shingles, offsets


def _doc_chunks(texts: Sequence[str | None]) -> list[tuple[int, int]]:
    """Split documents into consecutive [start, stop) ranges holding about _CHUNK_BYTES of text."""
    chunks, start, size = [], 0, 0
    for i, t in enumerate(texts):
        size += len(t) if t else 0  # characters: a cheap stand-in for UTF-8 bytes
        if size >= _CHUNK_BYTES:
            chunks.append((start, i + 1))
            start, size = i + 1, 0
    if start < len(texts):
        chunks.append((start, len(texts)))
    return chunks


def shingle_sets(texts: Sequence[str | None], cfg: MinHashLSH = MinHashLSH()) -> list[np.ndarray]:
    """Each document's set of word n-gram hashes, as a sorted array of unique uint64 values.

    Empty documents (no word) give an empty array; documents with fewer than ``cfg.ngram`` words give
    one shingle of all their words.
    """
    h = _Hashers.of(cfg)
    out: list[np.ndarray] = []
    for start, stop in _doc_chunks(texts):
        flat, off = _shingles_chunk(texts[start:stop], cfg, h)
        out.extend(np.unique(flat[off[i] : off[i + 1]]) for i in range(stop - start))
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity |A & B| / |A | B| of two shingle sets (0.0 if either is empty).

    Arrays from :func:`shingle_sets` are sorted and unique already; other arrays are made so first.
    """
    a, b = _as_set(a), _as_set(b)
    if a.size == 0 or b.size == 0:
        return 0.0
    if a.size > b.size:
        a, b = b, a
    idx = np.searchsorted(b, a)
    idx[idx == b.size] = 0
    inter = int(np.count_nonzero(b[idx] == a))
    return inter / (a.size + b.size - inter)


def _as_set(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.size > 1 and not bool(np.all(x[1:] > x[:-1])):
        x = np.unique(x)
    return x


# --------------------------------------------------------------------------------------------------
# MinHash signatures
# --------------------------------------------------------------------------------------------------


def minhash_signatures(texts: Sequence[str | None], cfg: MinHashLSH = MinHashLSH()) -> np.ndarray:
    """MinHash signatures, shape ``(n_docs, bands * rows)``, dtype uint32.

    Slot k of a signature is ``min over the document's shingles x of high32(a_k * x + b_k mod 2**64)``
    with odd ``a_k`` and any ``b_k`` drawn from ``cfg.seed``. Two documents agree on a slot with
    probability close to the Jaccard similarity of their shingle sets, so the fraction of agreeing
    slots estimates it (standard error sqrt(s(1-s)/K): 0.047 at s = 0.5 with K = 112).
    Empty documents get :data:`EMPTY_SIGNATURE_VALUE` in every slot.
    """
    return _signatures(texts, cfg)[0]


def _signatures(texts: Sequence[str | None], cfg: MinHashLSH) -> tuple[np.ndarray, np.ndarray]:
    """Signatures plus a boolean mask of empty documents."""
    h = _Hashers.of(cfg)
    k = cfg.num_perm
    sig = np.full((len(texts), k), EMPTY_SIGNATURE_VALUE, dtype=np.uint32)
    empty = np.ones(len(texts), dtype=bool)
    step = max(1024, _PERM_BLOCK_BYTES // (8 * k))
    block = np.empty((k, step), dtype=_U64)
    for start, stop in _doc_chunks(texts):
        shingles, off = _shingles_chunk(texts[start:stop], cfg, h)
        empty[start:stop] = off[1:] == off[:-1]
        _minhash_into(sig[start:stop], shingles, off, h, block)
    return sig, empty


def _minhash_into(sig: np.ndarray, shingles: np.ndarray, off: np.ndarray, h: _Hashers, block: np.ndarray) -> None:
    """Fold the permuted shingles into ``sig`` (rows aligned with ``off``) block by block."""
    step = block.shape[1]
    seg_starts = np.unique(off[:-1])  # empty documents repeat an offset: drop them
    seg_starts = seg_starts[seg_starts < shingles.size]
    for s in range(0, shingles.size, step):
        x = shingles[s : s + step]
        buf = block[:, : x.size]
        np.multiply(h.perm_a, x, out=buf)
        np.add(buf, h.perm_b, out=buf)
        high = buf.view(np.uint32)[:, _HIGH_WORD::2]
        lo, hi = np.searchsorted(seg_starts, [s, s + x.size])
        bounds = seg_starts[lo:hi]
        if bounds.size == 0 or bounds[0] != s:  # block starts inside a document
            bounds = np.concatenate([[s], bounds])
        mins = np.minimum.reduceat(high, bounds - s, axis=1)  # (K, segments)
        docs = np.searchsorted(off, bounds, side="right") - 1  # the non-empty document owning each segment
        sig[docs] = np.minimum(sig[docs], mins.T)


# --------------------------------------------------------------------------------------------------
# LSH, verification, clusters
# --------------------------------------------------------------------------------------------------


def lsh_band_keys(texts: Sequence[str | None], cfg: MinHashLSH = MinHashLSH()) -> tuple[np.ndarray, np.ndarray]:
    """Each document's LSH band keys, shape ``(n, bands)`` uint64, and a mask of empty documents.

    Two documents share band ``b``'s key when their signatures agree on all ``rows`` values of band ``b``
    (keys of different bands are not comparable: band ``b`` of one document is matched against band ``b``
    of the other). These are the keys :func:`near_duplicate_clusters` buckets documents by.
    """
    sig, empty = _signatures(texts, cfg)
    return _band_keys(sig, cfg, _Hashers.of(cfg)), empty


def _band_keys(sig: np.ndarray, cfg: MinHashLSH, h: _Hashers) -> np.ndarray:
    """One uint64 key per (document, band): the band's rows mixed and finalized. Shape (n, bands)."""
    keys = np.zeros((sig.shape[0], cfg.bands), dtype=_U64)
    for b in range(cfg.bands):
        band = sig[:, b * cfg.rows : (b + 1) * cfg.rows].astype(_U64)
        acc = keys[:, b]
        for r in range(cfg.rows):
            acc += band[:, r] * h.band_mult[r]
        keys[:, b] = _fmix64(acc)
    return keys


def _bucket_pairs(members: np.ndarray, full_max: int) -> np.ndarray:
    """Pairs to verify inside one bucket (members ascending): all pairs, or star + chain when large."""
    m = members.size
    if m <= full_max:
        i, j = np.triu_indices(m, 1)
        return np.stack([members[i], members[j]], axis=1)
    star = np.stack([np.full(m - 1, members[0]), members[1:]], axis=1)
    chain = np.stack([members[1:-1], members[2:]], axis=1)
    return np.concatenate([star, chain])


def _candidate_pairs(keys: np.ndarray, valid: np.ndarray, cfg: MinHashLSH) -> tuple[np.ndarray, int]:
    """Distinct (i, j), i < j, pairs sharing at least one band key; plus the largest bucket's size."""
    n = keys.shape[0]
    docs = np.flatnonzero(valid)
    codes: list[np.ndarray] = []
    largest = 1 if docs.size else 0
    for b in range(keys.shape[1]):
        kb = keys[docs, b]
        order = np.argsort(kb, kind="stable")
        sk, members = kb[order], docs[order]
        starts = np.flatnonzero(np.concatenate([[True], sk[1:] != sk[:-1]]))
        sizes = np.diff(np.concatenate([starts, [sk.size]]))
        if sizes.size:
            largest = max(largest, int(sizes.max()))
        two = starts[sizes == 2]
        codes.append(members[two] * n + members[two + 1])
        for st, sz in zip(starts[sizes > 2], sizes[sizes > 2]):
            p = _bucket_pairs(members[st : st + sz], cfg.full_pairs_max_bucket)
            codes.append(p[:, 0] * n + p[:, 1])
    code = np.unique(np.concatenate(codes)) if codes else np.zeros(0, dtype=np.int64)
    return np.stack([code // n, code % n], axis=1) if code.size else np.zeros((0, 2), np.int64), largest


def _connected_components(n: int, edges: np.ndarray) -> np.ndarray:
    """Union-find over edges (vectorized hook-and-compress); returns the smallest index of each component."""
    return union_into(np.arange(n, dtype=np.int64), edges)


def union_into(parent: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Join the components of a forest by ``edges`` (``(m, 2)`` node indices); returns the new forest.

    ``parent`` must be compressed: every node points at its component's root, and a root at itself
    (``np.arange(n)`` is the forest of singletons; every forest this function returns is compressed).
    Roots are hooked onto smaller roots, so a component's root is never larger than the root it had.
    Called batch after batch, it is a streamed union-find: the result does not depend on how the edges
    are split into batches.
    """
    if edges.size == 0:
        return parent
    u, v = edges[:, 0], edges[:, 1]
    while True:
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            return parent
        lo, hi = np.minimum(pu[differ], pv[differ]), np.maximum(pu[differ], pv[differ])
        np.minimum.at(parent, hi, lo)  # hook roots onto smaller roots: no cycles
        while True:  # compress until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def near_duplicate_clusters(
    texts: Sequence[str | None],
    ids: Sequence[str],
    quality: Sequence[float],
    cfg: MinHashLSH = MinHashLSH(),
) -> DedupResult:
    """Cluster near-duplicate documents and pick the one each cluster keeps.

    1. Signatures (:func:`minhash_signatures`).
    2. LSH: documents sharing all ``rows`` values of any band land in one bucket; buckets become
       candidate pairs (all pairs up to ``cfg.full_pairs_max_bucket`` members, star + chain above).
       Pairs found in several bands are counted once. Empty documents are never candidates.
    3. Verification: each candidate pair's exact shingle-set Jaccard similarity is computed; pairs
       with ``jaccard >= cfg.threshold`` become edges, the rest are counted as rejected.
    4. Union-find over the edges; each cluster keeps its highest-quality member (NaN lowest; ties:
       smallest id) and is named by that member's id. Clusters are transitive: A~B and B~C put A, B
       and C in one cluster even when A and C are less similar than the threshold.

    ``texts`` is indexed and sliced like a list (pass ``series.to_list()`` for a polars column);
    ``None`` counts as an empty document. The documents are processed in the order of their ids (the
    input order is restored in the result), so which pairs a large bucket proposes, and hence the
    clusters, do not depend on the input order.
    """
    n = _check_lengths(texts=texts, ids=ids, quality=quality)
    perm = np.argsort(np.asarray(list(ids), dtype=object), kind="stable") if n else np.zeros(0, dtype=np.int64)
    if n and (perm != np.arange(n)).any():
        res = near_duplicate_clusters([texts[i] for i in perm], [ids[i] for i in perm], [quality[i] for i in perm], cfg)
        inv = np.empty(n, dtype=np.int64)
        inv[perm] = np.arange(n)
        aligned = ("cluster_id", "cluster_size", "is_kept", "max_similarity", "band_keys", "empty")
        return dataclasses.replace(res, **{f: getattr(res, f)[inv] for f in aligned})
    h = _Hashers.of(cfg)

    t0 = time.perf_counter()
    sig, empty = _signatures(texts, cfg)
    t1 = time.perf_counter()
    keys = _band_keys(sig, cfg, h)
    del sig
    pairs, largest = _candidate_pairs(keys, ~empty, cfg)
    t2 = time.perf_counter()

    sims = np.zeros(len(pairs), dtype=np.float64)
    if len(pairs):
        involved = np.unique(pairs)
        slot = np.full(n, -1, dtype=np.int64)
        slot[involved] = np.arange(involved.size)
        sets = shingle_sets([texts[i] for i in involved], cfg)
        for p, (i, j) in enumerate(pairs):
            sims[p] = jaccard(sets[slot[i]], sets[slot[j]])
    ok = sims >= cfg.threshold
    edges = pairs[ok]
    max_sim = np.zeros(n, dtype=np.float64)
    if edges.size:
        np.maximum.at(max_sim, edges[:, 0], sims[ok])
        np.maximum.at(max_sim, edges[:, 1], sims[ok])
    root = _connected_components(n, edges)
    rep = _representatives(root, quality, ids) if n else np.zeros(0, dtype=np.int64)
    ids_arr = np.asarray(list(ids), dtype=object)
    t3 = time.perf_counter()

    return DedupResult(
        cluster_id=ids_arr[rep] if n else np.zeros(0, dtype=object),
        cluster_size=np.bincount(root, minlength=n)[root].astype(np.int64),
        is_kept=rep == np.arange(n),
        max_similarity=max_sim,
        candidate_pairs=int(len(pairs)),
        verified_pairs=int(ok.sum()),
        rejected_pairs=int(len(pairs) - ok.sum()),
        empty_documents=int(empty.sum()),
        largest_bucket=int(largest),
        signature_seconds=t1 - t0,
        lsh_seconds=t2 - t1,
        verify_seconds=t3 - t2,
        band_keys=keys,
        empty=empty,
    )


# --------------------------------------------------------------------------------------------------
# Representatives of the final clusters
# --------------------------------------------------------------------------------------------------

REPRESENTATIVE_RULES: tuple[str, ...] = ("canonical", "language", "quality", "path", "url")
"""The representative rule's keys, in order (see the module doc)."""


def _language_key(language: str | None, url: str | None, canonical: str | None, targets: frozenset[str]) -> int:
    base = (language or "").split("-")[0].lower()
    named = url_language(canonical) if canonical and canonical != url else None
    named = named or url_language(url)
    agrees = named is None or named == base
    in_target = not targets or base in targets
    return (0 if in_target else 2) + (0 if agrees else 1)


def representatives(
    groups: Sequence[int] | np.ndarray,
    urls: Sequence[str],
    canonical_urls: Sequence[str | None],
    languages: Sequence[str | None],
    quality: Sequence[float],
    ids: Sequence[str],
    target_languages: Sequence[str] = ("en",),
) -> tuple[np.ndarray, dict[str, int]]:
    """Index of each document's cluster representative, and how many clusters each rule decided.

    ``groups`` labels the final clusters (any integers; documents with equal labels form one
    cluster). The representative is the first member under :data:`REPRESENTATIVE_RULES` (module
    doc); ``rep == np.arange(n)`` marks the kept documents. The counts name, for every cluster of
    two or more members, the first rule on which its representative beats the runner-up.
    """
    n = _check_lengths(
        groups=groups, urls=urls, canonical_urls=canonical_urls, languages=languages, quality=quality, ids=ids
    )
    decided = dict.fromkeys(REPRESENTATIVE_RULES, 0)
    if n == 0:
        return np.zeros(0, dtype=np.int64), decided
    _, dense = np.unique(np.asarray(groups), return_inverse=True)
    dense = dense.reshape(-1)
    targets = frozenset(t.split("-")[0].lower() for t in target_languages)
    named: dict[tuple[int, str], int] = {}  # (cluster, url) -> members naming it canonical, besides itself
    for g, u, c in zip(dense.tolist(), urls, canonical_urls):
        if c and c != u:
            named[(g, c)] = named.get((g, c), 0) + 1
    canon = np.array([0 if named.get((g, u), 0) else 1 for g, u in zip(dense.tolist(), urls)], dtype=np.int64)
    lang = np.array(
        [_language_key(la, u, c, targets) for la, u, c in zip(languages, urls, canonical_urls)], dtype=np.int64
    )
    q = np.asarray(quality, dtype=np.float64).copy()
    q[np.isnan(q)] = -np.inf
    path = np.array([len(urlsplit(u).path) if u else 0 for u in urls], dtype=np.int64)
    url_rank = np.empty(n, dtype=np.int64)
    url_rank[
        np.lexsort(
            (
                np.asarray(list(ids), dtype=object).argsort(kind="stable").argsort(),
                np.asarray([u or "" for u in urls], dtype=object).argsort(kind="stable").argsort(),
            )
        )
    ] = np.arange(n)
    keys = (canon, lang, -q, path, url_rank)  # REPRESENTATIVE_RULES, in order
    order = np.lexsort(tuple(reversed(keys)) + (dense,))  # the last key is the primary one
    first = np.ones(n, dtype=bool)
    first[1:] = dense[order[1:]] != dense[order[:-1]]
    best = np.empty(int(dense.max()) + 1, dtype=np.int64)
    best[dense[order[first]]] = order[first]
    second = order[1:][~first[1:] & first[:-1]]  # the runner-up of each cluster with two or more members
    for j in second.tolist():
        i = best[dense[j]]
        rule = next((name for name, k in zip(REPRESENTATIVE_RULES, keys) if k[i] != k[j]), "url")
        decided[rule] += 1
    return best[dense], decided
