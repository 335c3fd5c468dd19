"""Draw and label PII replacements from real documentation; measure precision and recall.

    python bench/pii_sample.py [--root /work/realdocs/x] [--write tests/corpus/fixtures]

1. Pages: every HTML page under ``--root`` (Debian manuals in 17 languages, python3.11-doc,
   sphinx-doc, postgresql-doc-15, openjdk-17-doc), extracted with ``assets.corpus.extract``.
2. Candidates: every replacement that main's scrubber (``scrub_pii`` of ``assets/corpus/filters.py``
   at ``BASE``, run from git) or the new one (``assets.corpus.pii``) makes, one per distinct
   (kind, value, line); the line is the context kept (at most ~240 characters around the value).
3. Sample: 250 replacements drawn at random (seed 13) from main's and 250 from the new scrubber's.
4. Labels (``label``), by the rules below, each with its reason; every label was then read by hand
   and the few the rules got wrong are corrected in ``OVERRIDES``.

   Email (kind ``email``) is PII unless it is
     - at a domain reserved for examples (RFC 2606/6761: example.com/.net/.org and subdomains,
       .example, .test, .invalid, .localhost) or a placeholder TLD (.local, .localdomain, .dom, .tld);
     - URL credentials (``joe:password@host``), a Message-ID (``<20030112190404.GE29873@host>``,
       ``message-id/...@mail.gmail.com``) or a Kerberos principal (``duke@FOO.COM`` in Kerberos text).
     People's, role and mailing-list addresses at real domains are PII (``debian-devel@lists.debian.org``),
     placeholders at real domains too (``yourlogin@debian.org``: the scrubber cannot tell them apart).
   IP address (``ip_address``) is PII when it is a public address (globally routable unicast; IANA
   special-purpose ranges excluded: private, loopback, link-local, multicast, documentation RFC 5737 /
   RFC 3849, shared, benchmarking, reserved, netmasks) and really is an address; not PII when it is
   a section or clause number (a heading ``14.5.4.4.`` or a reference ``Section 4.1.2.1``, ``JLS 9.6.4.1``),
   a version (``zlib 1.2.0.1``, ``Firefox/2.0.0.11``), an OID, an ltree path, a MAC address or a
   reverse-DNS name.
   Phone (``phone``) is PII when it is a real-looking number outside examples; every phone candidate
   in these pages is an example or not a phone (the ``re`` module's phonebook, Fibonacci numbers,
   ``+2147483647``, a ``LocalDate`` bound, the fictional ``(415) 555-1212``).
5. Recall set: every distinct email and public IP labelled PII among all candidates, in its real line
   (``pii_recall.jsonl.gz``), plus the public addresses of real documentation written in the ways
   documentation writes them (hosts-file lines, ping output, URLs, prose in several languages).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import pathlib
import random
import re
import subprocess
import sys
import types

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from crawl2serve.assets.corpus.extract import extract_html
from crawl2serve.assets.corpus.pii import is_public_ip, pii_spans

BASE = "b769a8b"  # main's commit this branch started from
REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE_PER_SCRUBBER = 250
CONTEXT = 80  # characters kept on each side of a candidate, within its line
BEFORE = 200  # at most this much of the candidate's paragraph before its line is kept


def old_scrubber() -> types.ModuleType:
    """main's filters.py (with its scrub_pii), loaded from git under another module name."""
    src = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{BASE}:assets/corpus/filters.py"], check=True, capture_output=True, text=True
    ).stdout
    spec = importlib.util.spec_from_loader("old_filters", loader=None)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_filters"] = mod  # dataclasses look their module up
    exec(compile(src, "old_filters.py", "exec"), mod.__dict__)
    return mod


