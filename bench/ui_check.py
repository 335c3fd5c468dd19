"""Headless-browser check of the Dagster UI for crawl2serve.

    .venv/bin/python bench/ui_check.py --out /tmp/ui-out
    .venv/bin/python bench/ui_check.py --out /tmp/ui-out --dagster-home dagster_home   # after ./dev.sh main
    CHROMIUM=/opt/chrome/chrome .venv/bin/python bench/ui_check.py --out /tmp/ui-out --checks-asset raw_crawl

What it checks, and why: unit tests load ``crawl2serve.definitions:defs`` in-process, but nobody looks at
what ``dg dev`` actually serves. This script starts ``dg dev`` exactly as a
developer would (from the repo root, on a free loopback port, with a throw-away ``DAGSTER_HOME``
holding a copy of ``dagster_home/dagster.yaml``, so telemetry stays off and the real instance is
untouched), then:

1. asks the webserver's GraphQL API (``POST /graphql``) for the inventory: every asset node (key,
   group, kinds, partitioned or not, its asset checks and whether they block), every job, schedule
   and sensor with its status. It prints a table and writes ``DIR/ui_inventory.json``;
2. renders three pages with headless Chromium (``--screenshot`` plus ``--dump-dom`` in one call,
   with a virtual-time budget so the React app finishes its GraphQL round trips first):
   ``/asset-groups?expanded=<every group>`` (the global asset lineage graph, every group expanded),
   ``/assets/<asset>?view=checks`` (one asset's checks tab, ``model_evaluation`` by default) and
   ``/automation`` (schedules and sensors). Each PNG goes to DIR, and the rendered DOM is searched
   for what the inventory says must be on that page (asset names, check names, schedule and sensor
   names), so a blank or still-loading screenshot fails the check instead of passing silently.

3. with ``--dagster-home`` (an instance that has run ``./dev.sh main``; it is used, never deleted): the
   page of each asset in ``METADATA_PAGES`` at its newest partition, which must show that materialization's
   typed tables, column schema and MLflow links, and then the drift report's ``report_url`` opened in the same
   browser (served over HTTP by the gateway, which must still be running): Evidently's HTML must render.

Exit status: 0 when every expected asset (``EXPECTED_ASSETS``) is served, the assets that have checks
report them, and every screenshot shows what it should; 1 when the inventory is short; 2 when only a
screenshot is; 3 when Chromium is missing, ``dagster dev`` never came up, or the code location failed
to load (the Python error is printed). The script installs nothing: it uses ``$CHROMIUM`` or
``/usr/bin/chromium`` (Debian: ``apt-get install -y chromium``).

Stopping ``dagster dev`` reliably needs care, hence the process-group handling:

* ``dagster dev`` is a tree (the dev process, the webserver, the daemon, a code server and its gRPC
  server). It runs in its own session (``start_new_session=True``) so the whole tree is one process
  group that can be signalled at once, apart from this script's own group.
* Dagster maps SIGTERM onto *whatever the SIGINT handler is* (``setup_interrupt_handlers``). A
  process started in the background by a non-interactive shell (``cmd &`` in a script or CI step)
  inherits SIGINT as SIG_IGN, so such a ``dagster dev`` ignores SIGINT *and* SIGTERM and runs until
  killed. The child therefore gets SIGINT reset to SIG_DFL before exec; then SIGTERM to the group
  shuts everything down cleanly in ~3-5 s. If anything in the group is still alive 20 s later, the
  group gets SIGKILL, and the temporary sockets and workspace file that the killed processes could
  not remove are deleted.
* The stop runs in a ``finally``, so an exception or Ctrl-C here never leaves a webserver behind.

The "Join the Dagster community" dialog, which the UI shows on 127.0.0.1 to a fresh instance and
which would cover every screenshot, is pre-dismissed by writing ``.nux/nux.yaml`` into the temporary
``DAGSTER_HOME`` (that file is how Dagster records the dialog was seen).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The lineage the UI must show at least: the main chain, raw crawl to deployment.
EXPECTED_ASSETS = [
    "raw_crawl",
    "extracted_pages",
    "clean_documents",
    "deduplicated_documents",
    "document_features",
    "feast_registry",
    "feast_online_store",
    "tokenizer",
    "base_model",
    "training_dataset",
    "lora_adapter",
    "model_evaluation",
    "registered_model",
    "sglang_deployment",
]

ENV = {
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
}

STOP_GRACE_S = 20.0
CHROMIUM_TIMEOUT_S = 60.0  # per page, on top of the virtual-time budget (a page takes ~5 s)

INVENTORY_QUERY = """
query UiCheckInventory {
  assetNodes {
    assetKey { path }
    groupName
    kinds
    isPartitioned
    hasAssetChecks
    assetChecksOrError {
      __typename
      ... on AssetChecks { checks { name blocking } }
    }
  }
  workspaceOrError {
    __typename
    ... on PythonError { message }
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            name
            repositories {
              name
              jobs { name isAssetJob }
              schedules { name cronSchedule pipelineName executionTimezone scheduleState { status } }
              sensors { name sensorType minIntervalSeconds sensorState { status } }
            }
          }
        }
      }
    }
  }
}
"""

LOAD_STATUS_QUERY = """
query UiCheckLoadStatus {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
}
"""


class SetupError(Exception):
    """Chromium missing or dagster dev not serving: nothing to check."""


# --------------------------------------------------------------------------------------- dagster dev


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset_sigint() -> None:
    # Runs in the child before exec: see the module docstring (SIGTERM follows SIGINT in Dagster).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (zombies would fool ``killpg(pgid, 0)``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _temp_paths_of(pids: list[int]) -> set[Path]:
    """The ``--socket``/``--workspace`` temp paths on these processes' command lines."""
    tmp = Path(tempfile.gettempdir())
    paths: set[Path] = set()
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for flag, value in zip(argv, argv[1:]):
            if flag in ("--socket", "--workspace"):
                p = Path(value)
                p = p.parent if flag == "--workspace" else p
                if p.parent == tmp and p.name.startswith("tmp"):
                    paths.add(p)
    return paths


