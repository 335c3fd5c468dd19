"""Pure functions of the crawl: URL normalization, scope, the SSRF address test, Retry-After, link extraction.

Nothing here opens a socket.
"""

from __future__ import annotations

import email.utils

import pytest

from crawl2serve.assets.crawl.crawler import extract_links, parse_retry_after
from crawl2serve.assets.crawl.urls import Scope, host_of, ip_literal, is_public_address, normalize_url, origin_of


# -- normalize_url ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url, expected",
    [
        # case
        ("HTTP://Example.COM/Path", "http://example.com/Path"),  # the path stays case-sensitive
        ("hTTps://EXAMPLE.com", "https://example.com/"),
        # default and explicit ports
        ("http://example.com:80/", "http://example.com/"),
        ("https://example.com:443/x", "https://example.com/x"),
        ("http://example.com:8080/", "http://example.com:8080/"),
        ("https://example.com:80/", "https://example.com:80/"),
        ("http://example.com./a", "http://example.com/a"),  # trailing dot of an FQDN
        # fragments
        ("http://example.com/a#frag", "http://example.com/a"),
        ("http://example.com/a?x=1#frag", "http://example.com/a?x=1"),
        # dot segments and empty segments
        ("http://example.com/a/b/../c/./d", "http://example.com/a/c/d"),
        ("http://example.com/../../a", "http://example.com/a"),
        ("http://example.com/a/b/", "http://example.com/a/b/"),
        ("http://example.com/a/.", "http://example.com/a/"),
        ("http://example.com/a/b/..", "http://example.com/a/"),
        ("http://example.com//a//b", "http://example.com/a/b"),
        ("http://example.com/a/%2E%2E/b", "http://example.com/b"),  # encoded dots are dots
        # percent-encoding
        ("http://example.com/%7euser", "http://example.com/~user"),  # unreserved: decoded
        ("http://example.com/caf%c3%a9", "http://example.com/caf%C3%A9"),  # hex upper-cased
        ("http://example.com/café", "http://example.com/caf%C3%A9"),  # non-ASCII: UTF-8 escaped
        ("http://example.com/a b", "http://example.com/a%20b"),
        ("http://example.com/a%2Fb", "http://example.com/a%2Fb"),  # an escaped slash is not a slash
        ("http://example.com/100%25", "http://example.com/100%25"),  # an escaped % stays escaped
        ("http://example.com/a%2541", "http://example.com/a%2541"),  # ... and is not decoded twice
        ("http://example.com/%ff", "http://example.com/%FF"),  # not UTF-8: kept byte-exact
        ("http://example.com/50%", "http://example.com/50%25"),  # a stray % is escaped
        ("http://example.com/q?x=%FF", "http://example.com/q?x=%FF"),
        # query: sorted, tracking parameters dropped
        ("http://example.com/?b=2&a=1&c=3", "http://example.com/?a=1&b=2&c=3"),
        ("http://example.com/?utm_source=x&id=7&gclid=y&fbclid=z", "http://example.com/?id=7"),
        ("http://example.com/p?utm_campaign=x", "http://example.com/p"),
        ("http://example.com/?q=a+b&r=%2B", "http://example.com/?q=a+b&r=%2B"),
        # credentials are never kept
        ("http://user:secret@example.com/", "http://example.com/"),
        # IPv6 literals
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("http://[2001:DB8::1]/", "http://[2001:db8::1]/"),
        ("http://[::1]:80/", "http://[::1]/"),
        ("https://[::ffff:10.0.0.1]/", "https://[::ffff:a00:1]/"),  # RFC 5952 spelling, as WHATWG serializes
        ("http://[0:0:0:0:0:0:0:1]:8080/", "http://[::1]:8080/"),
    ],
)
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected
    assert normalize_url(expected) == expected  # normal forms are fixed points


@pytest.mark.parametrize(
    "url",
    [
        "mailto:a@example.com",
        "javascript:alert(1)",
        "ftp://example.com/f",
        "data:text/html,<b>x</b>",
        "file:///etc/passwd",
        "tel:+123",
        "",
        "   ",
        "http://",
        "http:///path",
        "http://example.com:99999/",
        "http://[::1/",
        "http://ex ample.com:x/",
    ],
)
def test_normalize_url_refuses_what_is_not_crawlable(url):
    assert normalize_url(url) is None


def test_normalize_url_resolves_against_a_base():
    base = "http://example.com/a/b/c.html"
    assert normalize_url("d.html", base) == "http://example.com/a/b/d.html"
    assert normalize_url("../d.html", base) == "http://example.com/a/d.html"
    assert normalize_url("/x", base) == "http://example.com/x"
    assert normalize_url("//other.org/y", base) == "http://other.org/y"
    assert normalize_url("?q=1", base) == "http://example.com/a/b/c.html?q=1"
    assert normalize_url("#top", base) == "http://example.com/a/b/c.html"
    assert normalize_url("HTTPS://Other.ORG:443", base) == "https://other.org/"
    assert normalize_url("mailto:a@b", base) is None
    assert normalize_url("http://[::1", base) is None  # a broken IPv6 literal is refused, not raised


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a%2541/%25/%2F/%7E/%7e/%zz/%/é/a b/../.%2e/c?z=%FF&y=%2B&x=a+b#f",
        "http://EXAMPLE.com:80/%2e/%2E%2E/x/./y/../",
        "http://example.com/~%41%42/%C3%A9%c3%a9",
    ],
)
def test_normalize_url_is_idempotent(url):
    once = normalize_url(url)
    assert once is not None
    assert normalize_url(once) == once


