"""Lineage facts recorded with models: the code's git commit. (Upstream data versions come with each input's
handle, resources/folders.py, not from the instance's event log by asset name.)"""

import subprocess

from crawl2serve.resources.storage import REPO_ROOT


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
