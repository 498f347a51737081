"""`python -m services.presets` serves the presets service until SIGTERM."""

from services.presets.server import main

raise SystemExit(main())
