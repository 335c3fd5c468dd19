"""robots.txt per RFC 9309, clause by clause, against loopback servers.

Every test checks what the server saw (which paths were requested, how often, when) next to the
manifest rows: a page the rules disallow is never requested at all.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(60)


def html(*links: str, text: str = "hello") -> str:
    return "<html><body><p>" + text + "</p>" + "".join(f'<a href="{u}">{u}</a>' for u in links) + "</body></html>"


def robots(text: str, **kw):
    return dict(body=text, content_type="text/plain", **kw)


def site(server, robots_txt: str | None, paths: list[str]) -> str:
    """Serve ``paths`` as HTML pages and an index linking them all; return the index URL."""
    if robots_txt is not None:
        server.route("/robots.txt", server.page(**robots(robots_txt)))
    for p in paths:
        server.route(p, server.page(html(text=p)))
    return server.route("/", server.page(html(*[server.url(p) for p in paths])))


def fetched(server) -> set[str]:
    return {p for p in server.paths() if p != "/robots.txt"}


# -- 2.2.2 / 2.2.3: longest match, allow wins a tie, * and $ ------------------------------------------
RULES = """\
User-agent: *
Disallow: /*.pdf$
Disallow: /private*/
Disallow: /docs/
Allow: /docs/public/
Allow: /tie
Disallow: /tie
Disallow: /docs/public/secret
"""
EXPECT = {
    "/a.pdf": False,  # '$' anchors the end
    "/a.pdf?download=1": True,  # ... so a query after it no longer matches
    "/a.pdfx": True,
    "/private1/x": False,  # '*' matches any run of characters
    "/private/x": False,
    "/privateer": True,
    "/docs/x": False,
    "/docs/public/x": True,  # the longest match wins: Allow /docs/public/ over Disallow /docs/
    "/docs/public/secret/y": False,  # ... and Disallow /docs/public/secret over both
    "/tie": True,  # an Allow and a Disallow of the same length: Allow
}


def test_wildcards_longest_match_and_allow_precedence(server, crawl):
    index = site(server, RULES, list(EXPECT))
    r = crawl([index])
    assert fetched(server) == {"/", *(p for p, ok in EXPECT.items() if ok)}
    for path, ok in EXPECT.items():
        row = r.row(server.url(path))
        assert (
            (row["error"] is None and row["warc_file"] is not None)
            if ok
            else (row["error"] == "robots_disallowed" and row["attempts"] == 0)
        ), (path, row)


# -- 2.2.1: the group of our product token (case-insensitive, groups merged), else * ----------------------
def test_our_group_is_chosen_and_merged(server, crawl):
    text = """\
User-agent: *
Disallow: /

User-agent: Crawl2Serve
Disallow: /theirs-not

User-agent: othercrawler
Disallow: /page