def test_host_and_origin():
    assert host_of("http://Example.com:8080/x") == "example.com"
    assert host_of("http://[::1]:8080/x") == "::1"
    assert origin_of("http://example.com:8080/x?y") == "http://example.com:8080"
    assert ip_literal("[::1]") == "::1" and ip_literal("10.0.0.1") == "10.0.0.1"
    assert ip_literal("example.com") is None and ip_literal("2130706433") == "127.0.0.1"


# -- Scope ------------------------------------------------------------------------------------------
def test_scope_why_out():
    scope = Scope.build(
        ["Example.com", "docs.example.com"], include=[r"/docs/", r"/blog/"], exclude=[r"\.pdf$", r"/private/"]
    )
    assert scope.why_out("http://example.com/docs/a.html") is None
    assert scope.why_out("http://docs.example.com/blog/x") is None
    assert scope.why_out("http://evil.com/docs/a.html") == "host_not_allowed"
    assert scope.why_out("http://sub.example.com/docs/") == "host_not_allowed"  # no implicit subdomains
    assert scope.why_out("http://example.com/about") == "no_include_pattern"
    assert scope.why_out("http://example.com/docs/a.pdf") == "excluded_pattern"
    assert scope.why_out("http://example.com/docs/private/x") == "excluded_pattern"

    anywhere = Scope.build([])
    assert anywhere.why_out("http://anything.org/") is None
    only_excludes = Scope.build(["example.com"], exclude=[r"\?"])
    assert only_excludes.why_out("http://example.com/?q=1") == "excluded_pattern"
    assert only_excludes.why_out("http://example.com/") is None


# -- the SSRF address test ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "127.0.0.1",
        "127.8.9.10",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd12:3456::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "ff02::1",
    ],
)
def test_internal_addresses_are_not_public(address):
    assert is_public_address(address) is False


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "172.32.0.1", "93.184.216.34", "2001:4860:4860::8888", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_public(address):
    assert is_public_address(address) is True


# -- Retry-After --------------------------------------------------------------------------------------
def test_parse_retry_after_seconds():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 5 ") == 5.0
    assert parse_retry_after("0") == 0.0


def test_parse_retry_after_http_date():
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == pytest.approx(30.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0  # in the past: no wait
    assert parse_retry_after("Wed, 21 Oct 2015 09:28:00 +0200", now=now) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-1",
        "1.5",
        "1e3",
        "0x10",
        "²",
        "１２",
        "NaN",
        "Mon, 32 Jan 2024 00:00:00 GMT",
        "Wed, 21 Oct 99999 07:28:00 GMT",
    ],
)
def test_parse_retry_after_garbage_is_none(value):
    assert parse_retry_after(value) is None


# -- extract_links ------------------------------------------------------------------------------------
BASE = "http://example.com/dir/page.html"


def test_extract_links_resolves_and_normalizes():
    body = b"""<html><head><title>t</title></head><body>
      <a href="a.html">a</a> <a href="/b?utm_source=x">b</a> <a href="../c/#frag">c</a>
      <a href="https://Other.org:443/d">d</a> <a href="mailto:x@y">m</a> <a href="javascript:void(0)">j</a>
      <a>no href</a> <a href="">empty</a></body></html>"""
    assert extract_links(body, BASE, "text/html; charset=utf-8") == [
        "http://example.com/dir/a.html",
        "http://example.com/b",
        "http://example.com/c/",
        "https://other.org/d",
    ]  # an empty href is the page itself: dropped


def test_extract_links_honours_base_href():
    body = (
        b'<html><head><base href="http://cdn.example.com/root/"></head><body><a href="x.html">x</a>'
        b'<a href="/abs">y</a></body></html>'
    )
    assert extract_links(body, BASE, "text/html") == [
        "http://cdn.example.com/root/x.html",
        "http://cdn.example.com/abs",
    ]
    relative_base = b'<html><head><base href="../other/"></head><body><a href="x.html">x</a></body></html>'
    assert extract_links(relative_base, BASE, "text/html") == ["http://example.com/other/x.html"]


def test_extract_links_honours_rel_nofollow():
    body = (
        b'<html><body><a href="/keep">k</a><a rel="nofollow" href="/skip1">s</a>'
        b'<a rel="external NoFollow" href="/skip2">s</a><a rel="noopener" href="/keep2">k</a></body></html>'
    )
    assert extract_links(body, BASE, "text/html") == ["http://example.com/keep", "http://example.com/keep2"]


