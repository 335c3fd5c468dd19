"""URL normalization, crawl scope and the SSRF address guard (framework-free)."""

from __future__ import annotations

import functools
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
    host = _url_host(parts.hostname)
    if host is None:
        return None
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
    query_pairs = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True, errors="surrogateescape")
        if k not in TRACKING_PARAMS
    ]
    query = urlencode(sorted(query_pairs), doseq=True, errors="surrogateescape")
    return urlunsplit((scheme, netloc, path, query, ""))


@functools.lru_cache(maxsize=65536)  # a crawl sees few hosts and normalizes every link of every page
def _url_host(hostname: str) -> str | None:
    """The host as a normalized URL spells it, or None when it cannot be one."""
    host = hostname.lower().rstrip(".")
    if ":" in host:  # IPv6 literal, in its canonical (RFC 5952) spelling as WHATWG serializes it
        try:
            return f"[{ipaddress.IPv6Address(host)}]"
        except ValueError:
            return f"[{host}]"
    if _ends_in_number(host):
        # WHATWG URL host parsing (what browsers and ``inet_aton`` do): 2130706433, 0x7f.1, 017700000001
        # and 127.1 all name 127.0.0.1. Canonical dotted-quad form, or not a URL at all (1.2.3.4.5).
        return ipv4_loose(host)
    return host


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def origin_of(url: str) -> str:
    """``scheme://netloc`` of a normalized URL (its robots.txt lives at ``origin_of(url) + "/robots.txt"``)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def origin_key(url: str) -> str:
    """The origin (scheme, host, port) of ``url`` with the port always spelled out: the key of robots.txt
    rules and of politeness (RFC 9309 2.3: rules apply to one scheme, host and port)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{parts.port or DEFAULT_PORTS.get(scheme, 0)}"


@dataclass(frozen=True)
class Scope:
    """Which URLs the crawl may visit: a host allow-list plus include/exclude regexes."""

    allowed_hosts: frozenset[str]
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def build(cls, allowed_hosts, include=(), exclude=()) -> Scope:
        return cls(
            frozenset(canonical_host(h) for h in allowed_hosts),
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


# IPv6 ranges that carry an IPv4 address in their last 32 bits: IPv4-compatible (deprecated), SIIT
# IPv4-translated, NAT64 well-known prefix. A NAT64 gateway turns 64:ff9b::a00:1 into 10.0.0.1.
_V4_IN_LOW_BITS = tuple(ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96"))
# Local-use NAT64 (RFC 8215) and deprecated site-local addresses: internal whatever they embed.
_INTERNAL_V6 = tuple(ipaddress.ip_network(n) for n in ("64:ff9b:1::/48", "fec0::/10"))


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses; False for private, loopback, link-local,
    multicast, reserved and unspecified ones (the SSRF guard's definition of 'internal').

    An IPv6 address that embeds an IPv4 one (mapped ``::ffff:127.0.0.1``, compatible ``::127.0.0.1``,
    NAT64 ``64:ff9b::7f00:1``, 6to4 ``2002:7f00:1::``, Teredo) is public only if that IPv4 address is."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _INTERNAL_V6):
            return False
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if any(ip in net for net in _V4_IN_LOW_BITS) and int(ip) > 1:  # :: and ::1 are not IPv4
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        embedded = [a for a in embedded if a is not None]
        if embedded:
            return all(a.is_global and not a.is_multicast for a in embedded)
    return ip.is_global and not ip.is_multicast


def _ipv4_number(part: str) -> int | None:
    """One part of a WHATWG/inet_aton IPv4 host: decimal, octal (leading 0) or hex (0x)."""
    if not part:
        return None
    base = 10
    if len(part) > 1 and part[:2].lower() == "0x":
        part, base = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        part, base = part[1:], 8
    if part == "":
        return 0  # "0x" is 0
    try:
        return int(part, base) if part.isascii() and part.isalnum() else None
    except ValueError:
        return None


def _ends_in_number(host: str) -> bool:
    """WHATWG's 'ends in a number' test: is this host meant as an IPv4 address?"""
    last = host.rstrip(".").rsplit(".", 1)[-1]
    return bool(last) and (
        last.isascii() and last.isdigit() or _ipv4_number(last) is not None and last[:2].lower() == "0x"
    )


def ipv4_loose(host: str) -> str | None:
    """The dotted-quad form of an IPv4 host in any spelling ``inet_aton`` accepts (one to four parts, each
    decimal, octal or hex; the last part fills the remaining bytes), or None when it is not one."""
    parts = host.rstrip(".").split(".")
    if not 1 <= len(parts) <= 4:
        return None
    nums = [_ipv4_number(p) for p in parts]
    if any(n is None for n in nums) or any(n > 255 for n in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        return None
    value = nums[-1]
    for i, n in enumerate(nums[:-1]):
        value += n << (8 * (3 - i))
    return str(ipaddress.IPv4Address(value))


def canonical_host(host: str) -> str:
    """A host as the crawl compares it (allow-lists, ``private_hosts``): lower case, no brackets or trailing
    dot, an IP address in its canonical spelling (``0x7f.1`` and ``[::ffff:127.0.0.1]`` as normalize_url
    writes them)."""
    host = host.strip().lower().strip("[]").rstrip(".")
    return ip_literal(host) or host


def ip_literal(host: str) -> str | None:
    """The address when ``host`` is an IP literal (any IPv4 spelling included), else None."""
    host = host.strip().lower()
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    return ipv4_loose(host) if _ends_in_number(host) else None
