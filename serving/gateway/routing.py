"""Which engine model answers a public model name: the routing table the serving asset writes.

``routing.json`` (written atomically by the ``sglang_deployment`` asset)::

    {"model": "crawl2serve",
     "stable": "3", "canary": "4", "canary_share": 0.1,
     "versions": {"3": {"primary": "crawl2serve", "fallback": "/data/.../v3"},
                  "4": {"primary": "crawl2serve:v4", "fallback": "/data/.../v4"},
                  "base": {...}},
     "tokenizers": {"3": "/data/.../v3", "4": "/data/.../v3-merged", "base": ...},
     "updated": "2026-11-23T06:00:00+00:00"}

``versions`` maps a version label to the ``model`` value each engine needs for it; ``tokenizers`` (optional)
the folder of the tokenizer its engines count prompts with (the gateway counts rate-limited tokens with it).
Without that entry, a version's first ``model`` value that is a folder with a ``tokenizer.json`` (the CPU engine's
merged folder) is used; else none is known (:mod:`serving.gateway.tokens` then counts an upper bound). Public names:
``crawl2serve`` (the stable version, or the canary for ``canary_share`` of requests) and
``crawl2serve@<label>`` (one version, pinned).
"""

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_text


class UnknownModel(LookupError):
    pass


@dataclass(frozen=True)
class Route:
    public: str
    version: str
    route: str  # "stable" | "canary" | "pinned"
    models: dict[str, str]  # engine name -> model value
    tokenizer: str | None = None  # the tokenizer folder of this version's engines, if known


def write_routing(path: str, table: dict) -> None:
    write_text(path, json.dumps(table, indent=2))


def read_routing(path: str) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


class Router:
    """Reads ``routing.json`` and re-reads it when it changes (checked at most every ``check_every_s``)."""

    def __init__(self, path: str, model_name: str, check_every_s: float = 0.5, rng=random.random):
        self.path, self.model_name, self.check_every_s, self.rng = path, model_name, check_every_s, rng
        self._table: dict | None = None
        self._mtime = None
        self._checked = 0.0
        self._tokenizers: dict[str, str] = {}

    def table(self) -> dict | None:
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            try:
                mtime = os.stat(self.path).st_mtime_ns
            except FileNotFoundError:
                mtime = None
            if mtime != self._mtime:
                self._table, self._mtime = read_routing(self.path), mtime
                self._tokenizers = _tokenizers(self._table)
        return self._table

    def public_models(self) -> list[str]:
        table = self.table()
        if not table:
            return []
        return [self.model_name, *[f"{self.model_name}@{v}" for v in table["versions"]]]

    def pick(self, requested: str) -> Route:
        table = self.table()
        if not table:
            raise UnknownModel("no model is deployed yet (routing table missing)")
        name, _, pinned = requested.partition("@")
        if name != self.model_name:
            raise UnknownModel(f"model {requested!r} does not exist; available: {', '.join(self.public_models())}")
        if pinned:
            if pinned not in table["versions"]:
                raise UnknownModel(f"model {requested!r} does not exist; available: {', '.join(self.public_models())}")
            return self._route(requested, pinned, "pinned", table)
        canary, share = table.get("canary"), float(table.get("canary_share") or 0.0)
        if canary and canary in table["versions"] and share > 0 and self.rng() < share:
            return self._route(requested, canary, "canary", table)
        return self._route(requested, table["stable"], "stable", table)

    def _route(self, public: str, version: str, route: str, table: dict) -> Route:
        return Route(public, version, route, table["versions"][version], self._tokenizers.get(version))


def _tokenizers(table: dict | None) -> dict[str, str]:
    """version -> tokenizer folder: the table's ``tokenizers``, else a local model folder with a tokenizer."""
    if not table:
        return {}
    found = {v: str(t) for v, t in (table.get("tokenizers") or {}).items() if t}
    for version, models in (table.get("versions") or {}).items():
        if version not in found:
            folder = next((m for m in models.values() if os.path.isfile(os.path.join(str(m), "tokenizer.json"))), None)
            if folder:
                found[version] = folder
    return found
