"""The retrieval-augmented model at the gateway (``crawl2serve-rag``), as its own process in front of the real
CPU engine, over an index built from real pydoc pages: context with numbered sources, cited URLs (whole and
streamed answers), retrieval facts in the log and metrics, the semantic cache answering a reworded question,
and a blue/green switch picked up while serving."""

import json
import pydoc
import time

import httpx
import openai
import polars as pl
import pytest

from crawl2serve.assets.retrieval.index import IndexSettings, build_version
from crawl2serve.serving.gateway.logstore import read_rows
from tests.serving.helpers import metric, start_gateway

MODULES = ("json", "csv", "hmac", "textwrap", "shlex", "fnmatch", "base64", "heapq")


def _documents(extra: dict[str, str] | None = None) -> pl.DataFrame:
    pages = {m: pydoc.render_doc(m, renderer=pydoc.plaintext) for m in MODULES} | (extra or {})
    return pl.DataFrame(
        [(f"doc-{m}", f"http://127.0.0.1/{m}.html", f"Pydoc: module {m}", t) for m, t in pages.items()],
        schema=["doc_id", "url", "title", "text"],
        orient="row",
    )


def _publish(root, version: str, documents: pl.DataFrame, previous=None) -> None:
    """What served_retrieval_index does: the version built, then live.json replaced atomically."""
    versions = root / "retrieval_index" / "_" / "versions"
    build_version(versions, version, documents, IndexSettings(dimensions=64), previous=previous)
    live = root / "served_retrieval_index" / "_" / "live.json"
    live.parent.mkdir(parents=True, exist_ok=True)
    tmp = live.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": version, "path": f"retrieval_index/_/versions/{version}", "qdrant_url": ""}))
    tmp.replace(live)


@pytest.fixture(scope="module")
def rag_gateway(tmp_path_factory, cpu_engine, tiny_model):
    root = tmp_path_factory.mktemp("rag_root")
    gw = start_gateway(
        tmp_path_factory.mktemp("rag_gw"),
        [("primary", cpu_engine.url)],
        tiny_model,
        rag={
            "live_file": str(root / "served_retrieval_index" / "_" / "live.json"),
            "top_k": 2,
            "max_context_chars": 700,
            "reload_interval_s": 0.2,
        },
        cache={"enabled": True},  # the response cache too: the streamed repeat below is replayed from it
    )
    yield gw, root
    gw.stop()


def test_rag_model_cites_sources_logs_retrieval_and_follows_the_switch(rag_gateway):
    gw, root = rag_gateway
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    question = [{"role": "user", "content": "How do I compute an HMAC keyed hash of a message digest?"}]

    with pytest.raises(openai.APIStatusError) as nothing_served:
        client.chat.completions.create(model="crawl2serve-rag", messages=question, max_tokens=4)
    assert nothing_served.value.status_code == 503
    assert nothing_served.value.body["code"] == "retrieval_index_unavailable"

    _publish(root, "v1", _documents())
    time.sleep(0.3)
    raw = httpx.post(
        gw.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {gw.key}"},
        json={"model": "crawl2serve-rag", "messages": question, "max_tokens": 4, "temperature": 0},
        timeout=60,
    )
    assert raw.status_code == 200, raw.text
    assert raw.headers["X-Crawl2serve-Retrieval"].startswith("v1; hits=2")
    answer = raw.json()["choices"][0]["message"]["content"]
    sources = answer.split("\n\nSources:\n", 1)[1].splitlines()
    assert sources[0] == "[1] http://127.0.0.1/hmac.html" and len(sources) == 2

    stream = client.chat.completions.create(
        model="crawl2serve-rag", messages=question, max_tokens=4, temperature=0, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed.endswith("\n\nSources:\n" + "\n".join(sources)) and streamed.count("Sources:") == 1
    plain = client.chat.completions.create(model="crawl2serve", messages=question, max_tokens=4, temperature=0)
    assert "Sources:" not in plain.choices[0].message.content
    assert "crawl2serve-rag" in [m.id for m in client.models.list().data]

    # The same question reworded: the semantic cache answers it (same sources), no retrieval, no engine.
    again = client.chat.completions.create(
        model="crawl2serve-rag",
        messages=[{"role": "user", "content": "how to compute a keyed HMAC hash of a message digest"}],
        max_tokens=4,
        temperature=0,
    )
    assert again.choices[0].message.content == answer
    assert metric(gw.url, "c2s_gateway_semantic_cache_total", outcome="hit") == 1

    time.sleep(0.3)  # the log writer commits every 50 ms
    rag_rows = [r for r in read_rows(gw.settings.log_dir)[0] if r["model"] == "crawl2serve-rag" and r["status"] == 200]
    assert len(rag_rows) == 3
    row, cached = rag_rows[0], rag_rows[2]
    assert rag_rows[1]["cache"] == "hit"  # the stream: the response cache's replay, its citations not doubled
    assert cached["route"] == "semantic_cache" and cached["engine"] == "" and cached["semantic_cache_similarity"] >= 0.7
    assert row["retrieval_version"] == "v1" and row["retrieval_hits"] == 2 and row["retrieval_ms"] > 0
    assert row["retrieval_urls"].split()[0] == "http://127.0.0.1/hmac.html" and row["model_version"] == "1"
    assert 0 < row["retrieval_top_score"] <= 1.0001
    assert metric(gw.url, "c2s_gateway_retrieval_seconds_count") == 2
    other = [r for r in read_rows(gw.settings.log_dir)[0] if r["model"] == "crawl2serve"]
    assert other and other[0]["retrieval_hits"] is None

    # Blue/green: a new crawl adds a page; the next version is built from v1 and switched to while serving.
    zebra = "Zebra stripes\n\nThe zebra module parses striped configuration files into dictionaries of bands."
    _publish(root, "v2", _documents({"zebra": zebra}), previous=root / "retrieval_index" / "_" / "versions" / "v1")
    time.sleep(0.5)
    out = client.chat.completions.create(
        model="crawl2serve-rag",
        messages=[{"role": "user", "content": "Which module parses striped configuration files?"}],
        max_tokens=4,
        temperature=0,
    )
    assert "[1] http://127.0.0.1/zebra.html" in out.choices[0].message.content
