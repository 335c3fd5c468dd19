"""URL normalization, crawl scope and the SSRF address guard (framework-free)."""

from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# Query parameters that only track the visitor; dropping them merges URLs for the same page.
TRACKING_PARAMS = frozenset(
    {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "gclid", "fbclid", "mc_cid", "mc_eid"}
)
_SAFE_PATH = "/:@!$&'()*+,;=-._~"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT_TOKENS = re.compile(r"%[0-9A-Fa-f]{2}|%|[^%]+")


def _normalize_percent_encoding(path: str) -> str:
    """RFC 3986 6.2.2: decode escapes of unreserved characters only, upper-case the others, escape what
    must be escaped (non-ASCII as UTF-8, a stray ``%`` as ``%25``). Reserved escapes such as ``%2F``
    and ``%25`` keep their meaning, and undecodable bytes (``%FF``) survive as they are."""
    out = []
    for tok in _PCT_TOKENS.findall(path):
        if len(tok) == 3 and tok[0] == "%":
            ch = chr(int(tok[1:], 16))
            out.append(ch if ch in _UNRESERVED else tok.upper())
        elif tok == "%":
            out.append("%25")
        else:
            out.append(quote(tok, safe=_SAFE_PATH))
    return "".join(out)


def normalize_url(url: str, base: str | None = None) -> str | None:
    """Canonical form of ``url`` (resolved against ``base``), or None when it is not crawlable.

    Lower-cases scheme and host, drops default ports, fragments and tracking parameters, resolves
    ``.``/``..`` segments, normalizes percent-encoding and sorts the query, so that every spelling of
    one page maps to one seen-set key.
    """
    url = url.strip()
    if not url:
        return None
    try:
        if base is not None:
            url = urljoin(base, url)  # raises ValueError on a broken IPv6 literal, like urlsplit
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _normalize_percent_encoding(parts.path or "/")  # first, so that %2E%2E is a dot segment too
    trailing = path.endswith(("/", "/.", "/.."))  # "/a/." is "/a/", not "/a"
    path = posixpath.normpath(path)
    if path in (".", "//"):
        path = "/"
    if trailing and not path.endswith("/"):
        path += "/"
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    # surrogateescape: bytes that are not UTF-8 (%FF) round-trip instead of turning into U+FFFD
    query_pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True, errors="surrogateescape")
                   if k not in TRACKING_PARAMS]
    query = urlencode(sorted(query_pairs), doseq=True, errors="surrogateescape")
    return urlunsplit((scheme, netloc, path, query, ""))


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class Scope:
    """Which URLs the crawl may visit: a host allow-list plus include/exclude regexes."""

    allowed_hosts: frozenset[str]
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def build(cls, allowed_hosts, include=(), exclude=()) -> Scope:
        return cls(
            frozenset(h.lower() for h in allowed_hosts),
            tuple(re.compile(p) for p in include),
            tuple(re.compile(p) for p in exclude),
        )

    def why_out(self, url: str) -> str | None:
        """None when ``url`` is in scope, else the reason it is not."""
        if self.allowed_hosts and host_of(url) not in self.allowed_hosts:
            return "host_not_allowed"
        if self.include and not any(p.search(url) for p in self.include):
            return "no_include_pattern"
        if any(p.search(url) for p in self.exclude):
            return "excluded_pattern"
        return None


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses; False for private, loopback, link-local,
    multicast, reserved and unspecified ones (the SSRF guard's definition of 'internal')."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def ip_literal(host: str) -> str | None:
    """The address when ``host`` is an IP literal, else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None
