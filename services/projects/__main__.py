"""`python -m services.projects` serves; `sweep` sweeps once; `parked` and `replay-parked`
list and replay parked events."""

from services.projects.server import main

raise SystemExit(main())
