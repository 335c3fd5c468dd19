"""A polite, resumable async HTTP crawler that writes WARC segments (framework-free).

- Scope: host allow-list plus include/exclude URL regexes; ``<meta name=robots content=nofollow>`` and
  ``rel=nofollow`` respected.
- robots.txt per RFC 9309, parsed by protego (Scrapy's parser: ``*`` and ``$``, longest match, allow wins a
  tie, the groups of our product token merged, else ``*``): read whole up to ``robots_max_bytes`` (at least
  500 KiB; a line cut at the cap is dropped), up to 5 redirects followed (each hop SSRF-checked), keyed per
  origin (scheme, host, port). 4xx: everything allowed. 5xx, 429 and network errors: everything disallowed,
  robots.txt fetched again after a backoff (Retry-After honoured) while the origin's pages wait
  (``robots_max_waits`` times, then ``robots_unreachable``); a copy that parsed before stays in force meanwhile.
  Cached for ``robots_cache_s`` (at most 24 h), then fetched again. Crawl-delay and Request-rate of the
  matching group raise the origin's delay.
- Politeness: a global concurrency limit, a per-origin limit and a per-origin delay between requests; a 429
  pauses the whole origin for its Retry-After.
- Robustness: connect/read/total timeouts; retries with exponential backoff and jitter on timeouts,
  connection resets and 5xx; redirects followed by hand (each hop is scoped, robots-checked and
  deduplicated; loops end in the seen-set, chains at ``max_redirects``); content-type and size caps on a
  streamed body (a huge body is never buffered beyond the cap).
- SSRF guard: a host that resolves to (or is) a private, loopback, link-local or reserved address is
  refused unless it is explicitly allow-listed in ``private_hosts``; the check runs at connection time
  in the resolver, so redirects and DNS tricks cannot slip past it.
- Durability: results are committed in segments (WARC file, then its link list, then its manifest: the
  manifest is the commit point, each written atomically). A crawl killed at any moment resumes from
  the committed segments: stored URLs are never fetched again and the frontier is rebuilt from their
  links. No input loses stored data: a response whose headers cannot be stored byte-exact is an error
  row (``bad_header:<Name>``), a record the WARC writer fails on is an error row (``warc_write_failed``),
  every manifest value is made valid UTF-8, so a segment always commits. A WARC that no manifest lists
  (a kill or an I/O error between the WARC and its manifest, or a killed segment's temporary file) is
  recovered on resume: its complete records get a manifest (links re-extracted when the link list is
  missing) and are not fetched again; a file is removed only when every record in it is listed already.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import io
import json
import random
import socket
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

import aiohttp
import polars as pl
from aiohttp.abc import AbstractResolver
from fastwarc.warc import ArchiveIterator, WarcRecordType
from protego import Protego
from selectolax.lexbor import LexborHTMLParser

from .urls import Scope, canonical_host, host_of, ip_literal, is_public_address, normalize_url, origin_key, origin_of
from .warc import InvalidHeaderError, WarcSegmentWriter, check_header, check_headers

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
MANIFEST_SCHEMA = {
    "url": pl.String,
    "status": pl.Int32,
    "bytes": pl.Int64,
    "fetch_time": pl.Datetime("us", "UTC"),
    "elapsed_ms": pl.Float64,
    "content_type": pl.String,
    "error": pl.String,
    "depth": pl.Int32,
    "attempts": pl.Int32,
    "redirect_to": pl.String,
    "warc_file": pl.String,
    "warc_offset": pl.Int64,
    "record_id": pl.String,
}
LINKS_SCHEMA = {"url": pl.String, "depth": pl.Int32, "hops": pl.Int32}
ROBOTS_MIN_BYTES = 512_000  # RFC 9309 2.5: a parser MUST read at least 500 KiB
ROBOTS_MAX_CACHE_S = 86_400.0  # RFC 9309 2.4: a cached robots.txt SHOULD NOT be used for more than 24 h
ROBOTS_MAX_REDIRECTS = 5  # RFC 9309 2.3.1.2: follow at least five consecutive redirects


@dataclass(frozen=True)
class CrawlSettings:
    """Every knob of one crawl. Defaults are polite for the open web."""

    seeds: tuple[str, ...]
    allowed_hosts: tuple[str, ...] = ()  # empty: the seeds' hosts
    include_patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    private_hosts: tuple[str, ...] = ()  # hosts allowed to resolve to private/loopback addresses
    max_pages: int = 1000
    max_depth: int = 20
    concurrency: int = 16
    per_host_concurrency: int = 2  # per origin (scheme, host, port), like every politeness knob
    per_host_delay_s: float = 0.5
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 20.0
    total_timeout_s: float = 60.0
    max_retries: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    max_redirects: int = 5
    max_body_bytes: int = 5_000_000
    allowed_content_types: tuple[str, ...] = ("text/html", "application/xhtml+xml")
    respect_robots: bool = True
    user_agent: str = "crawl2serve/0.1 (+https://github.com/crawl2serve)"
    robots_agent: str = ""  # the product token matched against User-agent lines; empty: user_agent's first token
    robots_max_bytes: int = ROBOTS_MIN_BYTES  # robots.txt bytes parsed (RFC 9309: at least 500 KiB)
    robots_cache_s: float = ROBOTS_MAX_CACHE_S  # a fetched robots.txt is used this long, then fetched again
    robots_retry_s: float = 30.0  # first wait before fetching an unreachable robots.txt again (doubles)
    robots_retry_max_s: float = 600.0
    robots_max_waits: int = 3  # times a page waits for its origin's robots.txt, then robots_unreachable
    segment_max_records: int = 100
    segment_max_seconds: float = 20.0
    progress_every_s: float = 5.0

    def __post_init__(self) -> None:
        if self.robots_max_bytes < ROBOTS_MIN_BYTES:
            raise ValueError(
                f"robots_max_bytes={self.robots_max_bytes}: RFC 9309 2.5 requires parsing at least "
                f"{ROBOTS_MIN_BYTES} bytes (500 KiB); raise it"
            )
        if not 0 < self.robots_cache_s <= ROBOTS_MAX_CACHE_S:
            raise ValueError(
                f"robots_cache_s={self.robots_cache_s}: must be in (0, {ROBOTS_MAX_CACHE_S:.0f}] "
                "(RFC 9309 2.4: a cached robots.txt is used at most 24 hours)"
            )

    @property
    def robots_token(self) -> str:
        """The product token of RFC 9309 2.2.1 ('crawl2serve' of 'crawl2serve/0.1 (+https://...)')."""
        token = self.robots_agent or self.user_agent.split("/", 1)[0].split(None, 1)[0]
        return token.strip().lower()


@dataclass
class Outcome:
    url: str
    depth: int | None
    status: int | None = None
    bytes: int = 0
    fetch_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    elapsed_ms: float = 0.0
    content_type: str | None = None
    error: str | None = None
    attempts: int = 0
    redirect_to: str | None = None
    warc_file: str | None = None
    warc_offset: int | None = None
    record_id: str | None = None


@dataclass
class CrawlSummary:
    fetched: int = 0
    stored: int = 0
    resumed: int = 0
    recovered: int = 0  # records of WARC files no manifest listed, given a manifest on resume
    bytes: int = 0
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)
    status: Counter = field(default_factory=Counter)
    out_of_scope: Counter = field(default_factory=Counter)
    robots: Counter = field(default_factory=Counter)  # robots.txt fetches by outcome (parsed/unavailable/...)
    deferred: int = 0  # page fetches put off while their origin's robots.txt was unreachable
    segments: int = 0
    frontier_left: int = 0
    handed_off: int = 0  # sharded crawl: URLs found for hosts another shard owns (assets/crawl/sharded.py)

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("errors", "status", "out_of_scope", "robots"):
            d[k] = {str(kk): v for kk, v in getattr(self, k).items()}
        return d


class BlockedAddressError(OSError):
    """A host resolved to an internal address that the crawl may not contact."""


class GuardedResolver(AbstractResolver):
    """Resolves names like aiohttp's default resolver but refuses internal addresses (the SSRF guard)."""

    def __init__(self, private_hosts: frozenset[str]):
        self._inner = aiohttp.ThreadedResolver()
        self._private_hosts = private_hosts

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        if host.lower().rstrip(".") in self._private_hosts:
            return infos
        public = [i for i in infos if is_public_address(i["host"])]
        if not public:
            raise BlockedAddressError(f"{host} resolves only to internal addresses")
        return public

    async def close(self) -> None:
        await self._inner.close()


