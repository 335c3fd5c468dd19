"""Chunks of documents for retrieval: split at headings, then into windows of word tokens with an overlap.

A heading is a short line that reads as a title: a Markdown ``#`` line, or a line of at most
:data:`HEADING_MAX_WORDS` words without closing punctuation that stands after a blank line (what the extracted
text of documentation pages looks like: pydoc's "Functions", "Classes", "Data"; Sphinx section titles). Each
section is cut into windows of ``max_tokens`` whitespace tokens overlapping by ``overlap`` tokens, so a sentence
cut at a window's end is whole in the next one. A chunk's id is its document's URL and its position; its
``content_hash`` is what an incremental re-index compares to find the chunks that changed.
"""

import hashlib
import re
from dataclasses import dataclass

import polars as pl

HEADING_MAX_WORDS = 8
_CLOSING = ".,;:!?)]}\"'"
_MARKDOWN_HEADING = re.compile(r"^#{1,6}\s+(.+)$")

CHUNK_SCHEMA = {
    "chunk_id": pl.String,
    "doc_id": pl.String,
    "url": pl.String,
    "title": pl.String,
    "heading": pl.String,
    "position": pl.Int64,
    "text": pl.String,
    "tokens": pl.Int64,
    "content_hash": pl.String,
}
CHUNK_COLUMNS = {
    "chunk_id": "The chunk's id: a hash of its document's URL and its position in the document.",
    "doc_id": "The source document (deduplicated_documents.doc_id).",
    "url": "The source document's URL: what an answer cites.",
    "title": "The source document's title.",
    "heading": "The heading of the section the chunk is in ('' before the first heading).",
    "position": "The chunk's ordinal in its document, from 0.",
    "text": "The chunk's text (whitespace tokens joined by single spaces).",
    "tokens": "Whitespace tokens in the chunk.",
    "content_hash": "SHA-1 of title, heading and text: a changed chunk gets a new hash.",
}


@dataclass(frozen=True)
class Chunker:
    """Heading- then token-window chunking. ``max_tokens`` whitespace tokens a window, ``overlap`` of them shared
    with the next window of the same section (``0 <= overlap < max_tokens``)."""

    max_tokens: int = 200
    overlap: int = 40

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens={self.max_tokens}: must be at least 1")
        if not 0 <= self.overlap < self.max_tokens:
            raise ValueError(f"overlap={self.overlap}: must be at least 0 and below max_tokens={self.max_tokens}")

    def sections(self, text: str) -> list[tuple[str, str]]:
        """``(heading, body)`` of each section of ``text``, in order; text before the first heading has ''."""
        out: list[tuple[str, list[str]]] = [("", [])]
        previous_blank = True
        for line in text.splitlines():
            stripped = line.strip()
            heading = _heading(stripped, previous_blank)
            if heading is not None:
                out.append((heading, []))
            elif stripped:
                out[-1][1].append(stripped)
            previous_blank = not stripped
        return [(h, " ".join(body)) for h, body in out if body]

    def windows(self, body: str) -> list[list[str]]:
        """``body``'s whitespace tokens in windows of ``max_tokens``, each starting ``max_tokens - overlap`` after
        the one before; the last window ends at the last token."""
        words = body.split()
        step = self.max_tokens - self.overlap
        out = []
        for start in range(0, max(len(words) - self.overlap, 1), step):
            out.append(words[start : start + self.max_tokens])
        return [w for w in out if w]

    def chunk(self, documents: pl.DataFrame) -> pl.DataFrame:
        """The chunks (:data:`CHUNK_SCHEMA`) of ``documents`` (``doc_id``, ``url``, ``title``, ``text``)."""
        rows = []
        for doc_id, url, title, text in documents.select("doc_id", "url", "title", "text").iter_rows():
            position = 0
            for heading, body in self.sections(text or ""):
                for words in self.windows(body):
                    chunk_text = " ".join(words)
                    rows.append(
                        (
                            chunk_id(url, position),
                            doc_id,
                            url,
                            title or "",
                            heading,
                            position,
                            chunk_text,
                            len(words),
                            hashlib.sha1(f"{title}\n{heading}\n{chunk_text}".encode()).hexdigest(),
                        )
                    )
                    position += 1
        return pl.DataFrame(rows, schema=CHUNK_SCHEMA, orient="row")


def chunk_id(url: str, position: int) -> str:
    return hashlib.sha1(f"{url}#{position}".encode()).hexdigest()[:24]


def indexed_text(chunks: pl.DataFrame) -> list[str]:
    """What BM25 and the embedder see of each chunk: its title and heading before its text (a chunk's words
    alone often miss what the section is about)."""
    return [
        " ".join(p for p in (title, heading, text) if p)
        for title, heading, text in chunks.select("title", "heading", "text").iter_rows()
    ]


def _heading(line: str, previous_blank: bool) -> str | None:
    match = _MARKDOWN_HEADING.match(line)
    if match:
        return match.group(1).strip()
    if not line or not previous_blank or line[-1] in _CLOSING or not line[0].isalpha():
        return None
    words = line.split()
    if len(words) > HEADING_MAX_WORDS or "(" in line or "=" in line:
        return None
    return line
