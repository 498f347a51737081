from runtime.migrations import run_migrations
from services.presets.models import metadata

run_migrations(metadata)
