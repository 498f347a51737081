"""`python -m services.projects` serves; `python -m services.projects sweep` sweeps once."""

from services.projects.server import main

raise SystemExit(main())
