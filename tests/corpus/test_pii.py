"""PII scrubbing (assets/corpus/pii.py): precision on replacements drawn from real documentation,
recall on real emails and public IPs, and the rules one by one.

Fixtures (written by ``bench/pii_sample.py --write tests/corpus/fixtures``; labelling rules in its
docstring and in the README):

* ``pii_labeled.jsonl.gz``: 250 replacements drawn at random from main's scrubber and 250 from this
  one (492 distinct) over the real Debian, Python, PostgreSQL, OpenJDK and Git manuals, each with its
  context (its paragraph, at most ~200 characters back, to the end of its line) and a hand-checked
  label: is the replaced string PII?
* ``pii_recall.jsonl.gz``: every distinct email and public IP address labelled PII among all
  candidates, in its real context, plus real public addresses written as documentation writes them.
"""

from __future__ import annotations

import gzip
import json
import pathlib
import random

import pytest

from crawl2serve.assets.corpus import filters
from crawl2serve.assets.corpus.filters import scrub_pii  # the name the cleaning stage imports (re-exported from pii.py)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
NONE = {"email": 0, "ip_address": 0, "phone": 0}


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress((FIXTURES / name).read_bytes()).decode().splitlines()]


LABELED = _rows("pii_labeled.jsonl.gz")
RECALL = _rows("pii_recall.jsonl.gz")


def _replaced(row: dict) -> bool:
    """Did scrub_pii replace the row's value in its context? (Its occurrences went down.)"""
    scrubbed, _ = scrub_pii(row["context"])
    return scrubbed.count(row["value"]) < row["context"].count(row["value"])


def test_precision_on_replacements_drawn_from_real_documentation():
    replaced = [r for r in LABELED if _replaced(r)]
    precision = sum(r["pii"] for r in replaced) / len(replaced)
    wrong = [(r["kind"], r["value"], r["reason"]) for r in replaced if not r["pii"]]
    assert len(LABELED) >= 400 and len(replaced) >= 200
    assert precision >= 0.95, (precision, wrong[:20])


def test_section_numbers_and_examples_of_the_sample_are_left_alone():
    """The sample's non-PII rows by reason: no section number heading a line, no documentation or
    private address is replaced (the defects reported: `<IP_ADDRESS>. Reporting bugs`)."""
    for r in LABELED:
        if r["reason"] in (
            "section number heading a line",
            "non-public address (IANA special-purpose)",
            "example or placeholder domain (RFC 2606/6761, or its translation)",
            "example number or not a phone (see module doc)",
            "MAC address",
            "version string",
        ):
            assert not _replaced(r), (r["value"], r["context"][max(0, r["offset"] - 60) : r["offset"] + 60])


def test_recall_on_real_emails_and_public_ips():
    hit = [_replaced(r) for r in RECALL]
    recall = sum(hit) / len(hit)
    assert len(RECALL) >= 200 and {r["kind"] for r in RECALL} == {"email", "ip_address"}
    assert recall >= 0.95, [(r["value"], r["context"]) for r, h in zip(RECALL, hit) if not h][:20]
    written = [h for r, h in zip(RECALL, hit) if r["source"] == "written"]
    assert sum(written) / len(written) >= 0.95


def test_filters_re_exports_the_scrubber():
    from crawl2serve.assets.corpus.pii import PII_PLACEHOLDERS, scrub_pii

    assert filters.scrub_pii is scrub_pii and filters.PII_PLACEHOLDERS is PII_PLACEHOLDERS


