"""`python -m gateway`: reads PIXELSHOP_GATEWAY_* and serves until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import sys

from google.protobuf.message import DecodeError

from gateway.routes import RouteError
from gateway.server import serve
from gateway.settings import GatewaySettings, SettingsError
from runtime.logs import configure_logging
from runtime.loop import run

logger = logging.getLogger("gateway")


def main() -> int:
    configure_logging("gateway")  # so that a bad setting is reported as JSON too
    try:
        settings = GatewaySettings.from_env()
        configure_logging("gateway", settings.log_level, settings.log_json)
        run(serve(settings))
    except (SettingsError, RouteError) as error:
        logger.error("cannot start: %s", error)
        return 2
    except DecodeError as error:
        logger.error("cannot start: the descriptor set does not parse: %s", error)
        return 2
    except OSError as error:  # e.g. the port is taken
        logger.error("cannot start: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
