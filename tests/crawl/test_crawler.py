"""The crawler against a fault-injecting loopback server: every failure mode ends as a recorded outcome.

Each test checks real outcomes: manifest rows (error, status, attempts, warc_file), the WARC records
the crawler wrote, and the server's own request log. No traffic ever leaves 127.0.0.1.
"""

from __future__ import annotations

import time

import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType

from crawl2serve.assets.crawl.urls import normalize_url
from crawl2serve.assets.crawl.warc import iter_records

pytestmark = pytest.mark.timeout(60)


def html(*links: str, text: str = "hello") -> str:
    return (
        "<html><head><title>t</title></head><body><p>"
        + text
        + "</p>"
        + "".join(f'<a href="{u}">{u}</a>' for u in links)
        + "</body></html>"
    )


def stored_records(result) -> dict[str, list]:
    """URL -> [ReadRecord] of every response record in every committed WARC segment."""
    out: dict[str, list] = {}
    for path in result.store.storage.glob(f"{result.store.directory}/segments/*.warc.gz"):
        with open(path, "rb") as f:
            for rec in iter_records(f):
                out.setdefault(rec.url, []).append(rec)
    return out


def record_at(path: str, offset: int):
    """(record type, target URI, record id, body) of the single record that starts at ``offset``."""
    with open(path, "rb") as f:
        f.seek(offset)
        rec = next(iter(ArchiveIterator(f, parse_http=True)))
        return rec.record_type, rec.headers.get("WARC-Target-URI"), rec.headers.get("WARC-Record-ID"), rec.reader.read()


def assert_not_stored(result, url: str) -> None:
    row = result.row(url)
    assert row["warc_file"] is None and row["warc_offset"] is None and row["record_id"] is None, row
    assert url not in stored_records(result)


def wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


# -- 1. timeouts ------------------------------------------------------------------------------------
def test_timeouts_are_retried_then_recorded(server, crawl):
    never = server.route("/never", server.stall())
    headers = server.route("/stall-headers", server.stall_headers())
    t0 = time.monotonic()
    r = crawl([never, headers], read_timeout_s=0.3, total_timeout_s=1.0, max_retries=2)
    assert time.monotonic() - t0 < 15
    for url, path in ((never, "/never"), (headers, "/stall-headers")):
        row = r.row(url)
        assert row["error"] == "timeout", row
        assert row["attempts"] == 3
        assert len(server.requests(path)) == 3  # max_retries + 1 attempts reached the server
        assert_not_stored(r, url)
    assert r.summary.errors["timeout"] == 2


# -- 2. slow body -----------------------------------------------------------------------------------
def test_slow_drip_body_hits_total_timeout_and_stores_nothing(server, crawl):
    # every byte arrives well within read_timeout_s, but the whole body would take ~100 s
    slow = server.route("/drip", server.drip(interval=0.1, chunks=1000))
    ok = server.route("/ok", server.page(html()))
    t0 = time.monotonic()
    r = crawl([slow, ok], read_timeout_s=0.5, total_timeout_s=0.8, max_retries=1)
    assert time.monotonic() - t0 < 10
    row = r.row(slow)
    assert row["error"] == "timeout" and row["attempts"] == 2, row
    assert len(server.requests("/drip")) == 2
    assert_not_stored(r, slow)
    assert r.row(ok)["warc_file"] is not None


# -- 3. connection resets ---------------------------------------------------------------------------
def test_connection_reset_mid_response_is_retried_and_recorded(server, crawl):
    mid_headers = server.route("/reset-headers", server.reset_mid_headers(rst=True))
    mid_headers_fin = server.route("/closed-in-headers", server.reset_mid_headers(rst=False))
    mid_body_fin = server.route("/reset-body", server.reset_mid_body(rst=False))
    mid_body_rst = server.route("/reset-body-rst", server.reset_mid_body(rst=True))
    flaky = server.route(
        "/flaky",
        server.sequence(server.reset_mid_body(rst=True), server.reset_mid_headers(), server.page(html(text="finally"))),
    )
    r = crawl([mid_headers, mid_headers_fin, mid_body_fin, mid_body_rst, flaky], max_retries=2)
    for url, path in (
        (mid_headers, "/reset-headers"),
        (mid_headers_fin, "/closed-in-headers"),
        (mid_body_fin, "/reset-body"),
        (mid_body_rst, "/reset-body-rst"),
    ):
        row = r.row(url)
        assert row["error"] is not None and row["error"].startswith("connection_reset"), row
        assert row["attempts"] == 3
        assert len(server.requests(path)) == 3
        assert_not_stored(r, url)
    row = r.row(flaky)
    assert row["error"] is None and row["status"] == 200 and row["attempts"] == 3, row
    assert len(server.requests("/flaky")) == 3
    (rec,) = stored_records(r)[flaky]
    assert b"finally" in rec.body


