"""No input loses stored data: bad header bytes, a failing serializer, a failing commit, a kill.

A loopback site sends invalid bytes in every kind of response header, interleaved with good pages.
Every good page must end up stored and in a manifest, every bad one as an error row naming the header,
and every segment must commit. Files a kill or an I/O error leaves without a manifest are recovered.
"""

from __future__ import annotations

import io
import json
import pathlib
import subprocess
import sys
from datetime import UTC, datetime

import polars as pl
import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType

from crawl2serve.assets.crawl.crawler import CrawlStore, Outcome, _manifest_frame, final_manifest
from crawl2serve.resources.storage import DataRoot
from tests.crawl.conftest import kill_when

pytestmark = pytest.mark.timeout(90)
REPO = pathlib.Path(__file__).resolve().parents[2]

# header -> a plausible value; the bad bytes go at its end
HEADERS = {
    b"Content-Type": b"text/html; charset=utf-8",
    b"Location": b"/elsewhere",
    b"Last-Modified": b"Wed, 21 Oct 2015 07:28:00 GMT",
    b"ETag": b'"abc"',
    b"Set-Cookie": b"session=1",
    b"Content-Disposition": b'inline; filename="page.html"',
    b"Content-Language": b"en",
    b"Link": b'</style.css>; rel="preload"',
    b"Server": b"loopback/1.0",
    b"Retry-After": b"120",
    b"X-Custom": b"value",
}
BAD_BYTES = {
    "ff": b"\xff",
    "encoded-surrogate": b"\xed\xa0\x80",  # what surrogateescape makes of it is not text
    "overlong": b"\xc0\xaf",
    "latin1": b" caf\xe9",
    "control": b"a\x01b",
    "del": b"a\x7fb",
}
# refused by aiohttp's HTTP parser itself: the whole response is unreadable
PARSER_REFUSED = {
    "nul-in-value": [(b"X-Custom", b"a\x00b")],
    "nul-in-content-type": [(b"Content-Type", b"text/html\x00")],
    "bad-name": [(b"X-N\xffame", b"v")],
}


def body_with_links(*urls: str, text: str = "page") -> bytes:
    return (
        "<html><body><p>" + text + "</p>" + "".join(f'<a href="{u}">x</a>' for u in urls) + "</body></html>"
    ).encode()


def fuzz_site(server, good: int = 30, delay: float = 0.0) -> dict[str, dict]:
    """Serve good pages interleaved with bad ones; return url -> what the manifest must say about it."""
    expect: dict[str, dict] = {}
    bad = []
    for name, value in HEADERS.items():
        for kind, junk in BAD_BYTES.items():
            path = f"/bad/{name.decode()}/{kind}"
            headers = [(name, value + junk)]
            if name != b"Content-Type":
                headers.append((b"Content-Type", b"text/html; charset=utf-8"))
            server.route(path, server.raw(b"HTTP/1.1 200 OK", headers))
            bad.append(path)
            expect[server.url(path)] = {"error": f"bad_header:{name.decode()}"}
        # the same bad Location on a redirect, which the crawler would otherwise follow
    for kind, junk in BAD_BYTES.items():
        path = f"/bad/redirect/{kind}"
        server.route(path, server.raw(b"HTTP/1.1 302 Found", [(b"Location", b"/good/0" + junk)]))
        bad.append(path)
        expect[server.url(path)] = {"error": "bad_header:Location"}
    path = "/bad/reason"
    server.route(path, server.raw(b"HTTP/1.1 200 O\xffK", [(b"Content-Type", b"text/html")]))
    bad.append(path)
    expect[server.url(path)] = {"error": "bad_status_line"}
    for kind, headers in PARSER_REFUSED.items():
        path = f"/bad/parser/{kind}"
        server.route(path, server.raw(b"HTTP/1.1 200 OK", headers))
        bad.append(path)
        expect[server.url(path)] = {"error_prefix": "bad_response:"}
    goods = []
    for i in range(good):
        path = f"/good/{i}"
        # valid UTF-8 outside ASCII is fine, and is stored byte-exact
        server.route(
            path,
            server.raw(
                b"HTTP/1.1 200 OK",
                [(b"Content-Type", b"text/html; charset=utf-8"), (b"X-Title", "caf\u00e9 \u4e2d".encode())],
                body_with_links(text=f"good {i}"),
            ),
        )
        if delay:
            server.routes[path] = _delayed(server.routes[path], delay)
        goods.append(path)
        expect[server.url(path)] = {"stored": True}
    order = []  # good, bad, bad, good, ...: every segment mixes them
    while goods or bad:
        if goods:
            order.append(goods.pop(0))
        order += [bad.pop(0) for _ in range(min(3, len(bad)))]
    server.route("/", server.page(body_with_links(*[server.url(p) for p in order], text="index")))
    expect[server.url("/")] = {"stored": True}
    return expect