class _Retryable(Exception):
    def __init__(self, kind: str, retry_after: float | None = None):
        super().__init__(kind)
        self.kind = kind
        self.retry_after = retry_after


class _Deferred(Exception):
    """The page must wait: its origin's robots.txt is unreachable until ``until`` (monotonic time)."""

    def __init__(self, until: float):
        super().__init__(until)
        self.until = until


class CommitError(RuntimeError):
    """A segment's link list or manifest could not be written (I/O). Its WARC stays; a resume recovers it."""


# -- robots.txt ------------------------------------------------------------------------------------
@dataclass
class RobotsTxt:
    """One origin's robots.txt as last fetched (RFC 9309 2.3.1).

    ``state``: ``parsed`` (2xx: its rules apply), ``unavailable`` (4xx, a redirect chain that ends
    nowhere: everything allowed), ``unreachable`` (5xx, 429, network errors: everything disallowed until it
    is fetched again), ``blocked`` (the origin resolves to an internal address: its pages are refused as
    ``blocked_address`` anyway)."""

    state: str
    parser: Protego | None = None
    status: int | None = None
    detail: str = ""
    size: int = 0
    truncated: bool = False
    retry_after: float | None = None
    expires_at: float = 0.0  # monotonic time after which it is fetched again
    stale: bool = False  # a parsed copy kept in force while the origin's robots.txt is unreachable

    def allows(self, url: str, token: str) -> bool:
        if self.state == "parsed":
            return self.parser.can_fetch(url, token)
        return self.state != "unreachable"

    def delay_s(self, token: str) -> float | None:
        """Seconds between requests that the matching group asks for (Crawl-delay, or Request-rate)."""
        if self.parser is None:
            return None
        delays = [self.parser.crawl_delay(token)]
        rate = self.parser.request_rate(token)
        if rate is not None and rate.requests:
            delays.append(rate.seconds / rate.requests)
        delays = [float(d) for d in delays if d is not None and d >= 0]
        return max(delays) if delays else None


def parse_robots(body: bytes, truncated: bool = False) -> Protego:
    """Protego rules of a robots.txt body (UTF-8, RFC 9309 2.2). When the body was cut at the size cap, its
    last, partial line is dropped: 'Disallow: /private-area' cut to 'Disallow: /' would disallow everything."""
    text = body.decode("utf-8", "replace")
    if truncated:
        text = text[: max(text.rfind("\n"), text.rfind("\r")) + 1]
    return Protego.parse(text.removeprefix("\ufeff"))


