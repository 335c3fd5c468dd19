"""WARC/WET ingest validates records: a truncated or corrupt file is reported with its file and byte offset,
a partial record is never ingested, and one bad file does not cost its neighbours.

The payloads are real documentation pages (tests/corpus/fixtures); the WARC files are written by warcio
(with its block and payload digests), then cut or damaged.
"""

import base64
import gzip
import hashlib
import io
import zlib
from pathlib import Path

import dagster as dg
import pytest

from crawl2serve.assets.corpus.extracted import extracted_pages
from crawl2serve.assets.crawl.assets import raw_crawl
from crawl2serve.assets.crawl.warc import iter_records
from tests.support import PARTITION, facts, load, records, resources, warc_bytes

FIXTURES = Path(__file__).parent / "fixtures"
PAGES = ["pg-btree-intro.html", "python-faq-installed.html", "sphinx-support.html", "javadoc-RandomAccess.html"]
URLS = [f"https://docs.example.org/{name}" for name in PAGES]


def warc(kind: str = "response") -> bytes:
    return warc_bytes([(url, kind, (FIXTURES / name).read_bytes()) for url, name in zip(URLS, PAGES)])


def member_offsets(data: bytes) -> list[int]:
    """Start of each gzip member (one record each), and the end of the file."""
    offsets = [0]
    while offsets[-1] < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[offsets[-1] :])
        offsets.append(len(data) - len(d.unused_data))
    return offsets


def read(data: bytes, name: str = "crawl.warc.gz"):
    problems = []
    records = list(iter_records(io.BytesIO(data), name=name, on_problem=problems.append))
    return records, problems


