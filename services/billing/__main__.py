"""`python -m services.billing` serves; `sweep` and `set-tier` operate on the same database."""

from services.billing.server import main

raise SystemExit(main())
