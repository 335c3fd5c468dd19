"""WARC segments as crawlers write them, and a fast reader for WARC/WET files (framework-free).

Writing uses warcio (the reference implementation of the format); reading uses fastwarc, which reads
~2.6x faster (FIELD-NOTES: 22k vs 8.3k records/s), and validates what it reads (``iter_records``: lengths,
digests, gzip members; faults are reported with file and byte offset, partial records never yielded).
Each crawl segment is one gzip-per-record WARC file
holding a ``warcinfo`` record, then a ``request`` and a ``response`` record per fetch, linked by
``WARC-Concurrent-To``. Bodies are stored decoded; like Common Crawl, the transfer headers that no
longer describe them are kept under ``X-Crawler-*`` names.

A record either lands whole or not at all: each exchange is serialized into memory first and appended
in one write (a failed write is cut back off), so a header or serializer that fails never leaves half
a record in a segment. HTTP headers are written byte-exact as UTF-8 (warcio would %-encode non-ASCII
values); a header that cannot be (bytes that are not UTF-8, control characters) raises
``InvalidHeaderError`` naming it, before anything is written.
"""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from fastwarc.warc import ArchiveIterator, WarcRecordType
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

SOFTWARE = "crawl2serve"
_RENAMED_HEADERS = {"content-encoding", "transfer-encoding", "content-length"}
# RFC 9110 5.6.2 token characters (a field name); RFC 9110 5.5: CR, LF and NUL in a value are invalid, and
# so is every other control character but HTAB (field-vchar is VCHAR / obs-text).
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_CONTROL = frozenset(range(0x20)) - {0x09} | {0x7F}


class InvalidHeaderError(ValueError):
    """A response header (or the status line) that cannot be stored as it was received."""

    def __init__(self, header: str, why: str):
        super().__init__(f"{header}: {why}")
        self.header = header
        self.why = why


def _printable(name: bytes | str) -> str:
    """A header name fit for an error message and a manifest row, whatever bytes it holds."""
    if isinstance(name, str):
        name = name.encode("utf-8", "surrogateescape")
    return name.decode("ascii", "backslashreplace")[:100]


def check_header(name: bytes | str, value: bytes | str) -> tuple[str, str]:
    """``(name, value)`` as text when the header can be stored byte-exact, else ``InvalidHeaderError``.

    Bytes are accepted as received (``aiohttp``'s ``raw_headers``); text must be what they decode to as
    UTF-8 (``surrogateescape`` residue is refused). The rule: the name is an RFC 9110 token, the value is
    valid UTF-8 without control characters other than HTAB."""
    raw_name = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else bytes(name)
    try:
        raw_value = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    except UnicodeEncodeError:
        raise InvalidHeaderError(_printable(raw_name), "bytes that are not UTF-8") from None
    if not raw_name or not set(raw_name) <= _TOKEN:
        raise InvalidHeaderError(_printable(raw_name), "not a token")
    if _CONTROL.intersection(raw_value):
        raise InvalidHeaderError(raw_name.decode("ascii"), "control character")
    try:
        text = raw_value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidHeaderError(raw_name.decode("ascii"), "bytes that are not UTF-8") from None
    return raw_name.decode("ascii"), text


def check_headers(headers) -> list[tuple[str, str]]:
    """Every header through ``check_header``; the first bad one raises."""
    return [check_header(k, v) for k, v in headers]


class _ExactHeaders(StatusAndHeaders):
    """HTTP headers written as UTF-8, exactly as received (warcio's default %-encodes non-ASCII values)."""

    def to_ascii_bytes(self, filter_func=None):
        return self.to_str(filter_func).encode("utf-8") + b"\r\n"