# -- 4. 5xx -----------------------------------------------------------------------------------------
def test_5xx_then_success_and_permanent_500(server, crawl):
    unavailable = server.page("busy", status=503, content_type="text/plain")
    flaky = server.route("/flaky", server.sequence(unavailable, unavailable, server.page(html(text="ok now"))))
    broken = server.route("/broken", server.page("boom", status=500, content_type="text/plain"))
    r = crawl([flaky, broken], max_retries=3)
    row = r.row(flaky)
    assert row["status"] == 200 and row["error"] is None and row["attempts"] == 3, row
    assert row["warc_file"] is not None
    assert len(server.requests("/flaky")) == 3
    row = r.row(broken)
    assert row["error"] == "http_500" and row["status"] == 500 and row["attempts"] == 4, row
    assert len(server.requests("/broken")) == 4
    assert_not_stored(r, broken)


# -- 5. 429 / Retry-After ----------------------------------------------------------------------------
def test_429_retry_after_is_honoured(server, crawl):
    too_many = server.page("slow down", status=429, content_type="text/plain", headers=[("Retry-After", "1")])
    limited = server.route("/limited", server.sequence(too_many, server.page(html(text="welcome"))))
    r = crawl([limited], max_retries=2)
    row = r.row(limited)
    assert row["status"] == 200 and row["error"] is None and row["attempts"] == 2, row
    first, second = server.requests("/limited")
    assert second.t - first.t >= 0.95, second.t - first.t


def test_retry_after_beyond_the_cap_gives_up(server, crawl):
    hog = server.route(
        "/hog", server.page("go away", status=429, content_type="text/plain", headers=[("Retry-After", "3600")])
    )
    t0 = time.monotonic()
    r = crawl([hog], max_retries=3, max_retry_after_s=5.0)
    assert time.monotonic() - t0 < 10
    row = r.row(hog)
    assert row["error"].startswith("retry_after_too_long"), row
    assert row["status"] == 429 and row["attempts"] == 1
    assert len(server.requests("/hog")) == 1
    assert_not_stored(r, hog)


# -- 6. redirects -----------------------------------------------------------------------------------
def test_redirect_loop_and_long_chain(server, crawl):
    a = server.route("/a", server.redirect("/b"))
    b = server.route("/b", server.redirect(server.url("/a"), status=301))
    me = server.route("/self", server.redirect("/self", status=307))
    for i in range(10):
        server.route(f"/r{i}", server.redirect(f"/r{i + 1}"))
    chain = server.url("/r0")
    t0 = time.monotonic()
    r = crawl([a, me, chain], max_redirects=3)
    assert time.monotonic() - t0 < 10
    assert r.row(a)["redirect_to"] == b and r.row(a)["status"] == 302
    assert r.row(b)["error"] in ("redirect_to_seen", "redirect_loop") and r.row(b)["redirect_to"] == a
    assert r.row(me)["error"] == "redirect_loop"
    assert server.paths().count("/a") == 1 and server.paths().count("/b") == 1 and server.paths().count("/self") == 1
    # /r0 -> /r1 -> /r2 -> /r3 are three hops; the fourth is refused and /r4 never requested
    for i in range(3):
        assert r.row(server.url(f"/r{i}"))["redirect_to"] == server.url(f"/r{i + 1}")
    assert r.row(server.url("/r3"))["error"] == "too_many_redirects"
    assert "/r4" not in server.paths() and server.url("/r4") not in r.rows
    for i in range(4):
        assert server.paths().count(f"/r{i}") == 1


# -- 7. robots.txt ----------------------------------------------------------------------------------
def test_robots_disallow_is_never_requested(server, crawl):
    server.route("/robots.txt", server.page("User-agent: *\nDisallow: /private\n", content_type="text/plain"))
    secret = server.url("/private/secret")
    public = server.url("/public")
    server.route("/private/secret", server.page(html(text="secret")))
    server.route("/public", server.page(html(text="public")))
    index = server.route("/", server.page(html(secret, public)))
    r = crawl([index])
    assert r.row(secret)["error"] == "robots_disallowed"
    assert r.row(secret)["attempts"] == 0
    assert_not_stored(r, secret)
    assert "/private/secret" not in server.paths()
    assert r.row(public)["warc_file"] is not None
    assert server.paths().count("/robots.txt") == 1  # fetched once per host


