"""Read-only HTTP access to the hourly drift reports: ``GET /reports/drift/<hour>`` on the gateway.

Why the gateway and not a ``file://`` link or an MLflow artifact: a browser refuses ``file://`` links from the
Dagster UI's http page; the MLflow UI is not running unless someone starts ``mlflow ui`` by hand, and an MLflow
run per monitored hour would bury the training runs of the experiment. The gateway is the HTTP server that is
always up where there is traffic to report on (the reports describe its own inference log), and it already
serves other read-only operator endpoints (``/metrics``, ``/ready``).

Only ``{reports_dir}/<hour>/report.html`` is ever served, for an ``<hour>`` that parses as an hourly partition
key (``2026-11-23-06:00``), so no request can name any other file.
"""

from datetime import datetime
from pathlib import Path

DRIFT_ROUTE = "/reports/drift/{hour}"
REPORT_FILE = "report.html"
HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"  # the monitoring assets' hourly partition keys


def drift_report_path(hour: str) -> str:
    """The URL path of an hour's drift report (``hour``: a monitoring partition key)."""
    _check_hour(hour)
    return DRIFT_ROUTE.format(hour=hour)


def drift_report_file(reports_dir: str, hour: str) -> Path | None:
    """The report file of ``hour`` under ``reports_dir``, or None when it does not exist; ValueError when
    ``hour`` is not an hourly partition key."""
    _check_hour(hour)
    path = Path(reports_dir) / hour / REPORT_FILE
    return path if path.is_file() else None


def _check_hour(hour: str) -> None:
    try:
        parsed = datetime.strptime(hour, HOUR_KEY_FORMAT)
    except ValueError:
        parsed = None
    if parsed is None or parsed.minute or parsed.strftime(HOUR_KEY_FORMAT) != hour:
        raise ValueError(f"hour={hour!r}: expected an hourly partition key such as 2026-11-23-06:00")
