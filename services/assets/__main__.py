"""`python -m services.assets` serves; `python -m services.assets sweep` sweeps once."""

from services.assets.server import main

raise SystemExit(main())