def old_spans(old: types.ModuleType, text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of main's replacements: its patterns in its order (emails, IPv6, IPv4,
    phones) over each of its windows, each match masked (same length, NUL) before the next pattern
    runs, as main's substitutions were."""
    out = []
    for lo, hi in old._pii_windows(text):
        cur = text[lo:hi]
        for kind, rx in (
            ("email", old._EMAIL_RE),
            ("ip_address", old._IPV6_RE),
            ("ip_address", old._IPV4_RE),
            ("phone", old._PHONE_RE),
        ):
            hits = []
            for m in rx.finditer(cur):
                v = m.group()
                if rx is old._IPV6_RE and not old._ipv6_specific(v):
                    continue
                if kind == "phone" and not 9 <= sum(c in "0123456789" for c in v) <= 15:
                    continue
                hits.append(m.span())
            for x, y in hits:
                out.append((lo + x, lo + y, kind))
                cur = cur[:x] + "\0" * (y - x) + cur[y:]
    return sorted(out)


def pages(root: pathlib.Path) -> list[tuple[str, str]]:
    out = []
    for f in sorted(root.rglob("*.html")):
        if f.is_symlink() or f.name in ("search.html", "genindex.html"):
            continue
        rel = str(f.relative_to(root))
        out.append((rel, extract_html("https://docs.example.org/" + rel, f.read_bytes(), "text/html").text))
    return out


def context(text: str, start: int, end: int) -> tuple[str, int]:
    """(context, offset of the value in it): on a long line, CONTEXT characters either side (cut at
    spaces); otherwise from the start of the value's paragraph (at most BEFORE characters back, cut at
    a line start) to the end of its line."""
    line_a = text.rfind("\n", 0, start) + 1
    if start - line_a > CONTEXT:
        sp = text.find(" ", start - CONTEXT, start)
        a = sp + 1 if sp >= 0 else start
    else:
        para = text.rfind("\n\n", 0, line_a)
        a = para + 2 if para >= 0 else 0
        if line_a - a > BEFORE:
            nl = text.find("\n", line_a - BEFORE, line_a)
            a = nl + 1 if nl >= 0 else line_a
    b = text.find("\n", end)
    b = len(text) if b < 0 else b
    if b > end + CONTEXT:
        sp = text.rfind(" ", end, end + CONTEXT)
        b = sp if sp >= 0 else end
    return text[a:b], start - a


_EXAMPLE_DOMAIN = re.compile(
    r"(?i)(?:^|\.)(?:example|beispiel|ejemplo|exemple|esempio|exemplo|voorbeeld)\.[a-z]{2,}$"
    r"|\.(?:example|test|invalid|localhost|local|localdomain|dom|tld)$"
)
_SECTION = re.compile(
    r"(?i)(section|sect\.|chapter|abschnitt|kapitel|secci[oó]n?|cap[ií]tulo|chapitre|sezione|capitolo|"
    r"se[cç][aã]o|hoofdstuk|раздел|глава|afsnit|τμήμα|قسم|قسمت|jls|jvms|c standard|c99 standard|§)"
    r"[^\n]{0,15}$|\xa0$|第\s*$"
)
_VERSION = re.compile(r"(?i)(version|zlib|gcc|thunderbird|firefox/|python|v|==)\s*$|[A-Za-z][/_-]$")
_TLDS = {
    ln.strip().lower()
    for ln in (REPO / "assets/corpus/data/iana_tlds.txt").read_text().splitlines()
    if ln.strip() and not ln.startswith("#")
}


