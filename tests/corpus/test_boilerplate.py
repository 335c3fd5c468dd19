"""Navigation of generated documentation (DocBook, Sphinx, Javadoc) is removed by element; content stays.

Real pages from Debian documentation packages (tests/corpus/fixtures/README.md).
"""

import re
from pathlib import Path

import pytest

from crawl2serve.assets.corpus.extract import extract_html

FIXTURES = Path(__file__).parent / "fixtures"
NAV_CELL = re.compile(r"^(Prev|Next|Up|Home)$")


def extract(name: str):
    return extract_html("http://127.0.0.1:8000/" + name, (FIXTURES / name).read_bytes(), "text/html")


def cells(text: str) -> list[list[str]]:
    """Each line's tab-separated cells, whitespace-normalized (a table row comes out as one line)."""
    return [[" ".join(c.split()) for c in line.split("\t")] for line in text.split("\n")]


def test_docbook_prev_up_home_next_tables_are_removed():
    ex = extract("pg-btree-intro.html")  # PostgreSQL 15: navheader and navfooter tables
    rows = cells(ex.text)
    assert not any(NAV_CELL.match(c) for row in rows for c in row), ex.text[:300]
    assert not any("67.2. Behavior of B-Tree Operator Classes" in " ".join(r) for r in rows)  # footer: next title
    lines = [line for line in ex.text.split("\n") if line.strip()]
    assert " ".join(lines[0].split()) == "67.1. Introduction"  # the heading, once (the header row repeated it)
    assert sum(" ".join(line.split()) == "67.1. Introduction" for line in lines) == 1
    assert "PostgreSQL includes an implementation of the standard btree" in ex.text
    assert lines[-1].startswith("Because each btree operator class imposes a sort order")


def test_docbook_image_navigation_leaves_no_rows():
    # debian-faq (ru): Prev/Next are image links, so the tables left blank rows and a prev/next title row
    ex = extract("faq-ru-kernel.windows-1251.html")
    assert not any(line.count("\t") >= 2 for line in ex.text.split("\n")), repr(ex.text[:200])
    assert "Глава 9. Поддержание обновлений системы Debian" not in " ".join(ex.text.split())  # previous chapter
    assert "Глава 11." not in ex.text  # next chapter
    assert " ".join(ex.text.split()).startswith("Глава 10. Debian и ядро")
    assert "Debian Linux Kernel Handbook" in ex.text


def test_sphinx_relbar_sidebar_footer_and_permalinks_are_removed():
    ex = extract("python-faq-installed.html")
    for nav in (
        "Previous topic",
        "Next topic",
        "This Page",
        "Quick search",
        "Show Source",
        "modules |",
        "Created using Sphinx",
        "Last updated on",
        "¶",
    ):
        assert nav not in ex.text, nav
    assert ex.text.startswith("“Why is Python Installed on my Computer?” FAQ")
    assert "What is Python?" in ex.text and "removing it is not recommended" in ex.text


def test_javadoc_navigation_bars_are_removed():
    ex = extract("javadoc-RandomAccess.html")  # JDK 17: <header><nav> top bar, <footer> legal text
    lines = [" ".join(line.split()).strip("• ") for line in ex.text.split("\n")]
    for nav in (
        "Skip navigation links",
        "Overview",
        "Tree",
        "Deprecated",
        "Help",
        "Summary:",
        "Report a bug or suggest an enhancement",
    ):
        assert nav not in lines, nav
    assert "Interface RandomAccess" in lines
    assert any("Marker interface used by List implementations" in line for line in lines)


OLD_JAVADOC = """<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01 Transitional//EN"><html><head>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8"><title>Widget</title></head><body>
<div class="topNav"><a name="navbar.top"></a><div class="skipNav"><a href="#skip.navbar.top">Skip navigation links</a></div>
<ul class="navList"><li><a href="overview-summary.html">Overview</a></li><li><a href="package-summary.html">Package</a></li>
<li class="navBarCell1Rev">Class</li><li><a href="package-tree.html">Tree</a></li><li><a href="deprecated-list.html">Deprecated</a></li>
<li><a href="index-all.html">Index</a></li><li><a href="help-doc.html">Help</a></li></ul></div>
<div class="subNav"><ul class="navList"><li><a href="Gadget.html">Prev Class</a></li><li><a href="Gizmo.html">Next Class</a></li></ul>
<ul class="navList"><li><a href="index.html?Widget.html" target="_top">Frames</a></li><li><a href="Widget.html" target="_top">No&nbsp;Frames</a></li></ul>
<div>Summary:&nbsp;Nested&nbsp;|&nbsp;Field&nbsp;|&nbsp;Constr&nbsp;|&nbsp;Method</div></div>
<div class="header"><h2 title="Class Widget" class="title">Class Widget</h2></div>
<div class="contentContainer"><div class="description"><div class="block">A widget holds the state of one control on a
form, and it redraws itself whenever that state changes. Widgets are created by the toolkit, never by hand, and they
are released together with their window when the user closes it.</div></div></div>
<div class="bottomNav"><a name="navbar.bottom"></a><ul class="navList"><li><a href="overview-summary.html">Overview</a></li>
<li><a href="package-summary.html">Package</a></li><li class="navBarCell1Rev">Class</li><li><a href="help-doc.html">Help</a></li></ul>
<div class="subNav"><a href="Gadget.html">Prev Class</a> <a href="Gizmo.html">Next Class</a></div></div>
<p class="legalCopy"><small>Copyright 2014 Example Corp.</small></p></body></html>"""


@pytest.mark.parametrize("main_content", [True, False])
def test_javadoc8_style_navigation_bars_are_removed(main_content):
    ex = extract_html("http://127.0.0.1/Widget.html", OLD_JAVADOC.encode(), "text/html", main_content=main_content)
    for nav in ("Skip navigation links", "Overview", "Prev Class", "No Frames", "Summary:", "Help"):
        assert nav not in ex.text, (nav, ex.text)
    assert "A widget holds the state of one control" in ex.text and "Class Widget" in ex.text