def _delayed(handler, delay):
    import asyncio

    async def h(req, w):
        await asyncio.sleep(delay)
        await handler(req, w)

    return h


def check_manifest(rows: dict[str, dict], expect: dict[str, dict]) -> None:
    assert set(rows) == set(expect), sorted(set(expect) ^ set(rows))[:10]
    for url, want in expect.items():
        row = rows[url]
        if want.get("stored"):
            assert row["error"] is None and row["warc_file"] is not None, row
        elif "error" in want:
            assert row["error"] == want["error"] and row["warc_file"] is None, (url, row["error"])
        else:
            assert row["error"].startswith(want["error_prefix"]) and row["warc_file"] is None, (url, row["error"])


def check_segments(seg_dir: pathlib.Path) -> int:
    """Every WARC has its manifest, every record is whole (digests verified); returns the segment count."""
    warcs = sorted(seg_dir.glob("*.warc.gz"))
    for w in warcs:
        stem = w.name.removesuffix(".warc.gz")
        assert (seg_dir / f"{stem}.manifest.parquet").exists() and (seg_dir / f"{stem}.links.parquet").exists(), stem
        with open(w, "rb") as f:
            recs = list(ArchiveIterator(f, parse_http=False, verify_digests=True))
        with open(w, "rb") as f:
            assert len(recs) == len(list(ArchiveIterator(f, parse_http=False)))
        assert recs[0].record_type == WarcRecordType.warcinfo and len(recs) % 2 == 1
    return len(warcs)


def stored_at(row: dict):
    with open(row["warc_file"], "rb") as f:
        f.seek(row["warc_offset"])
        rec = next(iter(ArchiveIterator(f, parse_http=False)))
        return rec.headers.get("WARC-Target-URI"), rec.reader.read()


# -- bad bytes in every header ------------------------------------------------------------------------
def test_bad_header_bytes_become_error_rows_and_every_segment_commits(server, crawl):
    expect = fuzz_site(server)
    r = crawl([server.url("/")], segment_max_records=7)
    check_manifest(r.rows, expect)
    seg_dir = pathlib.Path(r.store.directory) / "segments"
    segments = check_segments(seg_dir)
    assert segments == len(list(seg_dir.glob("*.manifest.parquet"))) >= len(expect) // 7
    for path in [p for p in server.paths() if p.startswith("/bad/")]:
        assert server.paths().count(path) == 1  # a bad header is final, not retried
    # a good page's headers are stored byte for byte (valid UTF-8 is not %-encoded)
    uri, block = stored_at(r.row(server.url("/good/3")))
    assert uri == server.url("/good/3")
    assert "X-Title: caf\u00e9 \u4e2d\r\n".encode() in block and block.endswith(b"good 3</p></body></html>")


def test_a_single_page_crawl_with_a_bad_header_does_not_crash(server, crawl):
    url = server.route("/only", server.raw(b"HTTP/1.1 200 OK", [(b"Content-Type", b"text/html; charset=\xff")]))
    r = crawl([url])
    assert r.row(url)["error"] == "bad_header:Content-Type"
    assert r.row(url)["warc_file"] is None
    assert len(r.store.manifests()) == 1


def test_manifest_values_are_always_writable(tmp_path):
    row = Outcome(
        url="http://example.com/a",
        depth=0,
        status=200,
        content_type="text/html; charset=\udcff",
        error="crawler_error:UnicodeEncodeError:'\udced\udca0'",
        redirect_to="http://example.com/\udcff",
    )
    df = _manifest_frame([row])
    df.write_parquet(tmp_path / "m.parquet")
    back = pl.read_parquet(tmp_path / "m.parquet").row(0, named=True)
    assert back["content_type"] == "text/html; charset=\\udcff"  # kept, escaped
    assert back["url"] == "http://example.com/a"