class DagsterDev:
    """``dagster dev`` in its own process group, on a temporary DAGSTER_HOME."""

    def __init__(self, port: int, log_path: Path, home: Path | None = None):
        self.instance = home  # an existing instance (its runs and materializations), else a throw-away one
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.home: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.stop_note = ""

    def start(self) -> None:
        if self.instance is not None:
            self.home = self.instance
        else:
            self.home = Path(tempfile.mkdtemp(prefix="ui-check-dagster-home-"))
            shutil.copy(REPO / "dagster_home" / "dagster.yaml", self.home / "dagster.yaml")
        if not (self.home / ".nux" / "nux.yaml").exists():
            (self.home / ".nux").mkdir(exist_ok=True)
            (self.home / ".nux" / "nux.yaml").write_text("seen: 1\n")
        dg_cli = Path(sys.executable).parent / "dg"
        # what README and dev.sh run: `dg dev` from the project's [tool.dg]
        cmd = [str(dg_cli) if dg_cli.exists() else "dg", "dev", "--host", "127.0.0.1", "--port", str(self.port)]
        env = {**os.environ, **ENV, "DAGSTER_HOME": str(self.home), "VIRTUAL_ENV": str(Path(sys.executable).parents[1])}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_reset_sigint,
            )

    def _log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float) -> tuple[float, float]:
        """Wait for /server_info, then for the code location to be LOADED; returns both delays (s)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        up = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SetupError(f"dagster dev exited with {self.proc.returncode}:\n{self._log_tail()}")
            if up is None:
                try:
                    with urllib.request.urlopen(self.url + "/server_info", timeout=3) as r:
                        json.load(r)
                    up = time.monotonic() - t0
                except (urllib.error.URLError, OSError, ValueError):
                    time.sleep(0.5)
                    continue
            ws = graphql(self.url, LOAD_STATUS_QUERY)["workspaceOrError"]
            entries = ws.get("locationEntries") or []
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e for e in entries if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"]
                if errors:
                    raise SetupError(
                        "code location failed to load: "
                        + "; ".join(f"{e['name']}: {e['locationOrLoadError']['message']}" for e in errors)
                    )
                return up, time.monotonic() - t0
            time.sleep(0.5)
        raise SetupError(f"dagster dev not ready after {timeout:.0f} s:\n{self._log_tail()}")

    def stop(self) -> float:
        """SIGTERM the group, SIGKILL what is left after STOP_GRACE_S; returns the seconds it took."""
        t0 = time.monotonic()
        if self.proc is not None:
            pgid = self.proc.pid  # session leader: its pid is the group id
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            deadline = t0 + STOP_GRACE_S
            while time.monotonic() < deadline:
                if self.proc.poll() is not None and not _live_group_members(pgid):
                    break
                time.sleep(0.2)
            else:
                leftovers = _live_group_members(pgid)
                stray = _temp_paths_of(leftovers)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.proc.wait()
                time.sleep(0.5)
                for p in stray:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                self.stop_note = (
                    f"{len(leftovers)} process(es) ignored SIGTERM for {STOP_GRACE_S:.0f} s: SIGKILLed the group"
                )
        if self.home is not None and self.instance is None:  # never an instance that was handed in
            shutil.rmtree(self.home, ignore_errors=True)
        return time.monotonic() - t0


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(url + "/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        payload = json.load(r)
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL errors: {json.dumps(payload['errors'])[:2000]}")
    return payload["data"]


# ----------------------------------------------------------------------------------------- inventory


def collect_inventory(url: str) -> dict:
    data = graphql(url, INVENTORY_QUERY)
    assets = []
    for node in data["assetNodes"]:
        checks_or_error = node["assetChecksOrError"]
        typename = checks_or_error["__typename"]
        checks_error = None if typename == "AssetChecks" else typename
        assets.append(
            {
                "key": "/".join(node["assetKey"]["path"]),
                "group": node["groupName"],
                "kinds": node["kinds"],
                "partitioned": node["isPartitioned"],
                "has_checks": node["hasAssetChecks"],
                "checks": [
                    {"name": c["name"], "blocking": c["blocking"]} for c in (checks_or_error.get("checks") or [])
                ],
                "checks_error": checks_error,
            }
        )
    assets.sort(key=lambda a: (a["group"], a["key"]))

    jobs, schedules, sensors, locations = [], [], [], []
    ws = data["workspaceOrError"]
    if ws["__typename"] != "Workspace":
        raise RuntimeError(f"workspaceOrError: {ws.get('message')}")
    for entry in ws["locationEntries"]:
        loc = entry["locationOrLoadError"] or {}
        locations.append({"name": entry["name"], "load_status": entry["loadStatus"], "error": loc.get("message")})
        for repo in loc.get("repositories") or []:
            where = {"location": loc["name"], "repository": repo["name"]}
            for j in repo["jobs"]:
                if not j["name"].startswith("__"):  # __ASSET_JOB is Dagster's implicit job
                    jobs.append({"name": j["name"], "asset_job": j["isAssetJob"], **where})
            for s in repo["schedules"]:
                schedules.append(
                    {
                        "name": s["name"],
                        "cron": s["cronSchedule"],
                        "job": s["pipelineName"],
                        "timezone": s["executionTimezone"],
                        "status": s["scheduleState"]["status"],
                        **where,
                    }
                )
            for s in repo["sensors"]:
                sensors.append(
                    {
                        "name": s["name"],
                        "type": s["sensorType"],
                        "min_interval_s": s["minIntervalSeconds"],
                        "status": s["sensorState"]["status"],
                        **where,
                    }
                )
    return {"locations": locations, "assets": assets, "jobs": jobs, "schedules": schedules, "sensors": sensors}


def inventory_problems(inv: dict) -> list[str]:
    problems = []
    keys = {a["key"] for a in inv["assets"]}
    missing = [k for k in EXPECTED_ASSETS if k not in keys]
    if missing:
        problems.append(f"assets missing from the UI: {', '.join(missing)}")
    with_checks = [a for a in inv["assets"] if a["checks"]]
    if not with_checks:
        problems.append("no asset reports any asset check")
    for a in inv["assets"]:
        if a["checks_error"]:
            problems.append(f"{a['key']}: assetChecksOrError is {a['checks_error']}")
        elif a["has_checks"] != bool(a["checks"]):
            problems.append(f"{a['key']}: hasAssetChecks={a['has_checks']} but {len(a['checks'])} checks listed")
    return problems


def print_inventory(inv: dict) -> None:
    rows = [("asset", "group", "kinds", "part.", "checks")]
    for a in inv["assets"]:
        checks = ", ".join(c["name"] + ("" if c["blocking"] else " (warn)") for c in a["checks"])
        rows.append(
            (
                a["key"],
                a["group"],
                ",".join(a["kinds"]),
                "yes" if a["partitioned"] else "",
                f"{len(a['checks'])}: {checks}" if a["checks"] else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
        if i == 0:
            print("-" * (sum(widths) + 8 + len("checks")))
    n_checks = sum(len(a["checks"]) for a in inv["assets"])
    print(
        f"{len(inv['assets'])} assets in {len({a['group'] for a in inv['assets']})} groups, "
        f"{n_checks} checks on {sum(1 for a in inv['assets'] if a['checks'])} assets"
    )
    print()
    for j in inv["jobs"]:
        print(f"job       {j['name']:<24} {'asset job' if j['asset_job'] else 'op job'}")
    for s in inv["schedules"]:
        print(f"schedule  {s['name']:<24} {s['status']:<8} {s['cron']} ({s['timezone'] or 'UTC'}) -> {s['job']}")
    for s in inv["sensors"]:
        print(f"sensor    {s['name']:<24} {s['status']:<8} {s['type']}, every {s['min_interval_s']} s")
    if not inv["schedules"] and not inv["sensors"]:
        print("(no schedules or sensors)")


# --------------------------------------------------------------------------------------- screenshots


def find_chromium() -> Path:
    path = Path(os.environ.get("CHROMIUM") or "/usr/bin/chromium")
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise SetupError(
            f"no Chromium at {path}: install it (Debian: apt-get install -y chromium) "
            "or point $CHROMIUM at a chromium/chrome binary"
        )
    return path


def lineage_url(inv: dict) -> str:
    # The graph keeps groups collapsed unless ?expanded= lists their ids. The id format depends on a
    # UI feature flag (groups per code location or not): pass both forms, the unused one is ignored.
    ids = []
    for group in sorted({a["group"] for a in inv["assets"]}):
        ids.append(f"global@global:{group}")
        ids.extend(f"{j['repository']}@{j['location']}:{group}" for j in inv["jobs"][:1])
    return "/asset-groups?" + urllib.parse.urlencode({"expanded": ",".join(ids)})


_TEXT = re.compile(r">([^<>]+)<")


def visible_texts(dom: str) -> set[str]:
    return {t.strip() for t in _TEXT.findall(dom) if t.strip()}


def shown(name: str, texts: set[str]) -> bool:
    """``name`` appears as a text node, possibly middle-truncated by the graph (``dedupli…_documents``)."""
    if name in texts:
        return True
    for t in texts:
        if "…" in t:
            head, _, tail = t.partition("…")
            if head and name.startswith(head) and name.endswith(tail) and len(head) + len(tail) < len(name):
                return True
    return False


def screenshot(chromium: Path, url: str, png: Path, window: str, budget_ms: int, log) -> tuple[str, float, bool]:
    """One Chromium run: PNG to ``png``; returns the rendered DOM, the seconds taken and whether it
    timed out. A fresh profile each time; its own process group, so a hung browser dies whole."""
    profile = tempfile.mkdtemp(prefix="ui-check-chromium-")
    cmd = [
        str(chromium),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        f"--virtual-time-budget={budget_ms}",
        f"--screenshot={png}",
        "--dump-dom",
        url,
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    timed_out = False
    try:
        dom, _ = proc.communicate(timeout=CHROMIUM_TIMEOUT_S + budget_ms / 1000)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        dom, _ = proc.communicate()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return dom.decode(errors="replace"), time.monotonic() - t0, timed_out


def take_screenshots(
    chromium: Path, base: str, inv: dict, out: Path, checks_asset: str, window: str, budget_ms: int
) -> list[dict]:
    by_key = {a["key"]: a for a in inv["assets"]}
    if checks_asset not in by_key or not by_key[checks_asset]["checks"]:
        fallback = next((a["key"] for a in inv["assets"] if a["checks"]), None)
        print(f"note: {checks_asset!r} has no checks in the inventory; using {fallback!r}")
        checks_asset = fallback
    automations = [s["name"] for s in inv["schedules"]] + [s["name"] for s in inv["sensors"]]
    pages = [
        ("asset_lineage", lineage_url(inv), [a["key"].split("/")[-1] for a in inv["assets"]]),
        ("automation", "/automation", automations or ["Automation"]),
    ]
    if checks_asset:
        key_path = "/".join(urllib.parse.quote(p) for p in checks_asset.split("/"))
        pages.insert(
            1,
            (
                f"asset_checks_{checks_asset.replace('/', '_')}",
                f"/assets/{key_path}?view=checks",
                [c["name"] for c in by_key[checks_asset]["checks"]],
            ),
        )
    shots = []
    with open(out / "chromium.log", "ab") as log:
        for name, path, expected in pages:
            png = out / f"{name}.png"
            png.unlink(missing_ok=True)
            dom, secs, timed_out = screenshot(chromium, base + path, png, window, budget_ms, log)
            (out / f"{name}.dom.html").write_text(dom)
            texts = visible_texts(dom)
            missing = [e for e in expected if not shown(e, texts)]
            shots.append(
                {
                    "name": name,
                    "url": base + path,
                    "png": str(png),
                    "png_bytes": png.stat().st_size if png.exists() else 0,
                    "seconds": round(secs, 1),
                    "timed_out": timed_out,
                    "expected": expected,
                    "missing": missing,
                }
            )
            status = "ok" if png.exists() and not missing else "TIMEOUT" if timed_out else "FAIL"
            shown_path = path if len(path) < 60 else path.split("?")[0] + "?expanded=<every group>"
            print(
                f"{status:<7} {name:<34} {secs:5.1f} s  {len(expected) - len(missing)}/{len(expected)} "
                f"expected names in the page  {shown_path}"
            )
            if missing:
                print(f"        not on the page: {', '.join(missing)}")
    return shots


# ------------------------------------------------------------------------------- metadata and links

LATEST_METADATA_QUERY = """
query UiCheckLatest($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1) {
        partition
        metadataEntries {
          label
          __typename
          ... on UrlMetadataEntry { url }
          ... on TableMetadataEntry { table { records } }
        }
      }
    }
  }
}
"""

#: asset -> metadata labels its latest materialization must show on its page (the metadata of issue 14)
METADATA_PAGES = {
    "raw_crawl": ["summary", "by_host_status", "dagster/column_schema"],
    "lora_adapter": ["mlflow_run", "loss_curve"],
    "model_evaluation": ["comparison", "candidate_run"],
    "registered_model": ["model_version", "lineage", "metrics"],
    "drift_report": ["verdict", "per_column", "report_url"],
}

#: how a label shows on the asset page when it is not shown by name (the column schema is the "Columns" table)
DOM_TEXT = {"dagster/column_schema": "Column name"}
METADATA_WINDOW = "2400,4200"  # tall enough for the columns and the metadata table below them


def latest_metadata(url: str, asset: str) -> dict:
    """``{"partition": …, "labels": [...], "urls": {label: url}}`` of an asset's latest materialization."""
    data = graphql(url, LATEST_METADATA_QUERY, {"path": asset.split("/")})["assetOrError"]
    mats = data.get("assetMaterializations") or []
    if not mats:
        return {"partition": None, "labels": [], "urls": {}}
    entries = mats[0]["metadataEntries"]
    return {
        "partition": mats[0]["partition"],
        "labels": [e["label"] for e in entries],
        "urls": {e["label"]: e["url"] for e in entries if e.get("url")},
    }


