"""The Pixelshop services; each owns one Postgres schema and talks to the others over gRPC only."""