def test_robots_crawl_delay_is_respected(server, crawl):
    server.route("/robots.txt", server.page("User-agent: *\nCrawl-delay: 1\n", content_type="text/plain"))
    urls = [server.route(f"/d{i}", server.page(html())) for i in range(2)]
    r = crawl(urls)
    assert all(r.row(u)["warc_file"] is not None for u in urls)
    t = sorted(x.t for x in server.log if x.path.startswith("/d"))
    assert t[1] - t[0] >= 0.95, t


def test_robots_server_error_means_everything_disallowed(server, crawl):
    server.route("/robots.txt", server.page("down", status=503, content_type="text/plain"))
    url = server.route("/page", server.page(html()))
    r = crawl([url], robots_max_waits=2)
    assert r.row(url)["error"] == "robots_unreachable:http_503"
    assert "/page" not in server.paths()
    assert server.paths().count("/robots.txt") == 3  # fetched again each time the page came back


# -- 8. content types -------------------------------------------------------------------------------
def test_non_html_is_refused_and_not_stored(server, crawl):
    pdf = server.route("/doc.pdf", server.page(b"%PDF-1.7\n" + b"\x00" * 5000, content_type="application/pdf"))
    png = server.route("/img.png", server.page(b"\x89PNG\r\n\x1a\n" + b"\x01" * 5000, content_type="image/png"))
    xhtml = server.route("/x", server.page(html(), content_type="application/xhtml+xml; charset=utf-8"))
    index = server.route("/", server.page(html(pdf, png, xhtml)))
    r = crawl([index])
    assert r.row(pdf)["error"] == "content_type_not_allowed:application/pdf"
    assert r.row(png)["error"] == "content_type_not_allowed:image/png"
    for u in (pdf, png):
        assert r.row(u)["status"] == 200 and r.row(u)["attempts"] == 1
        assert_not_stored(r, u)
    assert r.row(xhtml)["warc_file"] is not None


# -- 9. body size cap -------------------------------------------------------------------------------
def test_oversized_bodies_are_cut_off(server, crawl):
    total = 64 * 1024 * 1024  # far more than socket buffers can hold: the server cannot finish
    declared = server.route("/big-declared", server.big_body("declared", total, declare_length=True))
    chunked = server.route("/big-chunked", server.big_body("chunked", total, declare_length=False))
    small = server.route("/small", server.page(html(text="x" * 1000)))
    r = crawl([declared, chunked, small], max_body_bytes=100_000, total_timeout_s=10.0, read_timeout_s=5.0)
    assert r.row(declared)["error"] == f"body_too_large:{total}"
    assert r.row(chunked)["error"] == "body_too_large:>100000"
    for url, key in ((declared, "declared"), (chunked, "chunked")):
        assert r.row(url)["attempts"] == 1  # a size violation is final, not retried
        assert_not_stored(r, url)
        (st,) = server.stats[key]
        assert wait_for(lambda st=st: st.aborted or st.finished), st
        assert st.aborted and not st.finished and st.sent < total, st  # the crawler hung up
    assert r.row(small)["warc_file"] is not None


def test_decompressed_size_is_capped(server, crawl):
    bomb = server.route("/bomb", server.gzipped(b"<html><body>" + b"a" * 2_000_000 + b"</body></html>"))
    r = crawl([bomb], max_body_bytes=100_000)
    assert r.row(bomb)["error"] == "body_too_large:>100000"
    assert_not_stored(r, bomb)


