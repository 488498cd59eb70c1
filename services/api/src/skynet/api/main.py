"""``skynet-api``: settings built once, logging with every secret redacted, then uvicorn.

uvicorn's own access log is off: it prints query strings, and the event stream accepts
``?token=``. The app logs method, path and status instead.
"""

from __future__ import annotations

import sys

import uvicorn

from skynet.api.app import create_app
from skynet.api.settings import ApiSettings
from skynet.common.errors import ConfigError
from skynet.common.logs import setup_logging
from skynet.common.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(ApiSettings)
    except ConfigError as exc:
        print(f"skynet-api: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format, secrets=settings.secrets())
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    return 0
