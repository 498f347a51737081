from runtime.migrations import run_migrations
from services.identity.models import metadata

run_migrations(metadata)