def metadata_screenshots(chromium: Path, base: str, out: Path, window: str, budget_ms: int) -> list[dict]:
    """Each asset's page with its newest materialization's metadata, and the drift report behind its link.

    The asset pages must show the labels in ``METADATA_PAGES`` (the typed tables, column schema and MLflow
    links); the drift report's ``report_url`` is then opened in the same browser: it must answer with
    Evidently's HTML (the gateway serves it; a ``file://`` link would be refused from the UI)."""
    shots = []
    with open(out / "chromium.log", "ab") as log:
        for asset, labels in METADATA_PAGES.items():
            meta = latest_metadata(base, asset)
            missing_meta = [lbl for lbl in labels if lbl not in meta["labels"]]
            query = f"?partition={urllib.parse.quote(meta['partition'])}" if meta["partition"] else ""
            pages = [(f"metadata_{asset}", base + f"/assets/{asset}{query}", labels)]
            if asset == "drift_report" and "report_url" in meta["urls"]:
                pages.append(("drift_report_link", meta["urls"]["report_url"], ["Drift"]))
            for name, url, expected in pages:
                png = out / f"{name}.png"
                png.unlink(missing_ok=True)
                dom, secs, timed_out = screenshot(chromium, url, png, METADATA_WINDOW, budget_ms, log)
                (out / f"{name}.dom.html").write_text(dom)
                if name == "drift_report_link":
                    missing = [] if "evidently" in dom.lower() or "drift" in dom.lower() else expected
                else:
                    missing = missing_meta + [e for e in expected if DOM_TEXT.get(e, e) not in dom]
                shots.append(
                    {
                        "name": name,
                        "url": url,
                        "png": str(png),
                        "seconds": round(secs, 1),
                        "png_bytes": png.stat().st_size if png.exists() else 0,
                        "timed_out": timed_out,
                        "expected": expected,
                        "missing": missing,
                    }
                )
                status = "ok" if png.exists() and not missing else "TIMEOUT" if timed_out else "FAIL"
                print(f"{status:<7} {name:<34} {secs:5.1f} s  {url}")
                if missing:
                    print(f"        not shown: {', '.join(missing)}")
    return shots