async def read_capped(content: aiohttp.StreamReader, cap: int) -> tuple[bytes, bool]:
    """The body up to ``cap`` bytes and whether there was more. ``content.read(n)`` returns what is buffered,
    not ``n`` bytes (FIELD-NOTES), so read until EOF or the cap."""
    buf = bytearray()
    while len(buf) <= cap:
        chunk = await content.read(cap + 1 - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf[:cap]), len(buf) > cap


@dataclass
class _Origin:
    """Politeness and robots.txt state of one origin (scheme, host, port)."""

    sem: asyncio.Semaphore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_time: float = 0.0
    delay: float = 0.0
    robots: RobotsTxt | None = None
    robots_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    robots_failures: int = 0


# -- committed segments ----------------------------------------------------------------------------
def _text(value):
    """``value`` as valid UTF-8 text (lone surrogates, e.g. from ``surrogateescape``, become ``\\udcff``)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _utf8(value: str) -> str:
    """A header value as written (UTF-8) from fastwarc, which decodes header bytes as Latin-1."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _gzip_members(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each complete gzip member at the head of ``data``; stops at the first incomplete one."""
    view, n = memoryview(data), len(data)
    out, pos = [], 0
    while pos < n:
        d, p = zlib.decompressobj(wbits=31), pos
        try:
            while not d.eof and p < n:  # fed in slices, so that unused_data stays small
                d.decompress(view[p : p + 65536])
                p = min(n, p + 65536)
        except zlib.error:
            break
        if not d.eof:
            break
        end = p - len(d.unused_data)
        out.append((pos, end))
        pos = end
    return out


def _read_warc(data: bytes) -> list[tuple[WarcRecordType, int, str | None, str | None, object, bytes, str | None]]:
    """(type, offset, target URI, record id, http headers, body, WARC-Date) of every complete record."""
    members = _gzip_members(data)
    if not members:
        return []
    end = members[-1][1]
    out = []
    for rec in ArchiveIterator(io.BytesIO(data[:end]), parse_http=True):
        out.append(
            (
                rec.record_type,
                rec.stream_pos,
                rec.headers.get("WARC-Target-URI"),
                rec.headers.get("WARC-Record-ID"),
                rec.http_headers,
                rec.reader.read(),
                rec.headers.get("WARC-Date"),
            )
        )
    return out


def _whole_exchanges(data: bytes) -> bytes:
    """The head of a WARC up to its last complete response record (a request whose response was torn off
    by a kill goes with the torn part)."""
    members = _gzip_members(data)
    if not members:
        return b""
    ends = dict(members)
    responses = [offset for kind, offset, *_ in _read_warc(data) if kind == WarcRecordType.response]
    return data[: ends[responses[-1]]] if responses and responses[-1] in ends else b""