# -- a serializer that fails half-way --------------------------------------------------------------------
def test_a_serializer_failing_mid_record_leaves_the_segment_whole(server, crawl, monkeypatch):
    import warcio.warcwriter as ww

    original = ww.GzippingWrapper.write

    def write(self, buff):
        if b"BOOM" in buff:
            self.out.write(b"\x1f\x8b half a member")  # some bytes reach the output, then it fails
            raise RuntimeError("serializer failed")
        return original(self, buff)

    monkeypatch.setattr(ww.GzippingWrapper, "write", write)
    pages = {f"/p{i}": body_with_links(text="BOOM" if i == 2 else f"fine {i}") for i in range(5)}
    for path, body in pages.items():
        server.route(path, server.page(body))
    r = crawl([server.url(p) for p in pages], concurrency=1)
    boom = r.row(server.url("/p2"))
    assert boom["error"] == "warc_write_failed:RuntimeError" and boom["warc_file"] is None
    check_segments(pathlib.Path(r.store.directory) / "segments")
    for path, body in pages.items():  # the pages after the failure are whole and where the manifest says
        if path != "/p2":
            uri, block = stored_at(r.row(server.url(path)))
            assert uri == server.url(path) and block.endswith(body)


# -- a commit that fails, then a resume ---------------------------------------------------------------
def test_a_failed_commit_keeps_the_warc_and_the_resume_recovers_it(server, crawl, tmp_path, monkeypatch):
    pages = [server.route(f"/p{i}", server.page(body_with_links(text=f"p{i}"))) for i in range(12)]
    original = DataRoot.write_parquet
    failed = []

    def write_parquet(self, df, path):
        if path.endswith(".manifest.parquet") and not failed:
            failed.append(path)
            raise OSError(28, "No space left on device")
        return original(self, df, path)

    monkeypatch.setattr(DataRoot, "write_parquet", write_parquet)
    d = tmp_path / "crawl"
    raised = None
    try:
        crawl(pages, directory=d, segment_max_records=5, concurrency=1)
    except Exception as e:
        raised = e
    seg_dir = d / "segments"
    stem = pathlib.Path(failed[0]).name.removesuffix(".manifest.parquet")
    assert (seg_dir / f"{stem}.warc.gz").exists() and not (seg_dir / f"{stem}.manifest.parquet").exists()
    monkeypatch.setattr(DataRoot, "write_parquet", original)

    r = crawl(pages, directory=d, segment_max_records=5, concurrency=1)
    for i in range(12):
        assert server.paths().count(f"/p{i}") == 1, f"/p{i} fetched again: its stored copy was deleted"
    assert all(r.row(u)["warc_file"] is not None and r.row(u)["error"] is None for u in pages)
    rows, _ = r.store.load()
    assert rows.height == 12 and rows["url"].n_unique() == 12
    check_segments(seg_dir)
    assert r.summary.recovered == 5
    # a failed manifest write stops the crawl (the disk is failing) instead of going on without it
    assert raised is not None and "did not commit" in str(raised)


