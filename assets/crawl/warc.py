"""WARC segments as crawlers write them, and a fast reader for WARC/WET files (framework-free).

Writing uses warcio (the reference implementation of the format); reading uses fastwarc, which reads
~2.6x faster (FIELD-NOTES: 22k vs 8.3k records/s). Each crawl segment is one gzip-per-record WARC file
holding a ``warcinfo`` record, then a ``request`` and a ``response`` record per fetch, linked by
``WARC-Concurrent-To``. Bodies are stored decoded; like Common Crawl, the transfer headers that no
longer describe them are kept under ``X-Crawler-*`` names.
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
        """Write the request and the response of one fetch; return where the response record is."""
        date = _warc_date(fetched_at)
        path = url.split("://", 1)[1]
        path = path[path.find("/") :] if "/" in path else "/"
        req_headers = StatusAndHeaders(f"GET {path} HTTP/1.1", request_headers, is_http_request=True)
        request = self._writer.create_warc_record(
            url, "request", payload=io.BytesIO(b""), http_headers=req_headers,
            warc_headers_dict={"WARC-Date": date},
        )
        resp_id = f"<urn:uuid:{uuid.uuid4()}>"
        headers = [
            (f"X-Crawler-{k}" if k.lower() in _RENAMED_HEADERS else k, v) for k, v in response_headers
        ]
        headers.append(("Content-Length", str(len(body))))
        resp_headers = StatusAndHeaders(f"{status} {reason}".strip(), headers, protocol="HTTP/1.1")
        warc_headers = {"WARC-Date": date, "WARC-Record-ID": resp_id}
        if peer_ip:
            warc_headers["WARC-IP-Address"] = peer_ip
        response = self._writer.create_warc_record(
            url, "response", payload=io.BytesIO(body), length=len(body), http_headers=resp_headers,
            warc_headers_dict=warc_headers,
        )
        request.rec_headers.add_header("WARC-Concurrent-To", resp_id)
        self._writer.write_record(request)
        offset = self._stream.tell()
        self._writer.write_record(response)
        self.records += 1
        return StoredRecord(resp_id, offset, self._stream.tell() - offset)


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
