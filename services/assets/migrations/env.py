from runtime.migrations import run_migrations
from services.assets.models import metadata

run_migrations(metadata)
