from runtime.migrations import run_migrations
from services.projects.models import metadata

run_migrations(metadata)
