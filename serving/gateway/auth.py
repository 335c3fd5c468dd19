"""API keys for the gateway: stored only as SHA-256 hashes in a JSON file, each mapped to a tenant.

File layout (``keys.json``)::

    {"keys": {"<sha256 hex of the key>": {"key_id": "k_…", "tenant": "acme", "tier": "pro",
                                          "created": "2025-01-01T00:00:00+00:00"}}}

The plaintext key is shown once, by :meth:`KeyStore.add`, and never written anywhere. Every write
replaces the file atomically (temporary file in the same directory + ``os.replace``), so a running
gateway never reads a half-written file; it notices a new file (mtime, inode or size changed) at most
one ``reload_interval_s`` after the CLI wrote it.
"""

import fcntl
import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .logstore import fsync_dir

log = logging.getLogger(__name__)

KEY_PREFIX = "c2s-"


def generate_key() -> str:
    """A new random API key: ``c2s-`` + 32 random bytes, URL-safe base64 (256 bits of entropy)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """SHA-256 hex digest of an API key: the only form in which keys are stored.

    Keys are high-entropy random tokens (256 bits), not human passwords, so there is nothing for a
    dictionary or brute-force attack to work with: an unsalted fast hash is the standard choice (a slow
    salted KDF would only add latency to every request, and salting would rule out lookup by hash).
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_bearer(header_value: str | None) -> str | None:
    """The token in an ``Authorization: Bearer <key>`` header value, or None if absent or malformed."""
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


@dataclass(frozen=True)
class ApiKey:
    """What a key resolves to. ``tier`` is only the fallback when the feature store has no tier."""

    key_id: str
    tenant: str
    tier: str = "free"


class KeyStore:
    """Hashed API keys in a JSON file, reloaded when the file changes (checked at most once a second)."""

    def __init__(
        self, path: str | os.PathLike[str], clock: Callable[[], float] = time.monotonic, reload_interval_s: float = 1.0
    ):
        self.path = Path(path)
        self._clock = clock
        self._reload_interval_s = reload_interval_s
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, str]] = {}
        self._signature: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], clock: Callable[[], float] = time.monotonic, reload_interval_s: float = 1.0
    ) -> "KeyStore":
        """Open the store at ``path`` (a missing file is an empty store; a malformed one is a ValueError)."""
        store = cls(path, clock=clock, reload_interval_s=reload_interval_s)
        with store._lock:
            store._reload(strict=True)
        return store

    # -- reads ----------------------------------------------------------------------------------
    def lookup(self, key: str) -> ApiKey | None:
        """The ApiKey for a plaintext key, or None if unknown or revoked.

        No constant-time comparison is needed: the key is hashed first and looked up by its digest in a
        dict, so any timing difference depends on the SHA-256 digest, which tells an attacker nothing
        about which key would produce a matching digest.
        """
        with self._lock:
            self._maybe_reload()
            entry = self._entries.get(hash_key(key))
        return _api_key(entry) if entry is not None else None

    def keys(self) -> list[ApiKey]:
        """Every active key (no secrets: ids, tenants and tiers only), sorted by tenant then key id."""
        with self._lock:
            self._maybe_reload()
            keys = [_api_key(e) for e in self._entries.values()]
        return sorted(keys, key=lambda k: (k.tenant, k.key_id))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # -- writes ---------------------------------------------------------------------------------
    def add(self, tenant: str, tier: str = "free") -> tuple[str, ApiKey]:
        """Create a key for ``tenant``: returns (plaintext key, ApiKey); only the hash is persisted."""
        if not tenant or not tenant.strip():
            raise ValueError("tenant must be a non-empty string")
        if not tier or not tier.strip():
            raise ValueError("tier must be a non-empty string")
        key = generate_key()
        api_key = ApiKey(key_id="k_" + secrets.token_hex(6), tenant=tenant, tier=tier)
        entry = {
            "key_id": api_key.key_id,
            "tenant": tenant,
            "tier": tier,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with self._locked_for_write():
            self._entries[hash_key(key)] = entry
            self._write()
        return key, api_key

    def revoke(self, key_id: str) -> bool:
        """Remove the key with this id; False if there was none."""
        with self._locked_for_write():
            hashes = [h for h, e in self._entries.items() if e.get("key_id") == key_id]
            for h in hashes:
                del self._entries[h]
            if hashes:
                self._write()
        return bool(hashes)

    # -- internals ------------------------------------------------------------------------------
    @contextmanager
    def _locked_for_write(self) -> Iterator[None]:
        """Thread lock + an exclusive flock on ``<path>.lock`` (the CLI and a gateway may both write),
        with the entries freshly re-read from disk so no concurrent change is lost."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                self._reload(strict=True)
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._checked_at < self._reload_interval_s:
            return
        self._checked_at = now
        self._reload(strict=False)

    def _reload(self, strict: bool) -> None:
        """Re-read the file if its signature changed; non-strict keeps the last good keys on bad JSON."""
        signature = _signature(self.path)
        if signature == self._signature:
            return
        try:
            entries = _read_entries(self.path) if signature is not None else {}
        except ValueError:
            if strict:
                raise
            log.exception("keeping the previous API keys: %s is malformed", self.path)
            return
        self._entries, self._signature = entries, signature

    def _write(self) -> None:
        """Atomically replace the file with the current entries (tmp file in the same dir + os.replace)."""
        data = json.dumps({"keys": self._entries}, indent=2, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)  # make the rename itself durable
        self._signature = _signature(self.path)


def _signature(path: Path) -> tuple[int, int, int] | None:
    """(mtime_ns, inode, size) of the file, or None if missing: an atomic replace changes the inode
    even where the filesystem's mtime resolution is too coarse to tell two writes apart."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


def _read_entries(path: Path) -> dict[str, dict[str, str]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"API key file {path} is not valid JSON: {e}") from e
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, dict):
        raise ValueError(f"API key file {path} has no 'keys' object")
    for digest, entry in keys.items():
        if not isinstance(entry, dict) or not entry.get("key_id") or not entry.get("tenant"):
            raise ValueError(f"API key file {path}: entry {digest[:12]}… lacks key_id or tenant")
    return keys


def _api_key(entry: dict[str, str]) -> ApiKey:
    return ApiKey(key_id=entry["key_id"], tenant=entry["tenant"], tier=entry.get("tier") or "free")
