"""Small builders for rich Dagster metadata: Markdown tables and histograms."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import dagster as dg
import numpy as np


def md_table(rows: Iterable[Sequence], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ")[:120] for v in row) + " |" for row in rows
    ]
    return "\n".join(lines)


def md_histogram(
    values: Sequence[float], bins: int = 10, lo: float = 0.0, hi: float = 1.0, title: str = "value"
) -> dg.MetadataValue:
    """A text histogram (bin, count, bar) that renders in the Dagster UI as Markdown."""
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins, range=(lo, hi))
    peak = max(int(counts.max()), 1) if len(counts) else 1
    rows = [(f"{edges[i]:.2f}–{edges[i + 1]:.2f}", int(c), "█" * round(30 * c / peak)) for i, c in enumerate(counts)]
    return dg.MetadataValue.md(md_table(rows, (title, "docs", "")))


def md_funnel(steps: Sequence[tuple[str, int, int]]) -> dg.MetadataValue:
    """Rows of (step, count in, count out) as a funnel table with the share dropped at each step."""
    rows = [
        (name, n_in, n_out, n_in - n_out, f"{(n_in - n_out) / n_in:.1%}" if n_in else "-")
        for name, n_in, n_out in steps
    ]
    return dg.MetadataValue.md(md_table(rows, ("step", "in", "out", "dropped", "dropped %")))