@pytest.mark.parametrize(
    "meta",
    [
        b'<meta name="robots" content="nofollow">',
        b'<meta name="ROBOTS" content="noindex, NoFollow">',
        b'<meta name=robots content="none,nofollow">',
    ],
)
def test_extract_links_honours_meta_robots_nofollow(meta):
    body = b"<html><head>" + meta + b'</head><body><a href="/x">x</a></body></html>'
    assert extract_links(body, BASE, "text/html") == []


def test_meta_robots_noindex_alone_still_follows():
    body = b'<html><head><meta name="robots" content="noindex"></head><body><a href="/x">x</a></body></html>'
    assert extract_links(body, BASE, "text/html") == ["http://example.com/x"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\xff\xfe\x00garbage",
        b"<html><body><a href='/a'>x<div><a href=/b>y<table><a href=\"/c",
        b"<<<<>>>><a href=/d>",
        b"<a href='http://[::1'>bad v6</a><a href='/after'>ok</a>",
        b"<a href='http://example.com:99999/'>bad port</a>" * 3,
        "<a href='/\u00e9'>\u00e9</a>".encode("utf-16"),
        b"<html><head><base href='http://[::1'></head><body><a href='/z'>z</a></body></html>",
        b"<frameset><frame src='/f'></frameset>",
        b"\xef\xbb\xbf<a href=/bom>x</a>" + b"\x80" * 100,
    ],
)
def test_extract_links_survives_broken_html(body):
    links = extract_links(body, BASE, "text/html; charset=utf-8")
    assert isinstance(links, list) and all(u.startswith("http") for u in links)


def test_extract_links_keeps_good_links_next_to_bad_ones():
    body = b"<a href='http://[::1'>bad v6</a><a href='/after'>ok</a><a href='http://h:99999/'>port</a><a href=/z>z</a>"
    assert extract_links(body, BASE, "text/html") == ["http://example.com/after", "http://example.com/z"]
    broken = b"<html><body><a href='/a'>x<div><a href=/b>y<table><tr><td><a href='/c'>"
    # the HTML5 parser may re-open the unclosed <a> (adoption agency), so compare the set
    assert set(extract_links(broken, BASE, None)) == {
        "http://example.com/a",
        "http://example.com/b",
        "http://example.com/c",
    }


def test_extract_links_with_unknown_or_wrong_charset():
    body = b"<html><body><p>caf\xe9</p><a href='/caf\xe9'>x</a><a href='/plain'>y</a></body></html>"
    for ctype in ("text/html; charset=utf-8", "text/html; charset=x-no-such-charset", "text/html", None):
        links = extract_links(body, BASE, ctype)
        assert "http://example.com/plain" in links, ctype


# -- IPv4 in every spelling inet_aton and browsers accept (WHATWG host parsing) ------------------------------
@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "0x7f.1",
        "017700000001",
        "0177.0.0.1",
        "127.1",
        "0x7f000001",
        "0x7F.0.0.1",
        "127.0.0.1.",
        "0177.0x0.0.01",
    ],
)
def test_every_spelling_of_loopback_is_127_0_0_1(host):
    assert normalize_url(f"http://{host}:8080/x") == "http://127.0.0.1:8080/x"
    assert ip_literal(host.rstrip(".")) == "127.0.0.1"


@pytest.mark.parametrize(
    "url",
    [
        "http://1.2.3.4.5/",
        "http://256.1.1.1/",
        "http://1.2.3.0x100/",
        "http://08/",
        "http://4294967296/",
        "http://example.123/",
    ],
)
def test_a_host_that_ends_in_a_number_but_is_no_ipv4_address_is_refused(url):
    assert normalize_url(url) is None


def test_names_that_only_look_numeric_stay_names():
    assert normalize_url("http://0x1g.example/") == "http://0x1g.example/"
    assert normalize_url("http://1.2.3.example/") == "http://1.2.3.example/"
    assert ip_literal("ab.0x1g") is None


@pytest.mark.parametrize(
    "address",
    [
        "::127.0.0.1",
        "::10.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a00:1",
        "64:ff9b:1::808:808",
        "2002:7f00:1::",
        "2002:a00:1::1",
        "::ffff:0:7f00:1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
        "fec0::1",
    ],
)
def test_ipv6_that_embeds_an_internal_ipv4_address_is_internal(address):
    assert is_public_address(address) is False


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "::8.8.8.8"])
def test_ipv6_that_embeds_a_public_ipv4_address_is_public(address):
    assert is_public_address(address) is True


def test_origin_key_spells_out_scheme_host_and_port():
    from crawl2serve.assets.crawl.urls import origin_key

    assert origin_key("http://example.com/a") == "http://example.com:80"
    assert origin_key("https://example.com/a") == "https://example.com:443"
    assert origin_key("http://127.0.0.1:18801/x") != origin_key("http://127.0.0.1:18808/x")
    assert origin_key("http://[::1]:8080/") == "http://[::1]:8080"