# -- 10. encodings ----------------------------------------------------------------------------------
ENCODED_PAGES = {
    # latin-1 bytes under a utf-8 charset header
    "/latin1": (
        b"<html><body><p>caf\xe9 na\xefve \xfcber</p><a href='/after-latin1'>x</a></body></html>",
        "text/html; charset=utf-8",
    ),
    # cp1252 smart quotes and euro sign, no charset at all
    "/cp1252": (
        b"<html><body><p>\x93quoted\x94 \x80 5 \x96 dash</p><a href='/after-cp1252'>x</a></body></html>",
        "text/html",
    ),
    # invalid UTF-8 everywhere: lone continuation, surrogate encoding, 5-byte form, NULs
    "/invalid": (
        b"\xff\xfe\x00\x00<html><body>\xc3\x28 \xed\xa0\x80 \xf8\x88\x80\x80\x80 \x00"
        b"<a href='/after-invalid'>x</a></body></html>",
        "text/html; charset=utf-8",
    ),
    # a charset nobody knows
    "/bogus": (
        b"<html><body><p>\xe9t\xe9</p><a href='/after-bogus'>x</a></body></html>",
        "text/html; charset=x-no-such-charset",
    ),
    # UTF-16 with BOM
    "/utf16": (
        "<html><body><p>\u00e9t\u00e9 \u4e2d\u6587</p></body></html>".encode("utf-16"),
        "text/html; charset=utf-16",
    ),
}


def test_bad_and_mixed_encodings_are_stored_byte_exact(server, crawl):
    urls = {}
    for path, (body, ctype) in ENCODED_PAGES.items():
        urls[path] = server.route(path, server.page(body, content_type=ctype))
        server.route(f"/after{path.replace('/', '-')}", server.page(html(text="after")))
    gz_body = "<html><body>gzip \u00e9</body></html>".encode()
    urls["/gz"] = server.route("/gz", server.gzipped(gz_body))
    r = crawl(list(urls.values()))
    records = stored_records(r)
    expected = {path: body for path, (body, _) in ENCODED_PAGES.items()} | {"/gz": gz_body}
    for path, url in urls.items():
        row = r.row(url)
        assert row["error"] is None and row["warc_file"] is not None, row
        assert row["bytes"] == len(expected[path])
        (rec,) = records[url]
        assert rec.body == expected[path], path
        kind, uri, rid, body = record_at(row["warc_file"], row["warc_offset"])
        assert (uri, rid, body) == (url, row["record_id"], expected[path])
    # links were still extracted from the badly encoded pages
    for path in ("/latin1", "/cp1252", "/invalid", "/bogus"):
        assert r.row(server.url(f"/after{path.replace('/', '-')}"))["warc_file"] is not None, path
    # the transfer encodings no longer describe the stored (decoded) body, so they are renamed
    gz = records[urls["/gz"]][0]
    assert gz.headers.get("x-crawler-content-encoding") == "gzip"
    assert "content-encoding" not in gz.headers
    assert gz.headers["content-length"] == str(len(gz_body))


def test_hostile_links_do_not_lose_the_page(server, crawl):
    ok = server.url("/ok")
    server.route("/ok", server.page(html()))
    body = (
        '<html><body><a href="http://[::1">broken v6</a><a href="http://h:99999/">bad port</a>'
        '<a href="javascript:alert(1)">js</a><a href="mailto:a@b">m</a>'
        f'<a href="{ok}">ok</a></body></html>'
    )
    index = server.route("/", server.page(body))
    r = crawl([index])
    row = r.row(index)
    assert row["error"] is None and row["warc_file"] is not None, row
    assert r.row(ok)["warc_file"] is not None
    assert set(r.rows) == {index, ok}


