"""identity: accounts, sessions, access and refresh tokens, signing keys and tiers."""
