"""`python -m services.billing` serves; `sweep`, `set-tier`, `parked` and `replay-parked`
operate on the same database."""

from services.billing.server import main

raise SystemExit(main())