def label(kind: str, value: str, ctx: str, off: int) -> tuple[bool, str]:
    """(is PII, reason) by the rules of the module doc."""
    before, after = ctx[:off].rsplit("\n", 1)[-1], ctx[off + len(value) :].split("\n", 1)[0]  # same line
    if kind == "email":
        local, domain = value.rsplit("@", 1)
        if _EXAMPLE_DOMAIN.search(domain):
            return False, "example or placeholder domain (RFC 2606/6761, or its translation)"
        if domain.rsplit(".", 1)[-1].lower() not in _TLDS:
            return False, "not a delegated TLD: placeholder, file or unit name"
        if before.endswith(":") and before[-2:-1].isalnum() and not before.lower().endswith("mailto:"):
            return False, "URL credentials"
        if after[:1] == ":" and after[1:2] not in ("", " "):
            return False, "SSH remote (user@host:path)"
        if re.search(r"[0-9]{6,}", local) and "." in local:
            return False, "Message-ID"
        if re.search(r"(?i)kerberos|principal|krbtgt", ctx):
            return False, "Kerberos principal"
        return True, "email address at a real domain"
    if kind == "phone":
        return False, "example number or not a phone (see module doc)"
    # ip_address
    if ":" in value and "." not in value:
        groups = [g for g in value.split(":") if g]
        if "::" not in value and len(groups) == 8 and all(len(g) == 2 for g in groups):
            return False, "MAC address"
    if re.match(r"[ \t•*-]*$", before) and re.match(r"[.)](\s|$)", after):
        return False, "section number heading a line"
    if re.match(r"[ \t•*-]*$", before) and re.match(r"\s+[A-Z@]", after):
        return False, "section number or OID heading a line (hand-checked)"
    if _SECTION.search(before) or re.match(r"\s?[–—]\s|\s?[節章节절장]", after):
        return False, "section or clause reference"
    if re.search(r"(?i)oid\W{0,4}$", before):
        return False, "OID"
    if re.match(r"\.[A-Za-z]", after):
        return False, "part of a longer dotted name (file name, reverse DNS)"
    if _VERSION.search(before):
        return False, "version string"
    if re.search(r"ltree", ctx):
        return False, "ltree path"
    try:
        public = is_public_ip(value)
    except ValueError:
        return False, "not an address"
    return (True, "public address") if public else (False, "non-public address (IANA special-purpose)")


# Hand corrections after reading every sampled label: (kind, value) -> (PII, reason).
OVERRIDES: dict[tuple[str, str], tuple[bool, str]] = {
    ("email", "user@machine.example.comuser"): (False, "example domain glued to the next word (CJK text)"),
    ("email", "jlee@smylex.uucp"): (True, "a person's UUCP address (a real, if historical, mailbox)"),
    ("email", "DxR7kFYprcQ1tNcCT5D0O3ShfnM6jehA@mail.gmail.com"): (False, "Message-ID (in a mail-archive URL)"),
    ("email", "utilisateur@machine.domaine.fr"): (False, "translated example (user@machine.example.com)"),
}

