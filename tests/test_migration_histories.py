"""Each service's Alembic history runs both ways and autogenerate sees only its schema."""

from __future__ import annotations

import pathlib
import shutil

import pytest
from alembic import command
from sqlalchemy.engine import make_url

from runtime.migrations import SERVICES_ROOT, alembic_config
from tools.provision import built_services, provision

SERVICES = built_services()


@pytest.fixture(scope="module")
def scratch_db(pg_admin_url: str) -> str:
    """A database of its own: downgrading must not disturb the other tests."""
    url = make_url(pg_admin_url)
    own = url.set(database=f"{url.database}_histories").render_as_string(hide_password=False)
    provision(own)
    return own


@pytest.mark.parametrize("service", SERVICES)
def test_downgrade_to_base_and_upgrade_again(scratch_db: str, service: str) -> None:
    config = alembic_config(service, scratch_db)
    command.downgrade(config, "base")
    command.upgrade(config, "head")


@pytest.mark.parametrize("service", SERVICES)
def test_autogenerate_proposes_nothing_and_never_touches_other_schemas(
    scratch_db: str, service: str, tmp_path: pathlib.Path
) -> None:
    # Autogenerate into a copy of the service's migrations folder, through its real env.py.
    folder = tmp_path / "migrations"
    shutil.copytree(SERVICES_ROOT / service / "migrations", folder)
    config = alembic_config(service, scratch_db)
    config.set_main_option("script_location", str(folder))
    script = command.revision(config, message="probe", autogenerate=True)
    assert script is not None
    assert not isinstance(script, list)
    body = pathlib.Path(script.path).read_text()
    upgrade = body[body.index("def upgrade()") : body.index("def downgrade()")]
    assert "op." not in upgrade, f"{service}: models and migrations differ:\n{upgrade}"
    others = [s for s in SERVICES if s != service]
    assert not any(f"schema='{other}'" in body for other in others)
