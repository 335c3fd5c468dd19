"""The gateway's read-only drift report route, over real HTTP: what the drift_report asset links to."""

import httpx
import pytest

from crawl2serve.serving.gateway.reports import drift_report_path
from tests.serving.helpers import free_port, start_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports")
    reports = tmp / "drift_report"
    (reports / "2026-11-23-06:00").mkdir(parents=True)
    (reports / "2026-11-23-06:00" / "report.html").write_text("<html><body>drift verdict</body></html>")
    (tmp / "secret.html").write_text("not a report")
    # no engine answers there: the route needs none
    gw = start_gateway(tmp / "gw", [("primary", f"http://127.0.0.1:{free_port()}")], str(tmp), reports_dir=str(reports))
    yield gw
    gw.stop()


def test_an_hours_report_is_served_as_html(gateway):
    response = httpx.get(gateway.url + drift_report_path("2026-11-23-06:00"), timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "drift verdict" in response.text


def test_a_missing_hour_is_404_and_anything_else_400(gateway):
    assert httpx.get(gateway.url + "/reports/drift/2026-11-23-07:00", timeout=10).status_code == 404
    for bad in ("..%2Fsecret.html", "2026-11-23-06:30", "2026-11-23T06", "%2E%2E"):
        response = httpx.get(gateway.url + "/reports/drift/" + bad, timeout=10)
        assert response.status_code in (400, 404) and "not a report" not in response.text, bad
    assert httpx.get(gateway.url + "/reports/drift/2026-11-23-06:30", timeout=10).json()["error"]["code"] == (
        "invalid_request"
    )
    with pytest.raises(ValueError, match="hourly partition key"):
        drift_report_path("2026-11-23")