def _warc_date(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class StoredRecord:
    """Where one response landed: the file and the byte offset of its gzip member."""

    record_id: str
    offset: int
    length: int


class WarcSegmentWriter:
    """Appends request/response pairs to one WARC file object (gzip per record, seekable offsets)."""

    def __init__(self, stream: BinaryIO, *, filename: str, info: dict[str, str]):
        self._stream = stream
        self._writer = WARCWriter(stream, gzip=True, warc_version="1.1")
        fields = {"software": SOFTWARE, "format": "WARC File Format 1.1", **info}
        self._writer.write_record(self._writer.create_warcinfo_record(filename, fields))
        self.records = 0

    def write_exchange(
        self,
        *,
        url: str,
        request_headers: list[tuple[str, str]],
        status: int,
        reason: str,
        response_headers: list[tuple[str, str]],
        body: bytes,
        fetched_at: datetime,
        peer_ip: str | None,
    ) -> StoredRecord:
        """Write the request and the response of one fetch; return where the response record is.

        All or nothing: ``InvalidHeaderError`` (or any serializer error) leaves the stream as it was."""
        check_headers(response_headers)
        check_headers(request_headers)
        if reason:
            check_header("Reason-Phrase", reason)
        date = _warc_date(fetched_at)
        path = url.split("://", 1)[1]
        path = path[path.find("/") :] if "/" in path else "/"
        buffer = io.BytesIO()
        writer = WARCWriter(buffer, gzip=True, warc_version="1.1")
        req_headers = _ExactHeaders(f"GET {path} HTTP/1.1", list(request_headers), is_http_request=True)
        request = writer.create_warc_record(
            url,
            "request",
            payload=io.BytesIO(b""),
            http_headers=req_headers,
            warc_headers_dict={"WARC-Date": date},
        )
        resp_id = f"<urn:uuid:{uuid.uuid4()}>"
        headers = [(f"X-Crawler-{k}" if k.lower() in _RENAMED_HEADERS else k, v) for k, v in response_headers]
        headers.append(("Content-Length", str(len(body))))
        resp_headers = _ExactHeaders(f"{status} {reason}".strip(), headers, protocol="HTTP/1.1")
        warc_headers = {"WARC-Date": date, "WARC-Record-ID": resp_id}
        if peer_ip:
            warc_headers["WARC-IP-Address"] = peer_ip
        response = writer.create_warc_record(
            url,
            "response",
            payload=io.BytesIO(body),
            length=len(body),
            http_headers=resp_headers,
            warc_headers_dict=warc_headers,
        )
        request.rec_headers.add_header("WARC-Concurrent-To", resp_id)
        writer.write_record(request)
        response_at = buffer.tell()
        writer.write_record(response)
        data = buffer.getvalue()
        start = self._stream.tell()
        try:
            self._stream.write(data)
        except BaseException:
            self._cut_back(start)
            raise
        self.records += 1
        return StoredRecord(resp_id, start + response_at, len(data) - response_at)

    def _cut_back(self, offset: int) -> None:
        """Drop whatever part of a failed append reached the stream (when the stream can)."""
        try:
            self._stream.seek(offset)
            self._stream.truncate()
        except (OSError, ValueError, io.UnsupportedOperation):
            pass


@dataclass(frozen=True)
class ReadRecord:
    """One document-bearing record: an HTTP response (HTML bytes) or a WET conversion (plain text)."""

    url: str
    kind: str  # "response" | "conversion"
    status: int | None
    content_type: str | None
    headers: dict[str, str]
    body: bytes
    date: str | None
    offset: int


@dataclass(frozen=True)
class ReadProblem:
    """A fault found while reading a WARC/WET file: where (file, byte offset of the record or gzip member in
    the file as stored, i.e. compressed offsets for .gz) and what."""

    file: str
    offset: int
    problem: str  # truncated record | corrupt gzip member | invalid record | block digest mismatch | ...
    detail: str = ""
    url: str | None = None

    def __str__(self) -> str:
        where = f"{self.file or '<stream>'} at byte {self.offset}"
        return (
            f"{where}: {self.problem}"
            + (f" ({self.detail})" if self.detail else "")
            + (f" [{self.url}]" if self.url else "")
        )


class WarcReadError(OSError):
    """A WARC/WET file that cannot be read as it claims; ``problem`` says file and offset."""

    def __init__(self, problem: ReadProblem):
        super().__init__(str(problem))
        self.problem = problem


_DOC_TYPES = (WarcRecordType.response, WarcRecordType.conversion)
_GZIP_MAGIC = b"\x1f\x8b\x08"
_CHUNK = 1 << 16


def _raise(problem: ReadProblem) -> None:
    raise WarcReadError(problem)


def iter_records(
    stream: BinaryIO, name: str = "", on_problem: Callable[[ReadProblem], None] | None = None
) -> Iterator[ReadRecord]:
    """Response and conversion records of a WARC or WET stream (gzip or not), in file order, validated.

    A record is yielded only when it is whole: its block as long as its ``Content-Length``, its
    ``WARC-Block-Digest`` matching when present, else its ``WARC-Payload-Digest`` (a verified block holds the
    payload byte for byte; payload digests are not checked on records still carrying a ``Transfer-Encoding``,
    whose digest may be of the de-chunked body), its HTTP head parseable. Anything else is a
    ``ReadProblem`` (file ``name``, byte offset) passed to ``on_problem``; without one, the first problem
    raises ``WarcReadError``. On a seekable stream, reading goes on after a corrupt gzip member or an
    unparseable record from the next gzip member (or ``WARC/`` line) after it, and the end of the file is
    checked: bytes after the last complete record (a file cut inside a record header, or junk) are a
    problem too. Offsets are positions in the file as stored (the gzip member's offset for .gz files).
    """
    report = on_problem or _raise
    seekable = _seekable(stream)
    start = stream.tell() if seekable else 0
    gz = _is_gzip(stream) if seekable else False
    reported: set[int] = set()
    last: int | None = None  # offset of the last record parsed
    pos = start
    while True:
        try:
            for rec in ArchiveIterator(stream, parse_http=False):
                last = rec.stream_pos
                if rec.record_type not in _DOC_TYPES:
                    continue
                out = _validate(rec, name)
                if isinstance(out, ReadProblem):
                    reported.add(out.offset)
                    report(out)
                else:
                    yield out
            break
        except WarcReadError:
            raise
        except OSError as e:  # fastwarc: "Gzip decompression error", "Invalid WARC header", ...
            if not seekable:
                report(ReadProblem(name, last if last is not None else pos, "unreadable after this offset", str(e)))
                return
            bad = _fault_offset(stream, gz, last, pos)
            reported.add(bad)
            report(ReadProblem(name, bad, "corrupt gzip member" if gz else "invalid record", str(e)))
            nxt = _next_start(stream, gz, bad + 1)
            if nxt is None:
                return
            stream.seek(nxt)
            pos, last = nxt, None
    if seekable:
        _check_end(stream, name, gz, last, pos, reported, report)


def _validate(rec, name: str) -> ReadRecord | ReadProblem:
    url = rec.headers.get("WARC-Target-URI", "") or ""
    offset = rec.stream_pos
    declared = rec.headers.get("Content-Length")
    block = rec.reader.read()
    try:
        length = int(declared) if declared is not None else None
    except ValueError:
        length = None
    if length is None:  # no usable Content-Length: a header cut short (nothing after it), or a broken one
        kind = "truncated record" if declared is None and not block else "invalid record"
        return ReadProblem(name, offset, kind, f"Content-Length {declared!r}", url or None)
    if len(block) != length:
        kind = "truncated record" if len(block) < length else "invalid record"
        return ReadProblem(name, offset, kind, f"block {len(block)} of {length} bytes", url or None)
    block_digest = rec.headers.get("WARC-Block-Digest")
    block_ok = _digest_matches(block_digest, block) if block_digest else None
    if block_ok is False:
        return ReadProblem(name, offset, "block digest mismatch", block_digest, url or None)
    date = rec.headers.get("WARC-Date")
    if rec.record_type == WarcRecordType.conversion:
        return ReadRecord(url, "conversion", None, "text/plain", {}, block, date, offset)
    http = _parse_http(block)
    if http is None:
        return ReadProblem(name, offset, "invalid HTTP response", "no status line and header block", url or None)
    status, headers, body = http
    digest = None if block_ok else rec.headers.get("WARC-Payload-Digest")  # a verified block holds the payload
    if digest and "transfer-encoding" not in headers and _digest_matches(digest, body) is False:
        return ReadProblem(name, offset, "payload digest mismatch", digest, url or None)
    return ReadRecord(url, "response", status, headers.get("content-type"), headers, body, date, offset)


def _parse_http(block: bytes) -> tuple[int | None, dict[str, str], bytes] | None:
    """(status, lower-cased headers, body) of an HTTP response block; None if it has no header block."""
    end, sep = block.find(b"\r\n\r\n"), 4
    if end < 0:
        end, sep = block.find(b"\n\n"), 2
        if end < 0:
            return None
    head = block[:end]
    try:  # the writer stores header values byte-exact as UTF-8; anything else is read as latin-1
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lines = text.replace("\r\n", "\n").split("\n")
    first = lines[0].split(None, 2)
    if len(first) < 2 or not first[0].upper().startswith("HTTP/"):
        return None
    status = int(first[1]) if first[1].isdigit() else None
    headers: dict[str, str] = {}
    key = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and key is not None:  # obsolete line folding
            headers[key] += " " + line.strip()
            continue
        k, colon, v = line.partition(":")
        if colon:
            key = k.strip().lower()
            headers[key] = v.strip()
    return status, headers, block[end + sep :]


def _digest_matches(value: str, data: bytes) -> bool | None:
    """Whether a WARC digest (``algorithm:value``, base32, hex or base64) matches; None if not checkable."""
    algo, _, encoded = value.strip().partition(":")
    algo = algo.lower().replace("-", "")
    if not encoded or algo not in hashlib.algorithms_available:
        return None
    raw = hashlib.new(algo, data).digest()
    encoded = encoded.strip()
    return (
        encoded.upper().rstrip("=") == base64.b32encode(raw).decode().rstrip("=")
        or (encoded.lower() == raw.hex())
        or encoded.rstrip("=") == base64.b64encode(raw).decode().rstrip("=")
    )


def _seekable(stream) -> bool:
    try:
        return bool(stream.seekable()) and stream.tell() >= 0
    except (AttributeError, OSError, ValueError):
        return False


def _is_gzip(stream) -> bool:
    pos = stream.tell()
    magic = stream.read(3)
    stream.seek(pos)
    return magic == _GZIP_MAGIC


def _member_end(stream, offset: int) -> int | None:
    """End offset of the gzip member at ``offset``; None if it is corrupt or cut short."""
    stream.seek(offset)
    d = zlib.decompressobj(31)
    consumed = 0
    try:
        while not d.eof:
            chunk = stream.read(_CHUNK)
            if not chunk:
                return None
            consumed += len(chunk)
            d.decompress(chunk)
            while d.unconsumed_tail:  # keep memory bounded: drain output
                d.decompress(d.unconsumed_tail)
    except zlib.error:
        return None
    return offset + consumed - len(d.unused_data)


def _raw_record_end(stream, offset: int) -> int | None:
    """End offset (after the closing CRLF CRLF) of the uncompressed record at ``offset``; None if cut short."""
    stream.seek(offset)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = stream.read(_CHUNK)
        if not chunk or len(head) > (1 << 20):
            return None
        head += chunk
    header = head[: head.index(b"\r\n\r\n")]
    for line in header.split(b"\r\n"):
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length" and v.strip().isdigit():
            end = offset + len(header) + 4 + int(v) + 4
            size = stream.seek(0, 2)
            return end if end <= size else None
    return None


def _fault_offset(stream, gz: bool, last: int | None, start: int) -> int:
    """Offset of the member (gzip) or record (uncompressed) where reading failed."""
    pos = last if last is not None else start
    if not gz:
        if last is None:
            return start
        end = _raw_record_end(stream, last)
        return end if end is not None else last
    first = True
    while True:
        end = _member_end(stream, pos)
        if end is None:
            return pos
        if not first or last is None:
            return pos  # a sound member that fastwarc could not parse as a WARC record
        first, pos = False, end


def _next_start(stream, gz: bool, after: int) -> int | None:
    """Offset of the next gzip member header (gzip) or ``WARC/`` line (uncompressed) at or after ``after``."""
    needle = _GZIP_MAGIC if gz else b"WARC/"
    stream.seek(after)
    pos, carry = after, b""
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return None
        buf = carry + chunk
        i = buf.find(needle)
        while i >= 0:
            at = pos - len(carry) + i
            if gz and _member_end(stream, at) is not None:
                return at
            if not gz and (at == 0 or _peek(stream, at - 1, 1) == b"\n"):
                return at
            i = buf.find(needle, i + 1)
        stream.seek(pos + len(chunk))
        pos += len(chunk)
        carry = buf[-(len(needle) - 1) :]


def _peek(stream, offset: int, n: int) -> bytes:
    here = stream.tell()
    stream.seek(offset)
    data = stream.read(n)
    stream.seek(here)
    return data


def _check_end(stream, name, gz, last, start, reported, report) -> None:
    """Report bytes after the last complete record: a file cut in a record (header) or trailing junk."""
    size = stream.seek(0, 2)
    if last is None:  # not one record: a file cut inside its first record header, or not a WARC file
        stream.seek(start)
        if size > start and start not in reported and stream.read(_CHUNK).strip():
            report(ReadProblem(name, start, "no complete record", f"{size - start} bytes unread"))
        return
    end = _member_end(stream, last) if gz else _raw_record_end(stream, last)
    if end is None:
        if last not in reported:
            report(ReadProblem(name, last, "truncated record", f"the file ends at byte {size}"))
        return
    stream.seek(end)
    if end < size and stream.read(_CHUNK).strip():
        report(
            ReadProblem(
                name,
                end,
                "truncated record" if gz else "invalid record",
                f"{size - end} bytes after the last complete record",
            )
        )