# ----- the rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("Mail john.doe@debian.org today.", "Mail <EMAIL> today.", "email"),
        ("cc: a_b+tag@mail.falcot.co.uk,", "cc: <EMAIL>,", "email"),
        ("Send it to debian-devel@lists.debian.org.", "Send it to <EMAIL>.", "email"),
        ("mailto:listmaster@lists.debian.org", "mailto:<EMAIL>", "email"),
        ("詳しくはdebian-devel@lists.debian.orgまで", "詳しくは<EMAIL>まで", "email"),
        ("Server at 130.89.148.77.", "Server at <IP_ADDRESS>.", "ip_address"),
        ("nameserver 8.8.8.8", "nameserver <IP_ADDRESS>", "ip_address"),
        ("130.89.148.77 ftp.nl.debian.org", "<IP_ADDRESS> ftp.nl.debian.org", "ip_address"),
        ("v6 2001:67c:2564:a119::77 here", "v6 <IP_ADDRESS> here", "ip_address"),
        ("full 2a01:04f8:0000:0000:0000:8a2e:0370:7334", "full <IP_ADDRESS>", "ip_address"),
        ("mapped ::ffff:129.144.52.38 ok", "mapped <IP_ADDRESS> ok", "ip_address"),
        ("Call +44 20 7946 0958 now", "Call <PHONE> now", "phone"),
        ("Call +1 (415) 723-2671.", "Call <PHONE>.", "phone"),
        ("Call (415) 723-2671.", "Call <PHONE>.", "phone"),
        ("Call 415-723-2671 or", "Call <PHONE> or", "phone"),
        ("Call 415.723.2671 or", "Call <PHONE> or", "phone"),
        ("E.164 +14157232671.", "E.164 <PHONE>.", "phone"),
    ],
)
def test_pii_is_replaced(text, expected, kind):
    assert scrub_pii(text) == (expected, NONE | {kind: 1})


@pytest.mark.parametrize(
    "text",
    [
        "14.5.4.4. Reporting bugs",  # section numbers heading a line, in any language
        "  6.2.4.3. Die Mail-Adress-Konfiguration",
        "12.1.1.2.\xa0Setting up RAID",
        "15.12.4.5 Create Frame, Synchronize, Transfer Control",
        "      2.5.29.15\t\t      KeyUsage",  # an OID table
        "see Section 4.1.2.1 for details",  # references
        "wie in Abschnitt 6.2.4.3, „Die Mail-Adress-Konfiguration“",
        "see Τμήμα\xa01.3.2.3, «Sending fixes»",
        "(see 1.3.2.3 – „Sending fixes“)",
        "第 11.1.7.3 節「Integrating」",
        "as RFC 1122 section 4.2.4.2 indicates",
        "(OID = 2.5.29.15)",
        "Python 3.11.7 was released; pip 24.0.1 too.",  # versions
        "zlib 1.2.0.1 and version 1.2.3.4",
        "User-Agent: Thunderbird 1.5.0.9 (X11/20061227)",
        "Mozilla/5.0 Firefox/2.0.0.11",
        "Collecting novas==3.1.1.3",
        "Downloading novas-3.1.1.3.tar.gz",
        "'1.0.0.127.in-addr.arpa'",
        "release 1.2.3.4.5 of the tool",  # five parts is not an address
        "octets 256.1.1.1 and 1.2.3.999 are invalid",
        "127.0.0.1 localhost",  # non-public addresses (the default: public ones only)
        "gateway=192.168.0.1 and 10.0.0.1, netmask 255.255.255.0",
        "the documentation ranges 192.0.2.1, 198.51.100.7 and 203.0.113.9",
        "ff02::1 ip6-allnodes; fe80::1 and 2001:db8::8a2e:370:7334",
        "multicast 224.0.0.251 and ::ffff:192.0.2.1",
        "macaddr8 '08:00:2b:01:02:03:04:05'",  # MAC address
        "Mail john.doe@example.com or ops@mail.example.org",  # example domains
        'DEBEMAIL="your.email.address@example.org" and benutzer@beispiel.com',
        "user@host.dom and my_app@domain.tld",  # placeholder TLDs
        "git-maintenance@daily.timer and filename@2x.gif",  # not a delegated TLD
        "git@salsa.debian.org:ddp-team/debian-faq.git",  # an SSH remote
        '"joe:password@python.org"',  # URL credentials
        "https://lore.kernel.org/git/20170304224936.rqqtkdvfjgyezsht@genre.crustytoothpaste.net/",  # Message-ID
        "@property\ndef name(self): ...",  # decorators
        "ssh user@localhost and pkg @ file:///tmp/x",
        "std::vector<int> v; a::b; x[1::2]; y[::2]",  # C++ scopes and slices
        "::1 is loopback; 1::2, a::b and x[1000::2] are too short to tell",
        "at 12:30:45 the MAC 00:1a:2b:3c:4d:5e changed",
        ">>> text = '''Ross McFluff: 834.345.1254 155 Elm Street",  # the re module's phonebook
        ">>> entries = re.split('\\n+', text)\n[['Ross', 'McFluff', '834.345.1254', '155', 'Elm Street'],",
        "0 1 1 2 3 5 8 13 21 34 55 89 144 233 377 610 987 1597",  # a list of numbers
        "-2147483648 to +2147483647",  # an integer limit
        "The maximum supported LocalDate, '+999999999-12-31'.",
        "the current value is '(415) 555-1212'",  # 555: fiction and directory services
        "id = 1234567890123  # plain digit runs in code",
        "timestamp 20240115123000 and 2024-01-15",
        "555-123-4567 has an exchange starting with 1 (not NANP)",
        "short +12 34 and 12-34",
    ],
)
def test_not_pii_is_left_alone(text):
    assert scrub_pii(text) == (text, NONE)