# -------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", required=True, type=Path, help="folder for ui_inventory.json and the PNGs")
    ap.add_argument("--port", type=int, default=0, help="webserver port (default: a free one)")
    ap.add_argument("--checks-asset", default="model_evaluation", help="asset whose checks tab to capture")
    ap.add_argument("--window-size", default="2400,1400", help="browser window, W,H")
    ap.add_argument("--budget-ms", type=int, default=20000, help="Chromium --virtual-time-budget per page")
    ap.add_argument("--startup-timeout", type=float, default=180, help="seconds to wait for dagster dev")
    ap.add_argument(
        "--dagster-home",
        type=Path,
        default=None,
        help="an instance with runs (e.g. dagster_home after "
        "./dev.sh main): also capture each asset's newest metadata and open the drift report's link",
    )
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    try:
        chromium = find_chromium()
    except SetupError as e:
        print(f"ui_check: {e}", file=sys.stderr)
        return 3

    dev = DagsterDev(args.port or free_port(), args.out / "dagster_dev.log", args.dagster_home)
    report: dict = {
        "url": dev.url,
        "command": f"dg dev --host 127.0.0.1 --port {dev.port}",
        "expected_assets": EXPECTED_ASSETS,
    }
    code = 0
    try:
        print(f"starting {report['command']} (log: {dev.log_path})")
        dev.start()
        try:
            up, loaded = dev.wait_ready(args.startup_timeout)
        except SetupError as e:
            print(f"ui_check: {e}", file=sys.stderr)
            return 3
        timings["server_info_s"], timings["location_loaded_s"] = round(up, 1), round(loaded, 1)
        with urllib.request.urlopen(dev.url + "/server_info", timeout=10) as r:
            report["server_info"] = json.load(r)
        print(
            f"/server_info after {up:.1f} s, code location loaded after {loaded:.1f} s: "
            f"dagster {report['server_info'].get('dagster_version')}\n"
        )

        t0 = time.monotonic()
        inv = collect_inventory(dev.url)
        timings["graphql_inventory_s"] = round(time.monotonic() - t0, 2)
        report.update(inv)
        print_inventory(inv)
        problems = inventory_problems(inv)

        print(f"\nscreenshots with {chromium} ({args.window_size}, virtual time {args.budget_ms} ms):")
        t0 = time.monotonic()
        shots = take_screenshots(chromium, dev.url, inv, args.out, args.checks_asset, args.window_size, args.budget_ms)
        if args.dagster_home is not None:
            shots += metadata_screenshots(chromium, dev.url, args.out, args.window_size, args.budget_ms)
        timings["screenshots_s"] = round(time.monotonic() - t0, 1)
        report["screenshots"] = shots
        shot_problems = [
            f"screenshot {s['name']}: "
            + (
                "Chromium timed out"
                if s["timed_out"]
                else "no PNG"
                if not s["png_bytes"]
                else f"page lacks {', '.join(s['missing'])}"
            )
            for s in shots
            if not s["png_bytes"] or s["missing"]
        ]
        report["problems"] = problems + shot_problems
        code = 1 if problems else 2 if shot_problems else 0
    finally:
        timings["stop_s"] = round(dev.stop(), 1)
        timings["total_s"] = round(time.monotonic() - t_start, 1)
        report["timings"] = timings
        report["stop"] = dev.stop_note or "clean (SIGTERM to the process group)"
        report["ok"] = code == 0 and "problems" in report
        (args.out / "ui_inventory.json").write_text(json.dumps(report, indent=2) + "\n")

    print(f"\ndagster dev stopped in {timings['stop_s']} s: {report['stop']}")
    print(f"timings: {json.dumps(timings)}")
    n_pages = len(report.get("screenshots", []))
    print(f"wrote {args.out / 'ui_inventory.json'} and the screenshots of {n_pages} pages to {args.out}")
    seen = [k for k in EXPECTED_ASSETS if k in {a["key"] for a in report.get("assets", [])}]
    print(f"expected assets seen: {len(seen)}/{len(EXPECTED_ASSETS)}")
    for p in report.get("problems", []):
        print(f"PROBLEM: {p}")
    print("OK" if code == 0 else f"FAILED (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
