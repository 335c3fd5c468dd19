"""API keys: generation, hashing, the JSON key store (atomic writes, hash-only storage, reload) and
Bearer parsing."""

import hashlib
import json
import os
import re
import threading

import pytest

import crawl2serve.serving.gateway.auth as auth
from crawl2serve.serving.gateway.auth import ApiKey, KeyStore, generate_key, hash_key, parse_bearer


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_generate_key_format_and_uniqueness():
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert re.fullmatch(r"c2s-[A-Za-z0-9_-]{43}", key), key


def test_hash_key_is_sha256_hex():
    assert hash_key("c2s-abc") == hashlib.sha256(b"c2s-abc").hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key(generate_key()))
    assert hash_key("a") != hash_key("b")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("Bearer c2s-abc", "c2s-abc"),
        ("bearer c2s-abc", "c2s-abc"),
        ("BEARER   c2s-abc  ", "c2s-abc"),
        ("  Bearer c2s-abc", "c2s-abc"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("c2s-abc", None),
        ("Bearer two tokens", None),
    ],
)
def test_parse_bearer(value, expected):
    assert parse_bearer(value) == expected


def test_missing_file_is_an_empty_store(tmp_path):
    store = KeyStore.load(tmp_path / "nope" / "keys.json")
    assert len(store) == 0
    assert store.lookup("c2s-anything") is None
    assert store.keys() == []


def test_add_then_lookup(tmp_path):
    store = KeyStore.load(tmp_path / "keys.json")
    key, api_key = store.add("acme", tier="pro")
    assert key.startswith("c2s-")
    assert api_key.tenant == "acme" and api_key.tier == "pro" and api_key.key_id.startswith("k_")
    assert store.lookup(key) == api_key
    assert store.lookup(key + "x") is None
    assert store.lookup("") is None


def test_default_tier_is_free(tmp_path):
    store = KeyStore.load(tmp_path / "keys.json")
    key, api_key = store.add("acme")
    assert api_key.tier == "free"
    assert store.lookup(key).tier == "free"


def test_only_the_hash_is_persisted(tmp_path):
    path = tmp_path / "keys.json"
    key, api_key = KeyStore.load(path).add("acme", "enterprise")
    text = path.read_text()
    assert key not in text
    assert key[4:] not in text  # not even without the prefix
    doc = json.loads(text)
    entry = doc["keys"][hash_key(key)]
    assert entry["key_id"] == api_key.key_id
    assert entry["tenant"] == "acme" and entry["tier"] == "enterprise"
    assert entry["created"].endswith("+00:00")
    # a fresh store reading the same file resolves the key
    assert KeyStore.load(path).lookup(key) == api_key


def test_write_is_atomic_no_temp_files_left(tmp_path):
    path = tmp_path / "keys.json"
    store = KeyStore.load(path)
    inode_before = None
    for i in range(5):
        store.add(f"t{i}")
        inode = path.stat().st_ino
        assert inode != inode_before  # replaced, not rewritten in place
        inode_before = inode
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("keys.json", "keys.json.lock")]
    assert leftovers == []
    assert len(json.loads(path.read_text())["keys"]) == 5


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "keys.json"
    store = KeyStore.load(path)
    key, _ = store.add("acme")
    before = path.read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.add("other")
    monkeypatch.undo()
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json", "keys.json.lock"]


def test_revoke(tmp_path):
    store = KeyStore.load(tmp_path / "keys.json")
    key1, k1 = store.add("acme")
    key2, k2 = store.add("acme")
    assert store.revoke(k1.key_id) is True
    assert store.lookup(key1) is None
    assert store.lookup(key2) == k2
    assert store.revoke(k1.key_id) is False
    assert store.revoke("k_unknown") is False
    assert KeyStore.load(tmp_path / "keys.json").lookup(key1) is None


def test_running_store_picks_up_keys_added_elsewhere(tmp_path):
    """A gateway's store sees a key the CLI added, once the reload interval has passed."""
    path = tmp_path / "keys.json"
    clock = FakeClock()
    gateway = KeyStore.load(path, clock=clock)
    assert gateway.lookup("c2s-x") is None  # first check happens now

    key, api_key = KeyStore.load(path).add("acme", "pro")  # the CLI, another store instance
    clock.t += 0.5
    assert gateway.lookup(key) is None  # checked at most once per second
    clock.t += 0.6
    assert gateway.lookup(key) == api_key


def test_running_store_picks_up_revocations_and_deletion(tmp_path):
    path = tmp_path / "keys.json"
    clock = FakeClock()
    cli = KeyStore.load(path)
    key, api_key = cli.add("acme")
    gateway = KeyStore.load(path, clock=clock)
    assert gateway.lookup(key) == api_key

    cli.revoke(api_key.key_id)
    clock.t += 1.0
    assert gateway.lookup(key) is None

    key2, _ = cli.add("acme")
    clock.t += 1.0
    assert gateway.lookup(key2) is not None
    path.unlink()
    clock.t += 1.0
    assert gateway.lookup(key2) is None


def test_stat_is_not_called_more_than_once_per_interval(tmp_path, monkeypatch):
    path = tmp_path / "keys.json"
    clock = FakeClock()
    store = KeyStore.load(path, clock=clock)
    key, _ = store.add("acme")
    calls = []
    real = auth._signature
    monkeypatch.setattr(auth, "_signature", lambda p: calls.append(p) or real(p))
    clock.t += 1.0
    for _ in range(100):
        assert store.lookup(key) is not None
    assert len(calls) == 1


def test_malformed_file(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        KeyStore.load(path)
    path.write_text('{"something": 1}')
    with pytest.raises(ValueError, match="no 'keys' object"):
        KeyStore.load(path)
    path.write_text('{"keys": {"abc": {"tenant": "x"}}}')
    with pytest.raises(ValueError, match="lacks key_id or tenant"):
        KeyStore.load(path)


def test_running_store_keeps_last_good_keys_when_file_turns_bad(tmp_path):
    path = tmp_path / "keys.json"
    clock = FakeClock()
    store = KeyStore.load(path, clock=clock)
    key, api_key = store.add("acme")
    path.write_text("{oops")  # a hand edit gone wrong
    clock.t += 1.0
    assert store.lookup(key) == api_key


def test_add_validates_input(tmp_path):
    store = KeyStore.load(tmp_path / "keys.json")
    with pytest.raises(ValueError, match="tenant"):
        store.add("")
    with pytest.raises(ValueError, match="tier"):
        store.add("acme", tier=" ")


def test_two_writers_lose_nothing(tmp_path):
    """Two stores (a gateway and the CLI) adding concurrently: every key survives."""
    path = tmp_path / "keys.json"
    stores = [KeyStore.load(path), KeyStore.load(path)]
    added: list[tuple[str, ApiKey]] = []
    lock = threading.Lock()

    def work(store: KeyStore) -> None:
        for _ in range(20):
            pair = store.add("acme")
            with lock:
                added.append(pair)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = KeyStore.load(path)
    assert len(final) == 40
    for key, api_key in added:
        assert final.lookup(key) == api_key


def test_keys_lists_without_secrets(tmp_path):
    store = KeyStore.load(tmp_path / "keys.json")
    _, b = store.add("beta")
    _, a = store.add("alpha", "pro")
    assert store.keys() == [a, b]