user-agent: CRAWL2SERVE
Disallow: /merged
"""
    index = site(server, text, ["/page", "/merged", "/theirs-not"])
    r = crawl([index])
    assert fetched(server) == {"/", "/page"}  # the * group's 'Disallow: /' is not ours
    assert r.row(server.url("/merged"))["error"] == "robots_disallowed"  # the second group of ours counts too
    assert r.row(server.url("/theirs-not"))["error"] == "robots_disallowed"


# -- 2.5: the whole file, up to at least 500 KiB --------------------------------------------------------
def test_a_rule_past_the_first_read_is_honoured(server, crawl):
    # 300 KB of rules sent in 16 KiB writes with pauses: the client's first read returns one of them
    filler = "".join(f"Disallow: /nothing-{i:06d}\n" for i in range(12_000))
    text = "User-agent: *\n" + filler + "Disallow: /private\n"
    assert len(text) > 250_000
    server.route("/robots.txt", server.trickle(text.encode(), chunk=16384, pause=0.005))
    index = site(server, None, ["/private/secret", "/public"])
    r = crawl([index])
    assert "/private/secret" not in server.paths()
    assert r.row(server.url("/private/secret"))["error"] == "robots_disallowed"
    assert r.row(server.url("/public"))["warc_file"] is not None
    assert server.paths().count("/robots.txt") == 1


def test_the_cap_drops_the_line_it_cuts(server, crawl):
    # The 512,000-byte cap falls right after 'Disallow: /' of 'Disallow: /zz-cut-here': read as a whole line
    # that would disallow the entire site. Rules past the cap are not read (RFC 9309 2.5 allows that).
    head = "User-agent: *\nDisallow: /early\n"
    cut_line = "Disallow: /zz-cut-here\n"
    pad = 512_000 - len(head) - len("Disallow: /")
    filler = "".join(f"# {'x' * 97}\n" for _ in range(pad // 100)) + "#" * (pad % 100 - 1) + "\n"
    text = head + filler + cut_line + "Disallow: /after-cap\n"
    assert text.encode()[:512_000].endswith(b"Disallow: /")
    server.route("/robots.txt", server.trickle(text.encode(), chunk=65536, pause=0.002))
    index = site(server, None, ["/early", "/public", "/after-cap"])
    r = crawl([index])
    assert fetched(server) == {"/", "/public", "/after-cap"}
    assert r.row(server.url("/early"))["error"] == "robots_disallowed"


# -- 2.3: rules per origin (scheme, host, port), and politeness too ----------------------------------------
def test_rules_are_per_origin_not_per_host(server, server2, crawl):
    closed = site(server, "User-agent: *\nDisallow: /\n", ["/page"])
    open_ = site(server2, "User-agent: *\nDisallow:\n", ["/page"])
    r = crawl([closed, open_])  # both on 127.0.0.1, different ports
    assert fetched(server) == set() and fetched(server2) == {"/", "/page"}
    assert r.row(closed)["error"] == "robots_disallowed"
    assert r.row(server2.url("/page"))["warc_file"] is not None
    assert server.paths().count("/robots.txt") == 1 and server2.paths().count("/robots.txt") == 1


def test_crawl_delay_is_per_origin(server, server2, crawl):
    server.route("/robots.txt", server.page(**robots("User-agent: *\nCrawl-delay: 1\n")))
    server2.route("/robots.txt", server2.page(**robots("User-agent: *\nDisallow:\n")))
    slow = [server.route(f"/s{i}", server.page(html())) for i in range(2)]
    fast = [server2.route(f"/f{i}", server2.page(html())) for i in range(3)]
    r = crawl(slow + fast)
    assert all(r.row(u)["warc_file"] is not None for u in slow + fast)
    ts = sorted(x.t for x in server.log if x.path.startswith("/s"))
    tf = sorted(x.t for x in server2.log if x.path.startswith("/f"))
    assert ts[1] - ts[0] >= 0.95, ts  # the slow origin's Crawl-delay holds
    assert tf[-1] - tf[0] < 0.5, tf  # ... and does not slow down the other port of the same host


# -- 2.3.1.3: 4xx, everything allowed -----------------------------------------------------------------------
@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_robots_4xx_allows_everything(server, crawl, status):
    server.route("/robots.txt", server.page("nope", status=status, content_type="text/plain"))
    index = site(server, None, ["/page"])
    r = crawl([index])
    assert r.row(server.url("/page"))["warc_file"] is not None


# -- 2.3.1.4: 5xx, 429, network errors: everything disallowed, fetched again later ---------------------------
def test_robots_5xx_disallows_until_it_comes_back(server, crawl):
    server.route(
        "/robots.txt",
        server.sequence(
            server.page("down", status=503, content_type="text/plain"),
            server.page(**robots("User-agent: *\nDisallow: /no\n")),
        ),
    )
    index = site(server, None, ["/page", "/no"])
    r = crawl([index])
    robots_at = [x.t for x in server.requests("/robots.txt")]
    assert len(robots_at) == 2
    first_page = min(x.t for x in server.log if x.path != "/robots.txt")
    assert first_page > robots_at[1]  # nothing was fetched while robots.txt was unreachable
    assert r.row(index)["warc_file"] is not None and r.row(server.url("/page"))["warc_file"] is not None
    assert r.row(server.url("/no"))["error"] == "robots_disallowed" and "/no" not in server.paths()


def test_robots_429_is_unreachable_and_its_retry_after_is_honoured(server, crawl):
    server.route(
        "/robots.txt",
        server.sequence(
            server.page("slow down", status=429, content_type="text/plain", headers=[("Retry-After", "1")]),
            server.page(**robots("User-agent: *\nDisallow:\n")),
        ),
    )
    index = site(server, None, [])
    r = crawl([index])
    first, second = server.requests("/robots.txt")
    assert second.t - first.t >= 0.95
    assert server.requests("/")[0].t > second.t
    assert r.row(index)["warc_file"] is not None


def test_robots_timeout_means_nothing_is_fetched(server, crawl):
    server.route("/robots.txt", server.stall())
    index = site(server, None, ["/page"])
    r = crawl([index], read_timeout_s=0.2, total_timeout_s=0.5)
    assert fetched(server) == set()
    assert r.row(index)["error"].startswith("robots_unreachable")
    assert r.row(index)["warc_file"] is None
    assert len(server.requests("/robots.txt")) >= 2  # tried again before giving up


def test_a_copy_that_parsed_stays_in_force_while_robots_is_unreachable(server, crawl):
    # RFC 9309 2.4: past its expiry a cached copy may still be used when robots.txt is unreachable
    server.route(
        "/robots.txt",
        server.sequence(
            server.page(**robots("User-agent: *\nDisallow: /secret\n")),
            server.page("down", status=503, content_type="text/plain"),
        ),
    )
    server.route("/secret", server.page(html()))
    server.route("/later", server.page(html(server.url("/secret"))))
    index = server.route("/", server.page(html(server.url("/later"))))
    r = crawl([index], robots_cache_s=0.2, per_host_delay_s=0.5)  # each page is found after the copy expired
    assert len(server.requests("/robots.txt")) >= 2  # it expired and was fetched again (and failed)
    assert r.row(server.url("/later"))["warc_file"] is not None  # the old copy allows it: no waiting
    assert r.row(server.url("/secret"))["error"] == "robots_disallowed" and "/secret" not in server.paths()


# -- 2.4: cached, then fetched again ---------------------------------------------------------------------
def test_robots_expires_and_is_fetched_again(server, crawl):
    server.route(
        "/robots.txt",
        server.sequence(
            server.page(**robots("User-agent: *\nDisallow:\n")),
            server.page(**robots("User-agent: *\nDisallow: /late\n")),
        ),
    )
    server.route("/late", server.page(html()))
    index = server.route("/", server.page(html(server.url("/late"))))
    # /late is found only once / is fetched, 0.6 s after robots.txt: past its 0.3 s cache lifetime
    r = crawl([index], robots_cache_s=0.3, per_host_delay_s=0.6)
    assert len(server.requests("/robots.txt")) == 2
    assert r.row(server.url("/late"))["error"] == "robots_disallowed" and "/late" not in server.paths()


def test_cache_lifetime_beyond_24_hours_is_refused():
    from crawl2serve.assets.crawl.crawler import CrawlSettings

    with pytest.raises(ValueError, match="24 hours"):
        CrawlSettings(seeds=("http://example.com/",), robots_cache_s=86_401)
    with pytest.raises(ValueError, match="500 KiB"):
        CrawlSettings(seeds=("http://example.com/",), robots_max_bytes=100_000)


# -- 2.3.1.2: up to five redirects, across origins ------------------------------------------------------------
def test_robots_redirects_are_followed_across_origins(server, server2, crawl):
    # /robots.txt -> server2 /r1 -> /r2 -> /r3 -> /r4 -> server /final.txt: five redirects
    server.route("/robots.txt", server.redirect(server2.url("/r1"), status=301))
    for i in range(1, 4):
        server2.route(f"/r{i}", server2.redirect(f"/r{i + 1}"))
    server2.route("/r4", server2.redirect(server.url("/final.txt"), status=308))
    server.route("/final.txt", server.page(**robots("User-agent: *\nDisallow: /secret\n")))
    index = site(server, None, ["/secret", "/public"])
    r = crawl([index])
    assert fetched(server) == {"/", "/public", "/final.txt"}
    assert r.row(server.url("/secret"))["error"] == "robots_disallowed"


def test_more_than_five_robots_redirects_mean_unavailable(server, crawl):
    server.route("/robots.txt", server.redirect("/r1"))
    for i in range(1, 6):
        server.route(f"/r{i}", server.redirect(f"/r{i + 1}"))
    server.route("/r6", server.page(**robots("User-agent: *\nDisallow: /\n")))
    index = site(server, None, ["/page"])
    r = crawl([index])
    assert "/r6" not in server.paths()  # the sixth redirect is not followed
    assert r.row(server.url("/page"))["warc_file"] is not None  # unavailable: everything allowed
