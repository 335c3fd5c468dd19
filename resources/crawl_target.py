"""Where the crawl starts: the embedded pydoc documentation server, or configured seed URLs."""

import contextlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from .storage import DataRoot

# pydoc imports a module to document it; importing these runs programs (IDLE, turtle demos, a web
# browser) or drags in the whole regression-test suite, so the embedded crawl never asks for them.
PYDOC_EXCLUDES = (
    r"__main__",
    r"/(antigravity|this)\.html",
    r"/(idlelib|turtledemo|tkinter|test|lib2to3\.tests|ctypes\.test|unittest\.test)[./]",
    r"/(getfile|get|search)\?",
)


class CrawlTarget(dg.ConfigurableResource):
    """The crawl target of this environment.

    ``mode="pydoc"`` (the embedded default) starts ``python -m pydoc -n 127.0.0.1 -p 0`` when the crawl first
    asks for its seeds, until the run ends: real HTML documentation of the standard library, served on loopback, stopped by closing
    its stdin. ``mode="seeds"`` crawls ``seeds`` within ``allowed_hosts``; an internal site (intranet,
    loopback) is reachable only when its host is listed in ``private_hosts``.
    """

    data_root: dg.ResourceDependency[DataRoot]
    mode: Literal["pydoc", "seeds"] = Field(default="pydoc", description="pydoc (embedded) or seeds")
    seeds: list[str] = Field(default_factory=list, description="Seed URLs (mode=seeds)")
    allowed_hosts: list[str] = Field(default_factory=list, description="Host allow-list; empty: the seeds' hosts")
    exclude_patterns: list[str] = Field(default_factory=list, description="Extra URL regexes never fetched")
    include_site_packages: bool = Field(
        default=False, description="pydoc: also document installed packages (default: the standard library only)"
    )
    private_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (names or IP addresses) the crawl may reach although they are, or resolve to, private, "
        "loopback or link-local addresses: an intranet or staging site (mode=seeds). Every other internal "
        "address is refused and recorded as blocked_address. mode=pydoc adds its own 127.0.0.1.",
    )
    per_host_delay_s: float = Field(
        default=1.0, description="Seconds between requests to one origin (robots.txt Crawl-delay raises it)"
    )
    user_agent: str = Field(default="crawl2serve/0.1 (+https://github.com/crawl2serve)", description="User-Agent sent")
    startup_timeout_s: float = Field(default=30.0, description="pydoc: seconds to wait for 'Server ready'")

    _base_url: str | None = PrivateAttr(default=None)
    _servers: contextlib.ExitStack | None = PrivateAttr(default=None)
    _log = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator["CrawlTarget"]:
        # pydoc starts on first use (``seed_urls``), not with the step: a run that ingests WARC files or only
        # reads the crawl never waits for it (1.9 s of 7.2 s of the Ray corpus bench's run went to its start
        # and stop), and stops with the run.
        with contextlib.ExitStack() as servers:
            self._servers, self._log = servers, context.log
            try:
                yield self
            finally:
                self._servers, self._base_url = None, None

    def _start_pydoc(self) -> str:
        # Re-use the last run's port when it is free: URLs (and so the seen-set, document ids and splits) stay
        # the same across runs, and a re-run resumes the crawl instead of fetching the site again.
        port_file = self.data_root.local_path(self.data_root.path("raw_crawl", None, "pydoc_port"))
        last = int(port_file.read_text()) if port_file.exists() else 0
        url = self._servers.enter_context(start_pydoc(self.include_site_packages, self.startup_timeout_s, last))
        port_file.parent.mkdir(parents=True, exist_ok=True)
        self.data_root.write_bytes(url.rstrip("/").rsplit(":", 1)[1].encode(), str(port_file))
        if self._log:
            self._log.info(f"pydoc documentation server ready at {url}")
        return url

    @property
    def seed_urls(self) -> list[str]:
        if self.mode == "pydoc":
            with self._lock:
                if self._base_url is None:
                    if self._servers is None:
                        raise RuntimeError("the pydoc server is not running (resource used outside a run?)")
                    self._base_url = self._start_pydoc()
            return [self._base_url + "index.html", self._base_url + "topics.html", self._base_url + "keywords.html"]
        if not self.seeds:
            raise ValueError("crawl_target.seeds: mode=seeds needs at least one seed URL")
        return list(self.seeds)

    @property
    def reachable_private_hosts(self) -> list[str]:
        """Hosts allowed to be internal: ``private_hosts``, plus the embedded server's loopback address."""
        return [*(["127.0.0.1"] if self.mode == "pydoc" else []), *self.private_hosts]

    @property
    def excludes(self) -> list[str]:
        return [*(PYDOC_EXCLUDES if self.mode == "pydoc" else ()), *self.exclude_patterns]


@contextlib.contextmanager
def start_pydoc(include_site_packages: bool = False, timeout_s: float = 30.0, port: int = 0) -> Iterator[str]:
    """Run pydoc's HTML server on loopback (``port``, or a free one when it is 0 or taken); yield its base URL;
    stop it on exit."""
    try:
        with _pydoc(include_site_packages, timeout_s, port) as url:
            yield url
    except PortTaken:
        with _pydoc(include_site_packages, timeout_s, 0) as url:
            yield url


class PortTaken(RuntimeError):
    pass


@contextlib.contextmanager
def _pydoc(include_site_packages: bool, timeout_s: float, port: int) -> Iterator[str]:
    cmd = [
        sys.executable,
        *([] if include_site_packages else ["-S"]),
        "-m",
        "pydoc",
        "-n",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout_s
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            m = re.search(r"Server ready at (http://\S+/)", line)
            if m:  # keep draining its output so the server never blocks on a full pipe
                threading.Thread(target=proc.stdout.read, daemon=True).start()
                yield m.group(1)
                return
            if "Address already in use" in line:
                raise PortTaken(line.strip())
            if proc.poll() is not None:
                break
        raise RuntimeError(f"pydoc server did not start within {timeout_s}s (last output: {line!r})")
    finally:
        with contextlib.suppress(Exception):
            proc.stdin.close()  # pydoc serves until its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
