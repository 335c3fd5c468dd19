"""The gateway app for ``uvicorn --workers N`` (each worker imports this module): its configuration file is
named by ``CRAWL2SERVE_GATEWAY_CONFIG`` (``python -m serving gateway`` sets it)."""

import os

from .app import create_app
from .settings import GatewaySettings

app = create_app(GatewaySettings.load(os.environ["CRAWL2SERVE_GATEWAY_CONFIG"]))
