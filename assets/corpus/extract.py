"""Main-content text extraction from stored HTML (framework-free).

Library choice, by measurement (FIELD-NOTES, and bench/bench_corpus.py here): resiliparse's main-content
extractor runs at ~650 docs/s per core on real pages where trafilatura manages ~33 and justext ~98, so it
is the extractor; its HTML5 parser is used for metadata too (one parse per page). Pages are decoded as
browsers decode them (``encoding.py``: BOM → HTTP charset → ``<meta>`` prescan → detection → UTF-8). Language id uses CLD2 (pycld2), whose model ships inside the wheel: ~2.5k docs/s, and
nothing is downloaded at run time. Any page that fails to decode or parse is reported, never fatal.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree

from crawl2serve.assets.corpus.language import identify
from crawl2serve.assets.crawl.urls import host_of, normalize_url

from . import encoding as _encoding
from .encoding import charset_of  # noqa: F401 — re-exported

# Elements never part of the main content, removed before main-content extraction (structural removal:
# selectors, not text rules). Generic: navigation, header/footer, forms, hidden elements. Generated
# documentation, whose navigation is not in <nav>:
#   DocBook XSL: the Prev/Up/Home/Next tables of every chunked page (div.navheader, div.navfooter);
#   Sphinx: the relbar (div.related: "index modules | next | previous | ..."), the sidebar (div.sphinxsidebar:
#     local table of contents, Previous/Next topic, This Page, Quick search), the footer (div.footer) and the
#     "¶" permalink after each heading (a.headerlink);
#   Javadoc <= 8: the navigation bars (div.topNav, div.subNav, div.bottomNav) and skip links (div.skipNav);
#     Javadoc >= 9 puts them in <header>/<nav>/<footer>, covered above.
# The two float divs are pydoc's page banner (Python version, platform, search forms); their exact inline
# style does not occur on ordinary pages.
DEFAULT_SKIP_SELECTORS = (
    "nav",
    "header",
    "footer",
    "form",
    "[role=navigation]",
    "[aria-hidden=true]",
    'div[style="float:left"]',
    'div[style="float:right"]',
    "div.navheader",
    "div.navfooter",
    "div.related",
    "div.sphinxsidebar",
    "div.footer",
    "a.headerlink",
    "div.topNav",
    "div.subNav",
    "div.bottomNav",
    "div.skipNav",
)


@dataclass(frozen=True)
class Extracted:
    url: str
    canonical_url: str
    host: str
    title: str
    text: str
    language: str
    language_score: float
    encoding: str


def doc_id(url: str) -> str:
    """Stable document id: 16 hex chars of BLAKE2b over the URL."""
    return hashlib.blake2b(url.encode("utf-8"), digest_size=8).hexdigest()


def content_hash(text: str) -> str:
    """Hash of the text with case and whitespace folded: equal for exact duplicates."""
    folded = " ".join(text.lower().split())
    return hashlib.blake2b(folded.encode("utf-8"), digest_size=16).hexdigest()


def decode_html(body: bytes, content_type: str | None) -> tuple[str, str]:
    """(text, WHATWG encoding name), decoded as browsers do (``encoding.decode_html``)."""
    decoded = _encoding.decode_html(body, content_type)
    return decoded.text, decoded.encoding


def detect_language(text: str) -> tuple[str, float]:
    """(verdict, confidence 0-1): CLD2 over samples across the whole text (assets/corpus/language.py);
    the verdict is an ISO code, ``mixed`` (a second language holds a large share) or ``unknown``."""
    lid = identify(text)
    return lid.verdict, lid.score


def extract_html(
    url: str,
    body: bytes,
    content_type: str | None,
    skip_selectors: tuple[str, ...] = DEFAULT_SKIP_SELECTORS,
    main_content: bool = True,
) -> Extracted:
    """Title, canonical URL, main-content text and language of one HTML page."""
    html, encoding = decode_html(body, content_type)
    tree = HTMLTree.parse(html)
    title = ""
    canonical = url
    if tree.head is not None:
        t = tree.head.query_selector("title")
        title = " ".join(t.text.split()) if t is not None else ""
        link = tree.head.query_selector('link[rel="canonical" i][href]')
        if link is not None:
            canonical = normalize_url(link.getattr("href") or "", url) or url
    text = extract_plain_text(
        tree, main_content=main_content, alt_texts=False, links=False, skip_elements=list(skip_selectors)
    )
    text = unicodedata.normalize("NFC", text)
    language, score = detect_language(text)
    return Extracted(url, canonical, host_of(url), title, text, language, score, encoding)


def extract_text_record(url: str, body: bytes) -> Extracted:
    """A WET ``conversion`` record: the text is already extracted."""
    text = unicodedata.normalize("NFC", body.decode("utf-8", "replace"))
    language, score = detect_language(text)
    return Extracted(url, url, host_of(url), "", text, language, score, "utf-8")