def test_public_ips_only_is_an_option():
    text = "gateway 192.168.0.1, loopback 127.0.0.1, docs 192.0.2.7, mirror 130.89.148.77\n14.5.4.4. Bugs"
    assert scrub_pii(text)[1]["ip_address"] == 1
    scrubbed, counts = scrub_pii(text, public_ips_only=False)
    assert counts["ip_address"] == 4 and scrubbed.endswith("14.5.4.4. Bugs")  # never a section number


def test_is_public_ip():
    from crawl2serve.assets.corpus.pii import is_public_ip

    for ip in ("130.89.148.77", "8.8.8.8", "2001:67c:2564:a119::77", "::ffff:129.144.52.38"):
        assert is_public_ip(ip), ip
    for ip in (
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.1.1",
        "100.64.0.1",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
        "198.18.0.1",
        "224.0.0.251",
        "240.0.0.1",
        "255.255.255.255",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "ff02::1",
        "fc00::1",
        "2001:db8::1",
        "::ffff:192.168.0.1",
        "64:ff9b:1::1",
        "5aef:2b::8",
    ):
        assert not is_public_ip(ip), ip


def test_counts_each_kind():
    text = (
        "Write to ops@falcot.com or dev@falcot.com.\n"
        "Hosts 130.89.148.77 and 2001:67c:2564:a119::77 answer; call +1 415 723 2671.\n"
        "Nothing else: 3.11.7, 192.168.0.1, ops@example.org."
    )
    scrubbed, counts = scrub_pii(text)
    assert counts == {"email": 2, "ip_address": 2, "phone": 1}
    assert scrubbed == (
        "Write to <EMAIL> or <EMAIL>.\nHosts <IP_ADDRESS> and <IP_ADDRESS> answer; call <PHONE>.\n"
        "Nothing else: 3.11.7, 192.168.0.1, ops@example.org."
    )


def test_windowed_scan_equals_whole_text_patterns():
    """The patterns run only around numpy-found hints; the result must equal running them over the
    whole text (context rules included)."""
    from crawl2serve.assets.corpus.pii import pii_spans

    pieces = [
        "john@falcot.com",
        "ops@example.org",
        "@property",
        "130.89.148.77",
        "192.168.1.10",
        "3.11.7",
        "1.2.3.4.5",
        "14.5.4.4.",
        "Section",
        "version",
        "fe80::1",
        "2001:67c:2564:a119::77",
        "std::vector",
        "x[1::2]",
        "+44 20 7946 0958",
        "(415) 723-2671",
        "415-555-2671",
        "1234567890123",
        "word",
        "42",
        ".",
        ":",
        "::",
        "+",
        "-",
        "9999",
        "::ffff:129.144.52.38",
        ">>>",
        "\n",
        "\xa0",
        "git@salsa.debian.org:x",
        "Create",
    ]
    rng = random.Random(11)
    for _ in range(2000):
        text = "".join(rng.choice(pieces) + rng.choice([" ", "\n", "", ", "]) for _ in range(rng.randint(1, 10)))
        for public in (True, False):
            assert pii_spans(text, public_ips_only=public) == pii_spans(text, public_ips_only=public, windowed=False), (
                text
            )