# -- 11. SSRF guard ---------------------------------------------------------------------------------
def test_private_addresses_are_blocked_before_connecting(server, crawl):
    port = server.port
    targets = {
        "http://10.0.0.1/": None,
        "http://169.254.169.254/latest/meta-data": None,
        f"http://[::1]:{port}/v6": "/v6",
        f"http://localhost:{port}/via-localhost": "/via-localhost",
        f"http://[::ffff:127.0.0.1]:{port}/mapped": "/mapped",
    }
    for path in ("/v6", "/via-localhost", "/mapped"):
        server.route(path, server.page(html(text="internal")))
    # a redirect hop is checked like a link
    hop = server.route("/to-metadata", server.redirect("http://169.254.169.254/latest/user-data"))
    index = server.route("/", server.page(html(hop, *targets)))
    targets["http://169.254.169.254/latest/user-data"] = None  # reached only through the redirect
    hosts = ("127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "localhost", "::ffff:127.0.0.1")
    t0 = time.monotonic()
    # a real connect attempt would end in timeout/connect_error within 50 ms; blocked_address means the
    # guard refused before any packet was sent
    r = crawl([index], allowed_hosts=hosts, private_hosts=("127.0.0.1",), connect_timeout_s=0.05, max_retries=0)
    assert time.monotonic() - t0 < 10
    for url, path in targets.items():
        row = r.row(normalize_url(url))  # [::ffff:127.0.0.1] is spelled [::ffff:7f00:1] (RFC 5952)
        assert row["error"] == "blocked_address", row
        assert row["status"] is None and row["warc_file"] is None
        if path:
            assert path not in server.paths()
    # only the private-listed 127.0.0.1 ever reached the server (robots.txt and the index)
    assert {x.headers.get("host") for x in server.log} == {f"127.0.0.1:{port}"}
    assert sorted(server.paths()) == ["/", "/robots.txt", "/to-metadata"]
    assert r.row(hop)["redirect_to"] == "http://169.254.169.254/latest/user-data"


def test_private_host_is_fetched_when_allow_listed(server, crawl):
    port = server.port
    server.route("/via-localhost", server.page(html(text="internal")))
    target = f"http://localhost:{port}/via-localhost"
    index = server.route("/", server.page(html(target)))
    r = crawl([index], allowed_hosts=("127.0.0.1", "localhost"), private_hosts=("127.0.0.1", "localhost"))
    assert r.row(target)["warc_file"] is not None and r.row(target)["error"] is None
    assert [x.headers.get("host") for x in server.requests("/via-localhost")] == [f"localhost:{port}"]


def test_robots_redirect_cannot_reach_a_private_address(server, crawl):
    # the site (private-listed "localhost") redirects its robots.txt to a loopback IP literal that is
    # NOT private-listed: the guard must refuse that hop too
    port = server.port
    server.route("/robots.txt", server.redirect(f"http://127.0.0.1:{port}/internal-robots.txt"))
    server.route("/internal-robots.txt", server.page("User-agent: *\nDisallow:\n", content_type="text/plain"))
    seed = f"http://localhost:{port}/"
    server.route("/", server.page(html()))
    r = crawl([seed], private_hosts=("localhost",), connect_timeout_s=0.05)
    assert "/internal-robots.txt" not in server.paths()
    assert seed in r.rows  # the crawl went on and recorded the page


# -- 12. WARC validity ------------------------------------------------------------------------------
def test_warc_records_are_valid_linked_and_addressable(server, crawl):
    bodies = {
        "/": html("/p1", "/p2", "/p3", "/gz").encode(),
        "/p1": html(text="one").encode(),
        "/p2": b"<html><body>\x00\x01\x02\xff binary-ish \r\n\r\n HTTP/1.1 200 OK\r\n</body></html>",
        "/p3": b"",
    }
    for path, body in bodies.items():
        server.route(path, server.page(body))
    gz_body = html(text="compressed " * 100).encode()
    server.route("/gz", server.gzipped(gz_body))
    bodies["/gz"] = gz_body
    r = crawl([server.url("/")], segment_max_records=2)  # several segments
    expected = {server.url(p): b for p, b in bodies.items()}
    stored = {u: row for u, row in r.rows.items() if row["warc_file"] is not None}
    assert set(stored) == set(expected)
    warcs = r.store.storage.glob(f"{r.store.directory}/segments/*.warc.gz")
    assert len(warcs) >= 2

    responses, requests = {}, {}
    for path in warcs:
        with open(path, "rb") as f:
            recs = list(ArchiveIterator(f, parse_http=False))
        with open(path, "rb") as f:
            verified = list(ArchiveIterator(f, parse_http=False, verify_digests=True))
        assert len(verified) == len(recs)  # every block digest checks out
        assert recs[0].record_type == WarcRecordType.warcinfo
        for rec in recs[1:]:
            rid = rec.headers.get("WARC-Record-ID")
            uri = rec.headers.get("WARC-Target-URI")
            if rec.record_type == WarcRecordType.response:
                responses[rid] = (path, uri)
            else:
                assert rec.record_type == WarcRecordType.request
                requests[uri] = rec.headers.get("WARC-Concurrent-To")
    for url, row in stored.items():
        assert responses[row["record_id"]] == (row["warc_file"], url)
        assert requests[url] == row["record_id"]  # the request record points at its response
        kind, uri, rid, body = record_at(row["warc_file"], row["warc_offset"])
        assert kind == WarcRecordType.response and uri == url and rid == row["record_id"]
        assert body == expected[url] and row["bytes"] == len(body)
    # iter_records round-trips every body exactly, once per page
    records = stored_records(r)
    assert {u: [x.body for x in recs] for u, recs in records.items()} == {u: [b] for u, b in expected.items()}
    assert all(rec.status == 200 for recs in records.values() for rec in recs)
