"""The gateway app for ``uvicorn --workers N`` (each worker imports this module): its configuration file is
named by ``CRAWL2SERVE_GATEWAY_CONFIG`` and the shared metrics folder by ``PROMETHEUS_MULTIPROC_DIR``, both set by
``python -m crawl2serve.serving gateway`` before the workers start."""

import os

from .app import create_app
from .settings import GatewaySettings

app = create_app(
    GatewaySettings.load(os.environ["CRAWL2SERVE_GATEWAY_CONFIG"]), metrics_dir=os.environ["PROMETHEUS_MULTIPROC_DIR"]
)
