"""The project's alert channel, framework-free: one JSON object per alert appended to
``{data_root}/alerts/_/alerts.jsonl``, and POSTed to the webhook named by ``CRAWL2SERVE_ALERT_WEBHOOK`` when set.

Two senders share it: the ``run_failure_alerts`` sensor (``pipelines/sensors.py``: a failed run) and the
gateway (:mod:`serving.gateway.budgets`: a tenant past 80% of a budget). An alert says what it is about in
``kind`` (``run_failure``, ``budget``).
"""

import json
import os
import urllib.request

WEBHOOK_VAR = "CRAWL2SERVE_ALERT_WEBHOOK"


def post_webhook(url: str, payload: dict, timeout_s: float = 10.0) -> int:
    """POST ``payload`` as JSON to ``url``; the HTTP status (an OSError when it cannot be sent)."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return response.status


def append_alert(path: str | os.PathLike[str], alert: dict) -> None:
    """Append one alert as a JSON line (the folder is made if missing; one write of one line, fsync'ed)."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    line = (json.dumps(alert) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_alerts(path: str | os.PathLike[str]) -> list[dict]:
    """Every complete alert line of ``path`` ([] when it does not exist; a torn or unparsable line is skipped)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    alerts = []
    for line in data.split(b"\n")[:-1]:
        try:
            alerts.append(json.loads(line))
        except ValueError:
            continue
    return alerts
