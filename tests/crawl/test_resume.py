"""Kill the crawler CLI mid-crawl with SIGKILL, resume it, and check that nothing is lost, doubled or half-written."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys

import polars as pl
import pytest
from fastwarc.warc import ArchiveIterator

from crawl2serve.assets.crawl.crawler import CrawlStore, final_manifest
from crawl2serve.resources.storage import DataRoot
from tests.crawl.conftest import kill_when

REPO = pathlib.Path(__file__).resolve().parents[2]
PAGES = 120

pytestmark = pytest.mark.timeout(120)


def body_of(i: int, origin: str) -> bytes:
    kids = sorted({k for k in (2 * i + 1, 2 * i + 2, i + 1) if k < PAGES})
    links = "".join(f'<a href="{origin}/p/{k}">page {k}</a> ' for k in kids)
    return f"<html><head><title>page {i}</title></head><body><h1>page {i}</h1>{links}</body></html>".encode()


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


def segment_files(seg_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in seg_dir.iterdir() if p.is_file()) if seg_dir.exists() else []


def read_all(path: pathlib.Path) -> list:
    with open(path, "rb") as f:
        return [(r.record_type, r.headers.get("WARC-Target-URI"), r.reader.read()) for r in ArchiveIterator(f)]


def test_sigkill_then_resume_loses_nothing_and_fetches_nothing_twice(server, tmp_path):
    origin = server.origin
    expected = {}
    for i in range(PAGES):
        expected[f"{origin}/p/{i}"] = body_of(i, origin)
        server.route(f"/p/{i}", server.page(expected[f"{origin}/p/{i}"], delay=0.02))
    out = tmp_path / "crawl"
    seg_dir = out / "segments"

    # -- run 1: killed once at least two segments are committed ----------------------------------------
    proc = start_cli(origin + "/p/0", out)
    kill_when(proc, lambda: len(list(seg_dir.glob("*.manifest.parquet"))) >= 2)
    assert proc.returncode == -signal.SIGKILL

    # nothing visible under segments/ is half-written: temporaries carry the .tmp- prefix, everything
    # else is a complete WARC or Parquet file
    files = segment_files(seg_dir)
    visible = [p for p in files if not p.name.startswith(".tmp-")]
    for p in visible:
        assert p.name.startswith("seg-") and p.name.endswith((".warc.gz", ".links.parquet", ".manifest.parquet")), p
        if p.name.endswith(".warc.gz"):
            recs = read_all(p)
            assert recs and len(recs) % 2 == 1  # warcinfo + request/response pairs, none cut off
        else:
            pl.read_parquet(p)
    manifests = sorted(seg_dir.glob("*.manifest.parquet"))
    assert len(manifests) >= 2
    before = pl.concat([pl.read_parquet(m) for m in manifests])
    committed = set(before["url"].to_list())
    assert before["url"].n_unique() == before.height
    assert len(committed) < PAGES  # the kill really interrupted the crawl
    for m in manifests:  # a manifest's WARC and link list landed before it did
        stem = m.name.removesuffix(".manifest.parquet")
        assert (seg_dir / f"{stem}.warc.gz").exists() and (seg_dir / f"{stem}.links.parquet").exists()

    # leftovers a kill can leave behind at other moments: a temporary, and a WARC whose manifest never landed
    (seg_dir / ".tmp-seg-19700101T000000-dead00-00000.warc.gz.x1y2").write_bytes(b"half a gzip member")
    a_warc = next(p for p in visible if p.name.endswith(".warc.gz"))
    (seg_dir / "seg-19700101T000000-dead00-00000.warc.gz").write_bytes(a_warc.read_bytes())
    (seg_dir / "seg-19700101T000000-dead00-00000.links.parquet").write_bytes(b"not parquet")

    # -- run 2: resume to completion --------------------------------------------------------------------
    mark = len(server.log)
    proc = start_cli(origin + "/p/0", out)
    try:
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    # the killed segment's temporary WARC may hold complete records: those are recovered, not fetched again
    assert summary["resumed"] == len(committed) + summary["recovered"]

    again = [r.path for r in server.log[mark:] if r.path != "/robots.txt"]
    refetched = {origin + p for p in again} & committed
    assert not refetched, f"committed URLs fetched again after the resume: {sorted(refetched)}"
    assert len(again) == len(set(again))  # and nothing fetched twice within the resumed run either
    assert len(again) == PAGES - summary["resumed"]

    # the resume swept away temporaries and uncommitted files
    leftovers = [p.name for p in out.rglob("*") if p.name.startswith(".tmp-") or "dead00" in p.name]
    assert not leftovers, leftovers

    root = DataRoot(url=str(out))
    store = CrawlStore(root, root.root)
    rows, _ = store.load()
    assert rows.height == PAGES and rows["url"].n_unique() == PAGES  # every page exactly once, no duplicates
    final = final_manifest(store)
    assert set(final["url"].to_list()) == set(expected)
    assert final["error"].null_count() == final.height and final["warc_file"].null_count() == 0
    # every stored page's record is readable at its offset, and holds exactly what the server sent
    for row in final.iter_rows(named=True):
        with open(row["warc_file"], "rb") as f:
            f.seek(row["warc_offset"])
            rec = next(iter(ArchiveIterator(f, parse_http=True)))
            assert rec.headers.get("WARC-Target-URI") == row["url"]
            assert rec.headers.get("WARC-Record-ID") == row["record_id"]
            assert rec.reader.read() == expected[row["url"]]
    # and every WARC file left is complete
    for p in seg_dir.glob("*.warc.gz"):
        assert len(read_all(p)) % 2 == 1