# Public addresses seen in these manuals and emails of their mailing lists, written the ways
# documentation writes them (hosts files, resolver and server configuration, logs, URLs, prose in
# several languages, CJK text without spaces).
WRITTEN = [
    ("ip_address", "130.89.148.77", "130.89.148.77 ftp.nl.debian.org"),
    ("ip_address", "149.20.4.15", "nameserver 149.20.4.15"),
    ("ip_address", "212.27.32.176", "; The resolver at 212.27.32.176 answers for falcot.com"),
    ("ip_address", "8.8.8.8", "$ ping -c 3 8.8.8.8"),
    (
        "ip_address",
        "82.50.72.202",
        "Nov 27 13:33:34 arrakis sshd[1147]: Accepted publickey for roland from 82.50.72.202 port 38742 ssh2",
    ),
    (
        "ip_address",
        "213.244.11.247",
        '213.244.11.247 - - [27/Nov/2004:13:33:34 +0100] "GET /index.html HTTP/1.1" 200 2047',
    ),
    ("ip_address", "93.184.216.34", "Open http://93.184.216.34/ in a browser to reach the server directly."),
    ("ip_address", "200.46.204.71", "The old server 200.46.204.71 was retired in 2019."),
    ("ip_address", "212.94.201.10", "mail    IN      A       212.94.201.10"),
    ("ip_address", "199.127.61.96", "allow from 199.127.61.96"),
    ("ip_address", "206.221.184.234", "listen 206.221.184.234:80;"),
    ("ip_address", "130.89.148.77", "Le serveur 130.89.148.77 répond aux requêtes HTTP."),
    ("ip_address", "149.20.4.15", "Die Adresse 149.20.4.15 gehört zu einem Spiegelserver."),
    ("ip_address", "130.89.148.77", "サーバー 130.89.148.77 に接続します。"),
    ("ip_address", "82.50.72.202", "El cliente (82.50.72.202) descargó dos vídeos."),
    ("ip_address", "213.244.11.247", "Host: 213.244.11.247"),
    ("ip_address", "212.27.32.176", "Block the address 212.27.32.176."),
    ("ip_address", "2001:67c:2564:a119::77", "www.debian.org has IPv6 address 2001:67c:2564:a119::77"),
    ("ip_address", "2603:400a:ffff:bb8::801f:3e", "ping6 2603:400a:ffff:bb8::801f:3e"),
    (
        "ip_address",
        "2606:2800:220:1:248:1893:25c8:1946",
        "Connect to [2606:2800:220:1:248:1893:25c8:1946]:443 with TLS.",
    ),
    ("ip_address", "8.8.8.8", "8.8.8.8"),
    ("ip_address", "93.184.216.34", "  inet 93.184.216.34/24 brd 93.184.216.255 scope global eth0"),
    ("email", "debian-devel@lists.debian.org", "Send your questions to debian-devel@lists.debian.org."),
    (
        "email",
        "debian-user-french@lists.debian.org",
        "Écrivez à debian-user-french@lists.debian.org pour obtenir de l'aide.",
    ),
    ("email", "debian-user-german@lists.debian.org", "Fragen Sie auf debian-user-german@lists.debian.org nach."),
    ("email", "debian-devel@lists.debian.org", "詳しくはdebian-devel@lists.debian.orgまでお問い合わせください。"),
    ("email", "debian-doc@debian.or.jp", "日本語の場合はdebian-doc@debian.or.jpを参照してください。"),
    ("email", "debian-legal@lists.debian.org", "如果不确定，请把许可证文本发送到debian-legal@lists.debian.org。"),
    ("email", "owner@bugs.debian.org", "Maintainer: Debian BTS Owner <owner@bugs.debian.org>"),
    ("email", "ftpmaster@debian.org", "Reply-To: ftpmaster@debian.org"),
    ("email", "listmaster@lists.debian.org", "mailto:listmaster@lists.debian.org"),
    ("email", "submit@bugs.debian.org", "To: submit@bugs.debian.org (with the report in the body)"),
    ("email", "DEBIAN-DEVEL@LISTS.DEBIAN.ORG", "Subscribe by writing to DEBIAN-DEVEL@LISTS.DEBIAN.ORG"),
    ("email", "osamu@debian.org", "# Copyright (C) 2021 Osamu Aoki <osamu@debian.org>, Public Domain"),
    ("email", "debian-i18n@lists.debian.org", "(debian-i18n@lists.debian.org)"),
    ("email", "press@debian.org", "Contact press@debian.org: they answer within a day."),
    (
        "email",
        "gregkh@linuxfoundation.org",
        'gpg: Good signature from "Greg Kroah-Hartman <gregkh@linuxfoundation.org>"',
    ),
    ("email", "hertzog@debian.org", "-- Raphaël Hertzog <hertzog@debian.org>  Mon, 22 Mar 2010 00:37:31 +0100"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/work/realdocs/x", type=pathlib.Path)
    ap.add_argument("--write", type=pathlib.Path)
    ap.add_argument("--show", action="store_true", help="print every sampled row with its label")
    ap.add_argument("--seed", type=int, default=13, help="13: the committed sample; others: fresh checks")
    a = ap.parse_args()
    old = old_scrubber()
    cands: dict[tuple[str, str, str], dict] = {}
    for path, text in pages(a.root):
        for who, spans in (("main", old_spans(old, text)), ("new", pii_spans(text))):
            for s, e, kind in spans:
                value = text[s:e]
                line_a = text.rfind("\n", 0, s) + 1
                line_b = text.find("\n", e)
                key = (kind, value, text[line_a : line_b if line_b >= 0 else len(text)])
                if key not in cands:
                    ctx, off = context(text, s, e)
                    cands[key] = {
                        "kind": kind,
                        "value": value,
                        "context": ctx,
                        "offset": off,
                        "path": path,
                        "pos": s,
                        "by": set(),
                    }
                cands[key]["by"].add(who)
    rows = sorted(cands.values(), key=lambda r: (r["path"], r["pos"], r["kind"], r["value"]))
    for r in rows:
        pii, why = label(r["kind"], r["value"], r["context"], r["offset"])
        r["pii"], r["reason"] = OVERRIDES.get((r["kind"], r["value"]), (pii, why))
    rng = random.Random(a.seed)
    drawn = {}
    for who in ("main", "new"):
        for r in rng.sample([r for r in rows if who in r["by"]], SAMPLE_PER_SCRUBBER):
            drawn.setdefault(id(r), (r, set()))[1].add(who)
    sample = sorted(drawn.values(), key=lambda rs: (rs[0]["path"], rs[0]["pos"], rs[0]["kind"]))
    for r, sampled_for in sample:
        r["sampled_for"] = sorted(sampled_for)
    sample = [r for r, _ in sample]
    print(
        f"{len(rows)} distinct candidates ({sum('main' in r['by'] for r in rows)} by main, "
        f"{sum('new' in r['by'] for r in rows)} by new); {len(sample)} sampled rows"
    )
    for who in ("main", "new"):
        mine = [r for r in sample if who in r["sampled_for"]]
        print(f"{who}: precision {sum(r['pii'] for r in mine) / len(mine):.4f} on its {len(mine)} sampled replacements")
    if a.show:
        for r in sample:
            print(
                f"{int(r['pii'])} {'+'.join(sorted(r['by'])):8s} {r['kind'][:5]} {r['value']!r:28s} {r['reason'][:28]:28s} | "
                f"{r['context'][max(0, r['offset'] - 50) : r['offset'] + len(r['value']) + 30]!r}"
            )
    recall = {}
    for r in rows:
        if r["pii"] and r["kind"] in ("email", "ip_address"):
            recall.setdefault(
                (r["kind"], r["value"]),
                {k: r[k] for k in ("kind", "value", "context", "offset", "path")} | {"source": "docs"},
            )
    recall = list(recall.values()) + [
        {"kind": k, "value": v, "context": c, "offset": c.index(v), "path": None, "source": "written"}
        for k, v, c in WRITTEN
    ]
    for who, fn in (("main", lambda t: old_spans(old, t)), ("new", pii_spans)):
        hit = [
            any(s < x["offset"] + len(x["value"]) and x["offset"] < e for s, e, _ in fn(x["context"])) for x in recall
        ]
        print(
            f"{who}: recall {sum(hit) / len(hit):.4f} on {len(recall)} real emails and public IPs "
            f"({sum(x['kind'] == 'email' for x in recall)} emails)"
        )
        for x, h in zip(recall, hit):
            if not h and a.show:
                print(
                    f"   {who} misses {x['kind']} {x['value']!r} in {x['context'][max(0, x['offset'] - 60) : x['offset'] + 60]!r}"
                )
    if a.write:
        lines = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in recall)
        (a.write / "pii_recall.jsonl.gz").write_bytes(gzip.compress(lines.encode(), mtime=0))
        lines = "".join(
            json.dumps(
                {k: r[k] for k in ("kind", "value", "context", "offset", "pii", "reason", "path")}
                | {"by": sorted(r["by"]), "sampled_for": r["sampled_for"]},
                ensure_ascii=False,
            )
            + "\n"
            for r in sample
        )
        (a.write / "pii_labeled.jsonl.gz").write_bytes(gzip.compress(lines.encode(), mtime=0))
        print("wrote", a.write / "pii_labeled.jsonl.gz", "and", a.write / "pii_recall.jsonl.gz")


if __name__ == "__main__":
    main()
