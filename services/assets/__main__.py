"""`python -m services.assets` serves; `sweep` sweeps once; `parked` and `replay-parked`
list and replay parked events."""

from services.assets.server import main

raise SystemExit(main())
