"""`python -m services.presets` serves the presets service until SIGTERM; `parked` and
`replay-parked` list and replay parked events."""

from services.presets.server import main

raise SystemExit(main())
