"""Process-wide logging: plain lines for humans; access logs are JSON (server.access_log)."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # uvicorn's own access log would print request lines; ours is structured and content-free.
    logging.getLogger("uvicorn.access").disabled = True
