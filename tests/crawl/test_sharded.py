"""The live crawl sharded by host (assets/crawl/sharded.py) against four real HTTP servers on four loopback
addresses whose pages link across hosts: every host is fetched by exactly one shard, within its politeness
limit, and every page is stored exactly once; a rerun resumes (fetches nothing again); raw_crawl runs it."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import polars as pl
import pytest

from crawl2serve.assets.crawl.assets import raw_crawl
from crawl2serve.assets.crawl.crawler import CrawlSettings, CrawlStore, final_manifest
from crawl2serve.assets.crawl.sharded import crawl_sharded, shard_dir, shard_of
from crawl2serve.resources.corpus_executor import CorpusExecutor
from crawl2serve.resources.crawl_target import CrawlTarget
from crawl2serve.resources.io_manager import ParquetIOManager
from crawl2serve.resources.storage import DataRoot

pytestmark = pytest.mark.timeout(120)

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
PAGES = 6  # per host: /p0 .. /p5, each linking to the next page of its own host and of the next host


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sites:
    """One threaded HTTP server per loopback address (same port), counting requests in flight per host."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.lock = threading.Lock()
        self.in_flight: Counter = Counter()
        self.peak: Counter = Counter()
        self.requests: defaultdict[str, Counter] = defaultdict(Counter)
        self.servers = [ThreadingHTTPServer((h, self.port), self._handler(h)) for h in HOSTS]
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def url(self, host: str, page: int) -> str:
        return f"http://{host}:{self.port}/p{page}"

    def _handler(self, host: str):
        sites = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with sites.lock:
                    sites.in_flight[host] += 1
                    sites.peak[host] = max(sites.peak[host], sites.in_flight[host])
                    sites.requests[host][self.path] += 1
                try:  # in flight from the request's arrival until its answer starts (the client is done soon after,
                    # and may send the next request before this thread would get back to a `finally`)
                    time.sleep(0.01)
                    if self.path == "/robots.txt":
                        body, kind = b"User-agent: *\nAllow: /\n", "text/plain"
                    else:
                        i = int(self.path.lstrip("/p") or 0)
                        nxt = HOSTS[(HOSTS.index(host) + 1) % len(HOSTS)]
                        links = [sites.url(host, i + 1)] if i + 1 < PAGES else []
                        links.append(sites.url(nxt, i))
                        anchors = "".join(f'<a href="{u}">{u}</a>' for u in links)
                        body = f"<html><body><p>page {i} of {host}</p>{anchors}</body></html>".encode()
                        kind = "text/html"
                finally:
                    with sites.lock:
                        sites.in_flight[host] -= 1
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def sites():
    s = Sites()
    yield s
    s.close()


def settings(sites: Sites, **kw) -> CrawlSettings:
    return CrawlSettings(
        seeds=(sites.url(HOSTS[0], 0),),
        allowed_hosts=HOSTS,
        private_hosts=HOSTS,
        per_host_concurrency=1,
        per_host_delay_s=0.0,
        concurrency=8,
        **kw,
    )


def test_shard_of_is_stable_per_host_and_spreads_hosts():
    assert shard_of("http://a.example/x", 4) == shard_of("https://A.example:8443/y?z", 4)  # a host, any origin
    spread = Counter(shard_of(f"http://host{i}.example/", 4) for i in range(400))
    assert set(spread) == {0, 1, 2, 3} and min(spread.values()) > 60
    with pytest.raises(ValueError, match="shards"):
        shard_of("http://a.example/", 0)


def test_each_host_is_crawled_by_one_shard_politely_and_every_page_once(sites, tmp_path):
    root = DataRoot(url=str(tmp_path))
    directory = root.path("raw_crawl", "2026-12-01")
    summary = crawl_sharded(settings(sites), root, directory, shards=3, log=lambda m: None)

    stores = [CrawlStore(root, shard_dir(directory, k, 3)) for k in range(3)]
    manifests = [final_manifest(s).filter(pl.col("warc_file").is_not_null()) for s in stores]
    every = pl.concat(manifests)
    assert every.height == len(HOSTS) * PAGES and every["url"].is_unique().all()  # nothing lost, nothing twice
    for k, m in enumerate(manifests):  # a shard stores only the hosts it owns
        assert all(shard_of(u, 3) == k for u in m["url"].to_list())
    for host in HOSTS:
        pages = {p: n for p, n in sites.requests[host].items() if p != "/robots.txt"}
        assert len(pages) == PAGES and set(pages.values()) == {1}, (host, pages)  # each page fetched once
        assert sites.peak[host] == 1  # per_host_concurrency=1 held across all shards
    assert summary["shards"] == 3 and summary["rounds"] >= 2 and summary["handed_off"] > 0
    assert sum(summary["pages_by_shard"]) == len(HOSTS) * PAGES

    again = crawl_sharded(settings(sites), root, directory, shards=3, log=lambda m: None)
    assert again["fetched"] == 0 and again["resumed"] == len(HOSTS) * PAGES  # a rerun resumes every shard


def test_raw_crawl_crawls_in_shards_on_ray_and_keeps_its_shard_count(sites, tmp_path, ray_session):
    """The shards as Ray tasks (the session's local Ray): the same pages, each host owned by one shard."""
    data_root = DataRoot(url=str(tmp_path))
    target = CrawlTarget(
        mode="seeds",
        seeds=[sites.url(HOSTS[0], 0)],
        allowed_hosts=list(HOSTS),
        private_hosts=list(HOSTS),
        per_host_delay_s=0.0,
    )
    resources = {
        "crawl_target": target,
        "data_root": data_root,
        "io_manager": ParquetIOManager(data_root=data_root),
        "corpus_executor": CorpusExecutor(),  # Ray
    }

    def run(shards: int, **extra):
        config = {"ops": {"raw_crawl": {"config": {"shards": shards, "per_host_concurrency": 1, **extra}}}}
        return dg.materialize(
            [raw_crawl], partition_key="2026-12-01", resources=resources, run_config=config, raise_on_error=False
        )

    result = run(2)
    assert result.success
    md = result.asset_materializations_for_node("raw_crawl")[0].metadata
    assert md["stored_pages"].value == len(HOSTS) * PAGES
    for k in range(2):
        stored = final_manifest(CrawlStore(data_root, shard_dir(data_root.path("raw_crawl", "2026-12-01"), k, 2)))
        assert all(shard_of(u, 2) == k for u in stored.filter(pl.col("warc_file").is_not_null())["url"].to_list())
    failed = run(3)  # another shard count would ignore the stored crawl: refused, naming the field
    assert not failed.success
    assert "'shards'" in str(failed.get_step_failure_events()[0].event_specific_data.error)
    assert run(3, restart=True).success
