"""The SSRF guard end to end: every refused address is a ``blocked_address`` row, whatever its spelling,
and no packet reaches it; ``crawl_target.private_hosts`` opens an internal site in ``mode=seeds``."""

from __future__ import annotations

import dagster as dg
import pytest

from crawl2serve.assets.crawl.assets import CrawlConfig, crawl_settings, raw_crawl
from crawl2serve.resources.corpus_executor import CorpusExecutor
from crawl2serve.resources.crawl_target import CrawlTarget
from crawl2serve.resources.storage import DataRoot

pytestmark = pytest.mark.timeout(60)


def html(*links: str) -> str:
    return "<html><body><p>x</p>" + "".join(f'<a href="{u}">{u}</a>' for u in links) + "</body></html>"


SPELLINGS = {  # every one of them is 127.0.0.1
    "/dec": "2130706433",
    "/hex": "0x7f.1",
    "/oct": "017700000001",
    "/short": "127.1",
    "/hexfull": "0x7f000001",
    "/mapped": "[::ffff:127.0.0.1]",
    "/mapped-hex": "[::ffff:7f00:1]",
    "/compat": "[::127.0.0.1]",
    "/nat64": "[64:ff9b::7f00:1]",
}


def test_every_spelling_of_an_internal_address_is_blocked_address(server, crawl):
    port = server.port
    links = {path: f"http://{host}:{port}{path}" for path, host in SPELLINGS.items()}
    for path in links:
        server.route(path, server.page(html()))
    # the site is reached by a private-listed *name*; 127.0.0.1 itself is not listed
    index = f"http://localhost:{port}/"
    server.route("/", server.page(html(*links.values())))
    hosts = ("localhost", *(h.strip("[]") for h in SPELLINGS.values()))
    r = crawl([index], private_hosts=("localhost",), allowed_hosts=hosts, connect_timeout_s=0.05, max_retries=0)
    blocked = {url: row for url, row in r.rows.items() if url != index}
    assert len(blocked) >= 5  # the IPv4 spellings are one URL once normalized; the IPv6 ones stay apart
    for url, row in blocked.items():
        assert row["error"] == "blocked_address", (url, row)
        assert row["status"] is None and row["warc_file"] is None, row
    assert r.row(f"http://127.0.0.1:{port}/dec")["error"] == "blocked_address"
    assert sorted(server.paths()) == ["/", "/robots.txt"]  # nothing else reached the server
    assert {x.headers.get("host") for x in server.log} == {f"localhost:{port}"}


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "017700000001"])
def test_a_numeric_seed_is_blocked_address_not_robots_disallowed(server, crawl, host):
    seed = f"http://{host}:{server.port}/"
    r = crawl([seed], private_hosts=(), connect_timeout_s=0.05, max_retries=0)
    (row,) = r.rows.values()
    assert row["error"] == "blocked_address", row
    assert server.paths() == []  # not even robots.txt was asked for


def test_a_name_resolving_to_loopback_is_blocked_address(server, crawl):
    seed = f"http://localhost:{server.port}/"
    r = crawl([seed], private_hosts=(), connect_timeout_s=0.05, max_retries=0)
    assert r.row(seed)["error"] == "blocked_address"
    assert server.paths() == []


# -- crawl_target.private_hosts in mode=seeds -------------------------------------------------------------
def test_seeds_mode_reaches_a_listed_private_host(server, tmp_path):
    server.route("/", server.page(html(server.url("/a"))))
    server.route("/a", server.page(html()))
    root = DataRoot(url=str(tmp_path / "data"))
    target = CrawlTarget(
        data_root=root, mode="seeds", seeds=[server.url("/")], private_hosts=["127.0.0.1"], per_host_delay_s=0.0
    )
    assert crawl_settings(CrawlConfig(), target).private_hosts == ("127.0.0.1",)
    result = dg.materialize(
        [raw_crawl],
        resources={"data_root": root, "crawl_target": target, "corpus_executor": CorpusExecutor(backend="in_process")},
        partition_key="2026-11-20",
        run_config={"ops": {"raw_crawl": {"config": {"max_pages": 10}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("raw_crawl")[0].metadata
    assert meta["stored_pages"].value == 2
    assert sorted(server.paths()) == ["/", "/a", "/robots.txt"]


def test_seeds_mode_without_private_hosts_refuses_loopback(server, tmp_path):
    server.route("/", server.page(html()))
    root = DataRoot(url=str(tmp_path / "data"))
    target = CrawlTarget(data_root=root, mode="seeds", seeds=[server.url("/")], per_host_delay_s=0.0)
    assert crawl_settings(CrawlConfig(), target).private_hosts == ()
    result = dg.materialize(
        [raw_crawl],
        resources={"data_root": root, "crawl_target": target, "corpus_executor": CorpusExecutor(backend="in_process")},
        partition_key="2026-11-20",
        run_config={"ops": {"raw_crawl": {"config": {"max_pages": 10}}}},
        raise_on_error=False,
    )
    assert server.paths() == []
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evals["stored_pages"].passed is False  # the blocking check stops a crawl that stored nothing


def test_pydoc_mode_keeps_its_loopback_address(tmp_path):
    target = CrawlTarget(data_root=DataRoot(url=str(tmp_path)), mode="pydoc", private_hosts=["intranet.example"])
    assert target.reachable_private_hosts == ["127.0.0.1", "intranet.example"]