def test_a_warc_cut_mid_record_keeps_the_records_before_it_and_never_the_partial_one():
    data = warc()
    offsets = member_offsets(data)
    cut = data[: (offsets[2] + offsets[3]) // 2]  # half-way through the third record's gzip member
    with pytest.raises(OSError, match=f"at byte {offsets[2]}: truncated record"):
        list(iter_records(io.BytesIO(cut)))
    records, problems = read(cut)
    assert [r.url for r in records] == URLS[:2]
    assert [(p.file, p.offset, p.problem) for p in problems] == [("crawl.warc.gz", offsets[2], "truncated record")]
    assert records[1].body == (FIXTURES / PAGES[1]).read_bytes()


def test_a_warc_cut_in_half_or_inside_a_record_header_is_reported():
    data = warc()
    offsets = member_offsets(data)
    for cut in (data[: len(data) // 2], data[: offsets[3] + 20]):
        records, problems = read(cut)
        whole = [i for i in range(4) if offsets[i + 1] <= len(cut)]
        assert [r.url for r in records] == [URLS[i] for i in whole]
        assert [(p.offset, p.problem) for p in problems] == [(offsets[len(whole)], "truncated record")]


def test_an_uncompressed_warc_cut_mid_block_is_reported_at_the_record():
    raw = gzip.decompress(warc())
    third = raw.index(b"WARC/1.", raw.index(b"WARC/1.", 1) + 1)
    records, problems = read(raw[: third + 3000], "crawl.warc")
    assert [r.url for r in records] == URLS[:2]
    assert [(p.file, p.offset, p.problem) for p in problems] == [("crawl.warc", third, "truncated record")]
    assert "block" in problems[0].detail and problems[0].url == URLS[2]


def test_a_corrupt_gzip_member_names_the_file_and_offset_and_reading_goes_on():
    data = bytearray(warc())
    offsets = member_offsets(bytes(data))
    data[offsets[1] + 100 : offsets[1] + 140] = b"\x00" * 40  # inside the second record's deflate stream
    with pytest.raises(OSError, match=rf"site-a\.warc\.gz at byte {offsets[1]}: corrupt gzip member"):
        list(iter_records(io.BytesIO(bytes(data)), name="site-a.warc.gz"))
    records, problems = read(bytes(data), "site-a.warc.gz")
    assert [r.url for r in records] == [URLS[0], URLS[2], URLS[3]]  # the next member is found again
    assert [(p.file, p.offset, p.problem) for p in problems] == [("site-a.warc.gz", offsets[1], "corrupt gzip member")]
    assert "Gzip decompression error" in problems[0].detail


def test_trailing_junk_after_the_last_record_is_reported():
    data = warc()
    records, problems = read(data + b"\x1f\x8b\x08\x00 not a gzip member")
    assert len(records) == 4 and [(p.offset, p.problem) for p in problems] == [(len(data), "corrupt gzip member")]


def test_a_block_digest_mismatch_drops_that_record_only():
    raw = bytearray(gzip.decompress(warc()))
    at = raw.index(b"includes an implementation")
    raw[at : at + 10] = b"postgresql"  # same length, different bytes
    with pytest.raises(OSError, match="at byte 0: block digest mismatch"):
        list(iter_records(io.BytesIO(bytes(raw))))
    records, problems = read(bytes(raw), "crawl.warc")
    assert [r.url for r in records] == URLS[1:]
    assert [(p.offset, p.problem, p.url) for p in problems] == [(0, "block digest mismatch", URLS[0])]


def raw_response(url: str, body: bytes, **warc_headers: str) -> bytes:
    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    headers = {
        "WARC-Type": "response",
        "WARC-Target-URI": url,
        "WARC-Date": "2026-11-20T00:00:00Z",
        "WARC-Record-ID": f"<urn:sha1:{hashlib.sha1(url.encode()).hexdigest()}>",
        "Content-Type": "application/http; msgtype=response",
        "Content-Length": str(len(block)),
        **{k.replace("_", "-"): v for k, v in warc_headers.items()},
    }
    head = "WARC/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + block + b"\r\n\r\n"


def test_a_payload_digest_mismatch_and_a_wrong_content_length_are_reported():
    body = (FIXTURES / PAGES[0]).read_bytes()
    good = raw_response(
        URLS[1], body, WARC_Payload_Digest="sha1:" + base64.b32encode(hashlib.sha1(body).digest()).decode()
    )
    bad_payload = raw_response(URLS[0], body, WARC_Payload_Digest="sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    records, problems = read(bad_payload + good, "x.warc")
    assert [r.url for r in records] == [URLS[1]] and records[0].body == body
    assert [(p.offset, p.problem) for p in problems] == [(0, "payload digest mismatch")]
    # a Content-Length that overstates the block: the block runs into the next record's header
    long = raw_response(URLS[2], body)
    declared = long.split(b"\r\n\r\n", 1)[0]
    n = int(declared.rsplit(b"Content-Length: ", 1)[1])
    overstated = long.replace(b"Content-Length: %d\r\n\r\n" % n, b"Content-Length: %d\r\n\r\n" % (n + 500), 1)
    records, problems = read(overstated, "y.warc")
    assert records == [] and [(p.offset, p.problem) for p in problems] == [(0, "truncated record")]


def test_a_wet_file_cut_mid_record_keeps_the_whole_conversion_records():
    data = warc("conversion")
    offsets = member_offsets(data)
    records, problems = read(data[: offsets[3] + 200], "crawl.wet.gz")
    assert [(r.kind, r.url) for r in records] == [("conversion", u) for u in URLS[:3]]
    assert [(p.file, p.offset, p.problem) for p in problems] == [("crawl.wet.gz", offsets[3], "truncated record")]


def test_ingest_reports_bad_files_and_keeps_their_neighbours(tmp_path):
    data = warc()
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a-good.warc.gz").write_bytes(data)
    other = warc_bytes(
        [(u.replace("docs.", "mirror."), "response", (FIXTURES / n).read_bytes()) for u, n in zip(URLS, PAGES)]
    )
    other_offsets = member_offsets(other)
    (inbox / "b-cut.warc.gz").write_bytes(other[: (other_offsets[1] + other_offsets[2]) // 2])
    corrupt = bytearray(
        warc_bytes([(u.replace("docs.", "www."), "response", (FIXTURES / n).read_bytes()) for u, n in zip(URLS, PAGES)])
    )
    corrupt_offsets = member_offsets(bytes(corrupt))
    corrupt[corrupt_offsets[2] + 100 : corrupt_offsets[2] + 140] = b"\x00" * 40
    (inbox / "c-corrupt.warc.gz").write_bytes(bytes(corrupt))
    result = dg.materialize(
        [raw_crawl, extracted_pages],
        resources=resources(tmp_path / "data"),
        partition_key=PARTITION,
        run_config={"ops": {"raw_crawl": {"config": {"ingest_paths": [str(inbox / "*.warc.gz")]}}}},
    )
    assert result.success
    manifest = load(tmp_path / "data", "raw_crawl")
    expected = (
        URLS
        + [URLS[0].replace("docs.", "mirror.")]
        + [u.replace("docs.", "www.") for i, u in enumerate(URLS) if i != 2]
    )
    assert sorted(manifest["url"]) == sorted(expected)
    meta = result.asset_materializations_for_node("raw_crawl")[0].metadata
    problems = {(r["file"], r["offset"], r["problem"]) for r in records(meta["read_problems"])}
    assert (str(inbox / "b-cut.warc.gz"), other_offsets[1], "truncated record") in problems
    assert (str(inbox / "c-corrupt.warc.gz"), corrupt_offsets[2], "corrupt gzip member") in problems
    assert facts(meta["summary"])["read_problems"] == "2"
    pages = load(tmp_path / "data", "extracted_pages")
    assert sorted(pages["url"]) == sorted(expected)
    # the embedded crawl target (mode pydoc) starts its documentation server only for a crawl that asks for seeds
    assert not list((tmp_path / "data").rglob("pydoc_port"))
