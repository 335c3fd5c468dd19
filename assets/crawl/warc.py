"""WARC segments as crawlers write them, and a fast reader for WARC/WET files (framework-free).

Writing uses warcio (the reference implementation of the format); reading uses fastwarc, which reads
~2.6x faster (FIELD-NOTES: 22k vs 8.3k records/s). Each crawl segment is one gzip-per-record WARC file
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

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
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
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
            url, "request", payload=io.BytesIO(b""), http_headers=req_headers,
            warc_headers_dict={"WARC-Date": date},
        )
        resp_id = f"<urn:uuid:{uuid.uuid4()}>"
        headers = [
            (f"X-Crawler-{k}" if k.lower() in _RENAMED_HEADERS else k, v) for k, v in response_headers
        ]
        headers.append(("Content-Length", str(len(body))))
        resp_headers = _ExactHeaders(f"{status} {reason}".strip(), headers, protocol="HTTP/1.1")
        warc_headers = {"WARC-Date": date, "WARC-Record-ID": resp_id}
        if peer_ip:
            warc_headers["WARC-IP-Address"] = peer_ip
        response = writer.create_warc_record(
            url, "response", payload=io.BytesIO(body), length=len(body), http_headers=resp_headers,
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


def iter_records(stream: BinaryIO) -> Iterator[ReadRecord]:
    """Response and conversion records of a WARC or WET stream (gzip or not), in file order."""
    types = WarcRecordType.response | WarcRecordType.conversion
    for rec in ArchiveIterator(stream, record_types=types, parse_http=True):
        url = rec.headers.get("WARC-Target-URI", "")
        if rec.record_type == WarcRecordType.conversion:
            yield ReadRecord(url, "conversion", None, "text/plain", {}, rec.reader.read(),
                             rec.headers.get("WARC-Date"), rec.stream_pos)
            continue
        http = rec.http_headers
        if http is None:
            continue
        headers = {k.lower(): v for k, v in http.items()}
        yield ReadRecord(
            url, "response", http.status_code, headers.get("content-type"), headers, rec.reader.read(),
            rec.headers.get("WARC-Date"), rec.stream_pos,
        )