class CrawlStore:
    """Committed segments of one crawl under ``directory`` of a DataRoot-like storage."""

    def __init__(self, storage, directory: str):
        self.storage = storage
        self.directory = directory
        self.recovered = 0  # records the last load() gave a manifest to
        self.removed: list[str] = []  # files the last load() removed (each holding nothing unlisted)

    def manifests(self) -> list[str]:
        return self.storage.glob(f"{self.directory}/segments/*.manifest.parquet")

    def load(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(manifest rows, links) of every committed segment, after recovering what no manifest lists."""
        self.recover()
        manifests = self.manifests()
        frames = [self.storage.read_parquet(m) for m in manifests]
        links = [self.storage.read_parquet(m.replace(".manifest.parquet", ".links.parquet")) for m in manifests]
        return (
            pl.concat(frames) if frames else pl.DataFrame(schema=MANIFEST_SCHEMA),
            pl.concat(links) if links else pl.DataFrame(schema=LINKS_SCHEMA),
        )

    def warc_path(self, stem: str) -> str:
        return f"{self.directory}/segments/{stem}.warc.gz"

    def commit(self, stem: str, rows: list[Outcome], links: list[tuple[str, int, int]]) -> None:
        prefix = f"{self.directory}/segments/{stem}"
        self.storage.write_parquet(_links_frame(links), f"{prefix}.links.parquet")
        self.storage.write_parquet(_manifest_frame(rows), f"{prefix}.manifest.parquet")

    # -- recovery ---------------------------------------------------------------------------------
    def recover(self) -> int:
        """Give a manifest to every stored record that none lists; return how many records that was.

        Sources: visible WARCs without a manifest (a kill, or an I/O error, between a WARC and its
        manifest) and temporaries of a killed segment (``.tmp-seg-*.warc.gz.*``: their complete gzip
        members are kept, a torn last one is cut). A file is removed only when every response in it is
        listed by a manifest already (a copy, or a temporary holding no complete response); other
        temporaries (link lists, manifests) are removed as before, since they hold no page."""
        seg_dir = f"{self.directory}/segments"
        self.recovered, self.removed = 0, []
        if not self.storage.exists(seg_dir):
            return 0
        listed = set()
        for m in self.manifests():
            listed.update(x for x in self.storage.read_parquet(m)["record_id"].to_list() if x)
        fs = self.storage.fs
        for tmp in sorted(fs.glob(f"{seg_dir}/.tmp-seg-*.warc.gz.*")):
            name = tmp.rsplit("/", 1)[1].removeprefix(".tmp-").rsplit(".", 1)[0]
            with self.storage.open(tmp, "rb") as f:
                data = f.read()
            whole = _whole_exchanges(data)
            stem = name.removesuffix(".warc.gz")
            while self.storage.exists(self.warc_path(stem)):
                stem += "r"
            if whole and self._unlisted(whole, listed):
                self.storage.write_bytes(whole, self.warc_path(stem))  # atomic; the torn tail is dropped
        self.storage.clean_temporaries(self.directory)
        committed = {m.rsplit("/", 1)[1].removesuffix(".manifest.parquet") for m in self.manifests()}
        for path in self.storage.glob(f"{seg_dir}/*"):
            stem = path.rsplit("/", 1)[1].split(".", 1)[0]
            if stem in committed or not path.endswith(".warc.gz"):
                continue
            with self.storage.open(path, "rb") as f:
                rows, links = self._rows_of(f.read(), path, listed)
            links_path = f"{seg_dir}/{stem}.links.parquet"
            if rows:
                try:
                    kept = self.storage.read_parquet(links_path)
                    if kept.columns != list(LINKS_SCHEMA):
                        raise ValueError(f"columns {kept.columns}")
                except Exception:
                    self.storage.write_parquet(_links_frame(links), links_path)
                self.storage.write_parquet(_manifest_frame(rows), f"{seg_dir}/{stem}.manifest.parquet")
                self.recovered += len(rows)
                listed.update(r.record_id for r in rows)
                committed.add(stem)
        for path in self.storage.glob(f"{seg_dir}/*"):  # what is left holds nothing a manifest does not list
            if path.rsplit("/", 1)[1].split(".", 1)[0] in committed:
                continue
            if path.endswith(".warc.gz") and not self._intact(path):
                # not readable to its end: what it holds cannot be known, so it is set aside, never deleted
                self.storage.fs.makedirs(f"{self.directory}/quarantine", exist_ok=True)
                self.storage.fs.mv(path, f"{self.directory}/quarantine/{path.rsplit('/', 1)[1]}")
                continue
            self.storage.remove(path)
            self.removed.append(path)
        return self.recovered

    def _intact(self, path: str) -> bool:
        with self.storage.open(path, "rb") as f:
            data = f.read()
        members = _gzip_members(data)
        return bool(members) and members[-1][1] == len(data)

    @staticmethod
    def _unlisted(data: bytes, listed: set[str]) -> bool:
        return any(t == WarcRecordType.response and rid not in listed for t, _, _, rid, *_ in _read_warc(data))

    @staticmethod
    def _rows_of(data: bytes, path: str, listed: set[str]) -> tuple[list[Outcome], list[tuple[str, int, int]]]:
        """Manifest rows and links of the responses in one WARC that no manifest lists yet."""
        rows, links = [], []
        for kind, offset, url, rid, http, body, date in _read_warc(data):
            if kind != WarcRecordType.response or not url or rid in listed or http is None:
                continue
            headers = {k.lower(): _utf8(v) for k, v in http.items()}
            try:
                when = datetime.fromisoformat((date or "").replace("Z", "+00:00"))
            except ValueError:
                when = datetime.now(UTC)
            row = Outcome(
                url=url,
                depth=None,
                status=http.status_code,
                bytes=len(body),
                fetch_time=when,
                elapsed_ms=None,
                content_type=headers.get("content-type"),
                attempts=None,
                warc_file=path,
                warc_offset=offset,
                record_id=rid,
            )
            location = headers.get("location") if http.status_code in REDIRECT_CODES else None
            if location:
                row.redirect_to = normalize_url(location, url)
                if row.redirect_to:
                    links.append((row.redirect_to, 1, 1))
            elif http.status_code == 200:
                links += [(link, 1, 0) for link in extract_links(body, url, row.content_type)]
            rows.append(row)
        return rows, links


def _links_frame(links: list[tuple[str, int, int]]) -> pl.DataFrame:
    return pl.DataFrame([(_text(u), d, h) for u, d, h in links], schema=LINKS_SCHEMA, orient="row")


def _manifest_frame(rows: list[Outcome]) -> pl.DataFrame:
    """The manifest of ``rows``; never fails on a row's values (text is made valid UTF-8, and a row that
    still cannot be stored becomes an error row naming why)."""
    try:
        return _manifest_frame_strict(rows)
    except Exception:
        frames = []
        for r in rows:
            try:
                frames.append(_manifest_frame_strict([r]))
            except Exception as e:
                bad = Outcome(
                    url=_text(str(r.url)),
                    depth=None,
                    error=_text(f"manifest_row_failed:{type(e).__name__}"),
                    warc_file=_text(r.warc_file) if isinstance(r.warc_file, str) else None,
                    warc_offset=r.warc_offset if isinstance(r.warc_offset, int) else None,
                    record_id=_text(r.record_id) if isinstance(r.record_id, str) else None,
                )
                frames.append(_manifest_frame_strict([bad]))
        return pl.concat(frames) if frames else pl.DataFrame(schema=MANIFEST_SCHEMA)


def _manifest_frame_strict(rows: list[Outcome]) -> pl.DataFrame:
    return pl.DataFrame({k: [_text(getattr(r, k)) for r in rows] for k in MANIFEST_SCHEMA}, schema=MANIFEST_SCHEMA)


class _Segment:
    """The open WARC segment and the outcomes/links that commit with it."""

    def __init__(self, store: CrawlStore, run_token: str, index: int, info: dict[str, str]):
        self.stem = f"seg-{run_token}-{index:05d}"
        self.path = store.warc_path(self.stem)
        self._ctx = store.storage.atomic_open(self.path, "wb")
        self.stream = self._ctx.__enter__()
        self.writer = WarcSegmentWriter(self.stream, filename=self.path.rsplit("/", 1)[1], info=info)
        self.rows: list[Outcome] = []
        self.links: list[tuple[str, int, int]] = []
        self.opened = time.monotonic()

    def close(self) -> None:
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() is also true for "²", which float() refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def extract_links(body: bytes, base_url: str, content_type: str | None) -> list[str]:
    """Absolute link targets of an HTML page, honouring <base href>, rel=nofollow and meta robots.

    Parsed with selectolax (Lexbor): resiliparse's node collections are quadratic to walk (78 s for the
    4,315 anchors of pydoc's builtins page, against 0.02 s here).
    """
    try:
        tree = LexborHTMLParser(body)
    except Exception:
        return []
    for meta in tree.css("meta[name]"):
        if (meta.attributes.get("name") or "").lower() == "robots" and "nofollow" in (
            meta.attributes.get("content") or ""
        ).lower():
            return []
    base = tree.css_first("base[href]")
    if base is not None:
        base_url = normalize_url(base.attributes.get("href") or "", base_url) or base_url
    out = []
    for a in tree.css("a[href]"):
        if "nofollow" in (a.attributes.get("rel") or "").lower():
            continue
        url = normalize_url(a.attributes.get("href") or "", base_url)
        if url:
            out.append(url)
    return out


def _is_blocked(e: BaseException) -> bool:
    return isinstance(e, BlockedAddressError) or isinstance(getattr(e, "os_error", None), BlockedAddressError)


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class Crawler:
    """One crawl: ``await Crawler(settings, store, log).run()``.

    Sharded by host (assets/crawl/sharded.py): ``owns(url)`` says whether this crawler's shard owns the URL's
    host; a URL it does not own is never fetched here but collected in :attr:`foreign` (url -> (depth, hops))
    for its owner, so every host is fetched, robots-checked and rate-limited by exactly one crawler.
    ``inbox`` holds (url, depth, hops) links other shards found for this one, queued like the seeds."""

    def __init__(
        self,
        settings: CrawlSettings,
        store: CrawlStore,
        log: Callable[[str], None] = print,
        *,
        owns: Callable[[str], bool] | None = None,
        inbox: tuple[tuple[str, int, int], ...] = (),
    ):
        self.s = settings
        self.store = store
        self.log = log
        seeds = [u for u in (normalize_url(x) for x in settings.seeds) if u]
        if not seeds:
            raise ValueError(f"seeds: no crawlable http(s) URL in {list(settings.seeds)!r}")
        self.seeds = seeds
        hosts = settings.allowed_hosts or tuple(host_of(u) for u in seeds)
        self.scope = Scope.build(hosts, settings.include_patterns, settings.exclude_patterns)
        self.private_hosts = frozenset(canonical_host(h) for h in settings.private_hosts)
        self.token = settings.robots_token
        self.summary = CrawlSummary()
        self._origins: dict[str, _Origin] = {}
        self._seen: set[str] = set()
        self._queue: asyncio.Queue[tuple[str, int, int, int]] = asyncio.Queue()
        self._timers: set[asyncio.TimerHandle] = set()
        self._budget = settings.max_pages
        self._run_token = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        self._segment: _Segment | None = None
        self._segment_index = 0
        self._failure: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._owns = owns
        self._inbox = tuple(inbox)
        self.foreign: dict[str, tuple[int, int]] = {}

    # -- frontier ---------------------------------------------------------------------------------
    def _resume(self) -> None:
        done, links = self.store.load()
        self.summary.recovered = self.store.recovered
        if self.store.recovered:
            self.log(f"recovered {self.store.recovered} stored records that no manifest listed")
        # a page refused only because its origin's robots.txt was unreachable is tried again
        newest = done.sort("fetch_time").unique("url", keep="last")
        retry = set(
            newest.filter(pl.col("error").str.starts_with("robots_unreachable") & pl.col("warc_file").is_null())[
                "url"
            ].to_list()
        )
        settled = [u for u in done["url"].to_list() if u not in retry]
        self._seen.update(settled)
        self.summary.resumed = len(set(settled))
        self._budget -= self.summary.resumed
        self.summary.segments = len(self.store.manifests())
        pending = [(u, 0, 0) for u in self.seeds] + list(self._inbox) + list(links.iter_rows())
        for url, depth, hops in pending:
            self._enqueue(url, depth, hops)
        if done.height:
            self.log(
                f"resuming: {self.summary.resumed} URLs already stored in {self.summary.segments} segments, "
                f"{self._queue.qsize()} in the frontier"
            )

    def _enqueue(self, url: str, depth: int | None, hops: int | None) -> None:
        if url in self._seen:
            return
        why = self.scope.why_out(url)
        if why:
            self.summary.out_of_scope[why] += 1
            return
        depth, hops = depth or 0, hops or 0
        if depth > self.s.max_depth:
            self.summary.out_of_scope["max_depth"] += 1
            return
        self._seen.add(url)
        if self._owns is not None and not self._owns(url):
            self.foreign[url] = (depth, hops)
            self.summary.handed_off += 1
            return
        self._queue.put_nowait((url, depth, hops, 0))

    def _defer(self, item: tuple[str, int, int, int], until: float) -> None:
        """Put ``item`` back in the queue at ``until``. Its queue slot stays taken meanwhile (``task_done``
        runs only once it is back), so the crawl does not end while pages wait."""
        self.summary.deferred += 1

        def back() -> None:
            self._timers.discard(handle)
            self._queue.put_nowait(item)
            self._queue.task_done()

        handle = asyncio.get_running_loop().call_later(max(0.0, until - time.monotonic()), back)
        self._timers.add(handle)

    # -- segments ---------------------------------------------------------------------------------
    def _open_segment(self) -> _Segment:
        if self._segment is None:
            self._segment = _Segment(
                self.store,
                self._run_token,
                self._segment_index,
                {"robots": "obey" if self.s.respect_robots else "ignore", "http-header-user-agent": self.s.user_agent},
            )
            self._segment_index += 1
        return self._segment

    def _record(self, outcome: Outcome, links: list[tuple[str, int, int]]) -> None:
        seg = self._open_segment()
        seg.rows.append(outcome)
        seg.links.extend(links)
        self.summary.fetched += 1
        self.summary.bytes += outcome.bytes
        if outcome.status is not None:
            self.summary.status[outcome.status] += 1
        if outcome.error:
            self.summary.errors[_text(outcome.error).split(":", 1)[0]] += 1
        if outcome.warc_file:
            self.summary.stored += 1
        if len(seg.rows) >= self.s.segment_max_records or time.monotonic() - seg.opened >= self.s.segment_max_seconds:
            self._commit_segment()

    def _commit_segment(self) -> None:
        seg, self._segment = self._segment, None
        if seg is None:
            return
        if not seg.rows:
            seg.abort()
            return
        try:
            seg.close()  # the WARC under its name first: from here on a resume recovers it
            self.store.commit(seg.stem, seg.rows, seg.links)
        except Exception as e:
            raise CommitError(
                f"segment {seg.stem} did not commit ({type(e).__name__}: {e}); the crawl stops, "
                "its WARC stays and the next run recovers it"
            ) from e
        self.summary.segments += 1

    # -- politeness -------------------------------------------------------------------------------
    def _origin(self, url: str) -> _Origin:
        key = origin_key(url)
        if key not in self._origins:
            self._origins[key] = _Origin(asyncio.Semaphore(self.s.per_host_concurrency), delay=self.s.per_host_delay_s)
        return self._origins[key]

    async def _wait_turn(self, origin: _Origin) -> None:
        async with origin.lock:
            now = time.monotonic()
            if origin.next_time > now:
                await asyncio.sleep(origin.next_time - now)
            origin.next_time = time.monotonic() + origin.delay

    async def _robots(self, url: str) -> RobotsTxt:
        """The origin's robots.txt, fetched when it has none or its copy expired (RFC 9309 2.4)."""
        origin = self._origin(url)
        async with origin.robots_lock:
            now = time.monotonic()
            if origin.robots is not None and now < origin.robots.expires_at:
                return origin.robots
            fresh = await self._fetch_robots(origin, origin_of(url) + "/robots.txt")
            self.summary.robots[fresh.state] += 1
            now = time.monotonic()
            if fresh.state == "unreachable":
                origin.robots_failures += 1
                if fresh.retry_after is not None:  # the server said when: honoured up to max_retry_after_s
                    wait = min(fresh.retry_after, self.s.max_retry_after_s)
                else:
                    wait = min(self.s.robots_retry_s * 2 ** (origin.robots_failures - 1), self.s.robots_retry_max_s)
                if origin.robots is not None and origin.robots.state == "parsed":
                    fresh = replace(origin.robots, stale=True, detail=f"kept while {fresh.detail}")  # RFC 9309 2.4
                fresh.expires_at = now + wait
            else:
                origin.robots_failures = 0
                fresh.expires_at = now + self.s.robots_cache_s
            origin.robots = fresh
            delay = fresh.delay_s(self.token)
            origin.delay = max(self.s.per_host_delay_s, delay or 0.0)
            return fresh

    async def _fetch_robots(self, origin: _Origin, robots_url: str) -> RobotsTxt:
        timeout = aiohttp.ClientTimeout(
            total=self.s.total_timeout_s, sock_connect=self.s.connect_timeout_s, sock_read=self.s.read_timeout_s
        )
        try:
            async with origin.sem:
                await self._wait_turn(origin)
                # Redirects are followed by hand: aiohttp never asks the resolver about an IP literal, so each
                # hop must pass the literal check like every page URL does.
                hop = robots_url
                for _ in range(1 + ROBOTS_MAX_REDIRECTS):
                    if self._blocked_literal(hop):
                        return RobotsTxt("unavailable", detail="redirect_to_blocked_address")
                    async with self._session.get(hop, timeout=timeout, allow_redirects=False) as resp:
                        status = resp.status
                        if status in REDIRECT_CODES:
                            location = resp.headers.get("Location")
                            try:
                                target = normalize_url(check_header("Location", location)[1], hop) if location else None
                            except InvalidHeaderError:
                                target = None
                            if target is None:  # unfollowable: as if robots.txt were absent
                                return RobotsTxt("unavailable", status=status, detail="bad_redirect")
                            hop = target
                            continue
                        if status == 429 or status >= 500:
                            # 429 as 5xx (what Google documents): everything disallowed until fetched again
                            return RobotsTxt(
                                "unreachable",
                                status=status,
                                detail=f"http_{status}",
                                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                            )
                        if status >= 400:
                            return RobotsTxt("unavailable", status=status, detail=f"http_{status}")
                        if 200 <= status < 300:
                            body, truncated = await read_capped(resp.content, self.s.robots_max_bytes)
                            # a 500 KiB file takes protego 0.1-0.8 s: parsed off the event loop so that the other
                            # origins' fetches go on meanwhile
                            parser = (
                                parse_robots(body, truncated)
                                if len(body) < 65536
                                else await asyncio.to_thread(parse_robots, body, truncated)
                            )
                            return RobotsTxt(
                                "parsed", parser=parser, status=status, size=len(body), truncated=truncated
                            )
                        return RobotsTxt("unavailable", status=status, detail=f"http_{status}")
                return RobotsTxt("unavailable", detail="too_many_redirects")  # RFC 9309 2.3.1.2
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            if _is_blocked(e):
                return RobotsTxt("blocked", detail="blocked_address")  # the page fetch is refused and recorded
            return RobotsTxt("unreachable", detail=type(e).__name__)

    # -- fetching ---------------------------------------------------------------------------------
    def _blocked_literal(self, url: str) -> bool:
        host = host_of(url)
        addr = ip_literal(host)
        return addr is not None and addr not in self.private_hosts and not is_public_address(addr)

    async def _fetch(self, url: str, depth: int, hops: int, waits: int = 0) -> None:
        out = Outcome(url=url, depth=depth)
        links: list[tuple[str, int, int]] = []
        started = time.monotonic()
        try:
            if self._blocked_literal(url):
                out.error = "blocked_address"
            elif self.s.respect_robots and not (robots := await self._robots(url)).allows(url, self.token):
                if robots.state != "unreachable":
                    out.error = "robots_disallowed"
                elif waits < self.s.robots_max_waits:
                    raise _Deferred(robots.expires_at)
                else:
                    out.error = f"robots_unreachable:{robots.detail}"
            else:
                links = await self._fetch_with_retries(url, depth, hops, out)
        finally:
            out.elapsed_ms = (time.monotonic() - started) * 1000
        self._record(out, links)
        for link in links:
            self._enqueue(*link)

    async def _fetch_with_retries(self, url: str, depth: int, hops: int, out: Outcome) -> list[tuple[str, int, int]]:
        origin = self._origin(url)
        for attempt in range(self.s.max_retries + 1):
            out.attempts = attempt + 1
            out.status = out.content_type = None  # each attempt reports only its own response
            try:
                async with origin.sem:
                    await self._wait_turn(origin)
                    out.fetch_time = datetime.now(UTC)
                    return await self._fetch_once(url, depth, hops, out)
            except _Retryable as r:
                out.error = r.kind
                if r.retry_after is not None:
                    if r.retry_after > self.s.max_retry_after_s:
                        out.error = f"retry_after_too_long:{r.retry_after:.0f}s"
                        return []
                    wait = r.retry_after
                    origin.next_time = max(origin.next_time, time.monotonic() + wait)  # pause the whole origin
                else:
                    wait = min(self.s.backoff_max_s, self.s.backoff_base_s * 2**attempt) * (0.5 + random.random() / 2)
                if attempt < self.s.max_retries:
                    await asyncio.sleep(wait)
        return []

    async def _fetch_once(self, url: str, depth: int, hops: int, out: Outcome) -> list[tuple[str, int, int]]:
        s = self.s
        timeout = aiohttp.ClientTimeout(
            total=s.total_timeout_s, sock_connect=s.connect_timeout_s, sock_read=s.read_timeout_s
        )
        try:
            async with self._session.get(url, allow_redirects=False, timeout=timeout) as resp:
                out.status = resp.status
                # Headers are checked before anything reads them: a value that is not UTF-8 (aiohttp hands it
                # over surrogate-escaped) or holds a control character can be neither stored byte-exact nor
                # written to the manifest, so the response becomes an error row naming the header.
                try:
                    response_headers = check_headers(resp.raw_headers)
                except InvalidHeaderError as e:
                    out.error = f"bad_header:{e.header}"
                    return []
                try:
                    check_header("Reason-Phrase", resp.reason or "")
                except InvalidHeaderError:
                    out.error = "bad_status_line"
                    return []
                out.content_type = resp.headers.get("Content-Type")
                peer = resp.connection.transport.get_extra_info("peername") if resp.connection else None
                if resp.status == 429:
                    raise _Retryable("http_429", parse_retry_after(resp.headers.get("Retry-After")) or s.backoff_base_s)
                if resp.status >= 500:
                    raise _Retryable(f"http_{resp.status}")
                redirect = resp.status in REDIRECT_CODES and resp.headers.get("Location")
                # a missing type is sniffed by extraction instead
                if (
                    not redirect
                    and resp.status == 200
                    and out.content_type
                    and _mime(out.content_type) not in s.allowed_content_types
                ):
                    out.error = f"content_type_not_allowed:{_mime(out.content_type)}"
                    return []
                if resp.content_length is not None and resp.content_length > s.max_body_bytes:
                    out.error = f"body_too_large:{resp.content_length}"
                    return []
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > s.max_body_bytes:
                        out.error = f"body_too_large:>{s.max_body_bytes}"
                        return []
                body = bytes(body)
                out.bytes = len(body)
                out.error = None
                seg = self._open_segment()
                try:
                    stored = seg.writer.write_exchange(
                        url=url,
                        request_headers=list(resp.request_info.headers.items()),
                        status=resp.status,
                        reason=resp.reason or "",
                        response_headers=response_headers,
                        body=body,
                        fetched_at=out.fetch_time,
                        peer_ip=peer[0] if peer else None,
                    )
                except InvalidHeaderError as e:
                    out.error = f"bad_header:{e.header}"
                    return []
                except Exception as e:
                    out.error = f"warc_write_failed:{type(e).__name__}"
                    return []
                out.warc_file, out.warc_offset, out.record_id = seg.path, stored.offset, stored.record_id
        except _Retryable:
            raise
        except aiohttp.ClientConnectorError as e:
            if _is_blocked(e):
                out.error = "blocked_address"
                return []
            raise _Retryable(f"connect_error:{type(e).__name__}") from e
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise _Retryable("timeout") from e
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            raise _Retryable(f"connection_reset:{type(e).__name__}") from e
        except aiohttp.TooManyRedirects:
            out.error = "too_many_redirects"
            return []
        except aiohttp.ClientResponseError as e:  # the HTTP parser refused the response (a NUL in a header...)
            out.error = f"bad_response:{e.message}"[:300]
            return []
        except aiohttp.ClientError as e:
            out.error = f"client_error:{type(e).__name__}"
            return []
        if redirect:
            target = normalize_url(redirect, url)
            out.redirect_to = target
            if target is None:
                out.error = "bad_redirect"
                return []
            if hops + 1 > s.max_redirects:
                out.error = "too_many_redirects"
                return []
            if target in self._seen:
                out.error = "redirect_to_seen" if target != url else "redirect_loop"
            return [(target, depth, hops + 1)]
        if resp.status != 200:
            return []
        return [(link, depth + 1, 0) for link in extract_links(body, url, out.content_type)]

    # -- the run ----------------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            url, depth, hops, waits = await self._queue.get()
            deferred = False
            try:
                if self._budget <= 0:
                    self.summary.frontier_left += 1
                    continue
                self._budget -= 1
                await self._fetch(url, depth, hops, waits)
            except _Deferred as d:
                self._budget += 1  # not fetched: it is charged when it is
                self._defer((url, depth, hops, waits + 1), d.until)
                deferred = True
            except CommitError as e:
                self._failure = e
                self._stop.set()
            except Exception as e:
                try:
                    self._record(Outcome(url=url, depth=depth, error=f"crawler_error:{type(e).__name__}:{e}"[:300]), [])
                except CommitError as ce:
                    self._failure = ce
                    self._stop.set()
            finally:
                if not deferred:
                    self._queue.task_done()

    async def _progress(self, start: float) -> None:
        while True:
            await asyncio.sleep(self.s.progress_every_s)
            elapsed = time.monotonic() - start
            self.log(
                f"crawl: {self.summary.fetched} fetched ({self.summary.fetched / elapsed:.1f}/s), "
                f"{self.summary.stored} stored, {sum(self.summary.errors.values())} errors, "
                f"{self._queue.qsize()} queued, {self.summary.segments} segments committed"
            )

    async def run(self) -> CrawlSummary:
        start = time.monotonic()
        self._resume()
        self._stop = asyncio.Event()
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.private_hosts),
            limit=self.s.concurrency,
            limit_per_host=self.s.per_host_concurrency,
            enable_cleanup_closed=True,
        )
        headers = {"User-Agent": self.s.user_agent, "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5"}
        async with aiohttp.ClientSession(connector=connector, headers=headers, auto_decompress=True) as session:
            # aiohttp silently resends an idempotent request once when the connection drops before the
            # response head; the crawler does its own retries (backoff, per-host delay, attempt count),
            # so that hidden resend would double the load on a failing server and under-count attempts.
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            self._session = session
            workers = [asyncio.create_task(self._worker()) for _ in range(self.s.concurrency)]
            progress = asyncio.create_task(self._progress(start))
            done = asyncio.create_task(self._queue.join())
            stop = asyncio.create_task(self._stop.wait())
            try:
                await asyncio.wait({done, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for handle in self._timers:
                    handle.cancel()
                for t in (*workers, progress, done, stop):
                    t.cancel()
                await asyncio.gather(*workers, progress, done, stop, return_exceptions=True)
                if self._failure is None:
                    self._commit_segment()
                elif self._segment is not None:  # keep its WARC for recovery; the crawl already failed
                    try:
                        self._commit_segment()
                    except CommitError as e:
                        self.log(f"crawl: {e}")
        if self._failure is not None:
            raise self._failure
        self.summary.seconds = time.monotonic() - start
        self.log(
            f"crawl done: {self.summary.fetched} fetched, {self.summary.stored} stored in "
            f"{self.summary.seconds:.1f}s; errors {dict(self.summary.errors)}"
        )
        return self.summary


def final_manifest(store: CrawlStore) -> pl.DataFrame:
    """All committed manifest rows of a crawl, one row per URL (the newest outcome wins)."""
    rows, _ = store.load()
    return rows.sort("fetch_time").unique("url", keep="last", maintain_order=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m crawl2serve.assets.crawl.crawler --seed URL --out DIR``: the same crawler outside Dagster."""
    from crawl2serve.resources.storage import DataRoot

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--seed", action="append", required=True)
    p.add_argument("--out", required=True, help="directory (or fsspec URL) of this crawl")
    p.add_argument("--settings", default="{}", help="JSON object of CrawlSettings fields")
    a = p.parse_args(argv)
    extra = json.loads(a.settings)
    settings = CrawlSettings(
        seeds=tuple(a.seed), **{k: tuple(v) if isinstance(v, list) else v for k, v in extra.items()}
    )
    root = DataRoot(url=a.out)
    summary = asyncio.run(Crawler(settings, CrawlStore(root, root.root)).run())
    print(json.dumps(summary.as_dict()))


if __name__ == "__main__":
    main()