def test_a_killed_segments_temporary_warc_is_recovered(tmp_path):
    from crawl2serve.assets.crawl.warc import WarcSegmentWriter

    root = DataRoot(url=str(tmp_path / "crawl"))
    seg_dir = pathlib.Path(root.root) / "segments"
    seg_dir.mkdir(parents=True)
    buf = io.BytesIO()
    w = WarcSegmentWriter(buf, filename="seg-x-00000.warc.gz", info={})
    for i in range(4):
        w.write_exchange(
            url=f"http://example.com/{i}",
            request_headers=[("User-Agent", "t")],
            status=200,
            reason="OK",
            response_headers=[("Content-Type", "text/html")],
            body=body_with_links(f"http://example.com/next{i}", text=f"t{i}"),
            fetched_at=datetime.now(UTC),
            peer_ip=None,
        )
    data = buf.getvalue()
    (seg_dir / ".tmp-seg-x-00000.warc.gz.abc123").write_bytes(data[:-40])  # the kill tore the last record
    (seg_dir / ".tmp-seg-x-00000.links.parquet.def456").write_bytes(b"half")
    store = CrawlStore(root, root.root)
    rows, links = store.load()
    assert sorted(rows["url"].to_list()) == [f"http://example.com/{i}" for i in range(3)]
    assert store.recovered == 3
    assert sorted(links["url"].to_list()) == [f"http://example.com/next{i}" for i in range(3)]
    assert sorted(p.name for p in seg_dir.iterdir()) == [
        "seg-x-00000.links.parquet",
        "seg-x-00000.manifest.parquet",
        "seg-x-00000.warc.gz",
    ]
    check_segments(seg_dir)
    for row in rows.iter_rows(named=True):
        assert stored_at(row)[0] == row["url"]
    assert store.load()[0].height == 3 and store.recovered == 0  # idempotent


# -- SIGKILL, a lost manifest, resume -------------------------------------------------------------------
def start_cli(seed: str, out: pathlib.Path) -> subprocess.Popen:
    settings = {
        "segment_max_records": 10,
        "segment_max_seconds": 3600,
        "concurrency": 2,
        "per_host_concurrency": 2,
        "per_host_delay_s": 0,
        "private_hosts": ["127.0.0.1"],
        "progress_every_s": 3600,
        "connect_timeout_s": 2,
        "read_timeout_s": 5,
        "total_timeout_s": 10,
        "max_retries": 1,
        "backoff_base_s": 0.01,
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crawl2serve.assets.crawl.crawler",
            "--seed",
            seed,
            "--out",
            str(out),
            "--settings",
            json.dumps(settings),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_kill_and_resume_keeps_every_stored_page(server, tmp_path):
    expect = fuzz_site(server, good=40, delay=0.03)
    out = tmp_path / "crawl"
    seg_dir = out / "segments"
    proc = start_cli(server.url("/"), out)
    kill_when(proc, lambda: len(list(seg_dir.glob("*.manifest.parquet"))) >= 3)
    # a kill one moment later than the WARC and link list, one moment before the manifest
    last = sorted(seg_dir.glob("*.manifest.parquet"))[-1]
    lost = set(pl.read_parquet(last).filter(pl.col("warc_file").is_not_null())["url"].to_list())
    last.unlink()
    assert lost
    stored_before = set()
    for m in seg_dir.glob("*.manifest.parquet"):
        stored_before |= set(pl.read_parquet(m).filter(pl.col("warc_file").is_not_null())["url"].to_list())

    mark = len(server.log)
    proc = start_cli(server.url("/"), out)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    again = {server.url(x.path) for x in server.log[mark:] if x.path != "/robots.txt"}
    assert not again & (lost | stored_before), sorted(again & (lost | stored_before))[:5]  # nothing stored refetched
    assert summary["recovered"] >= len(lost)

    root = DataRoot(url=str(out))
    store = CrawlStore(root, root.root)
    rows, _ = store.load()
    assert rows["url"].n_unique() == rows.height  # nothing twice
    final = {r["url"]: r for r in final_manifest(store).iter_rows(named=True)}
    check_manifest(final, expect)
    check_segments(seg_dir)
    for url, want in expect.items():
        if want.get("stored"):
            assert stored_at(final[url])[0] == url


def test_an_unreadable_orphan_is_set_aside_not_deleted(tmp_path):
    root = DataRoot(url=str(tmp_path / "crawl"))
    seg_dir = pathlib.Path(root.root) / "segments"
    seg_dir.mkdir(parents=True)
    (seg_dir / "seg-y-00000.warc.gz").write_bytes(b"\x1f\x8b\x08\x00 not a whole gzip member")
    (seg_dir / "seg-y-00000.links.parquet").write_bytes(b"junk")
    store = CrawlStore(root, root.root)
    rows, _ = store.load()
    assert rows.height == 0
    assert (pathlib.Path(root.root) / "quarantine" / "seg-y-00000.warc.gz").exists()  # kept for a person to look at
    assert not (seg_dir / "seg-y-00000.links.parquet").exists()  # a link list holds no page
