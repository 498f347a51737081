"""Alembic for one service, as `make run` configures it.

    python -m tools.migrate identity revision -m "add avatars"   # autogenerate a revision
    python -m tools.migrate identity upgrade [head]
    python -m tools.migrate identity downgrade <revision>
    python -m tools.migrate identity current | history

Runs against PIXELSHOP_DATABASE_URL (an admin URL) or the embedded cluster under
.pixelshop/. Autogenerate compares the service's models with its own schema only.
"""

from __future__ import annotations

import argparse
import os

from alembic import command

from runtime.migrations import alembic_config
from tools.provision import ALL_SERVICES, embedded_admin_url, provision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("service", choices=ALL_SERVICES)
    parser.add_argument(
        "action", choices=("revision", "upgrade", "downgrade", "current", "history")
    )
    parser.add_argument("revision_id", nargs="?", default="head")
    parser.add_argument("-m", "--message", default="change")
    options = parser.parse_args(argv)
    admin_url = os.environ.get("PIXELSHOP_DATABASE_URL") or embedded_admin_url()
    config = alembic_config(options.service, admin_url)
    if options.action == "revision":
        provision(admin_url, [options.service])  # autogenerate compares with the migrated head
        command.revision(config, message=options.message, autogenerate=True)
    elif options.action == "upgrade":
        command.upgrade(config, options.revision_id)
    elif options.action == "downgrade":
        command.downgrade(config, options.revision_id)
    elif options.action == "current":
        command.current(config, verbose=True)
    else:
        command.history(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
