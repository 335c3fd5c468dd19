"""Files written whole or not at all: small state files (routing, engine handles, gateway config), and durable
ones (batch files, state and result chunks) that must also survive a crash once written."""

import os
import secrets
from pathlib import Path


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place: a reader (the gateway
    re-reading its routing table, a later materialization) sees the old file or the new one, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(target)


def write_durable(path: str | os.PathLike, data: bytes) -> None:
    """``data`` at ``path``, whole or not at all, and on disk when this returns: a temporary file beside it,
    fsync'ed, renamed into place, then the folder fsync'ed (so that the rename survives a crash too)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(target)
    fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
