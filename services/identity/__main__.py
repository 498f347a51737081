"""`python -m services.identity [serve | set-tier | rotate-signing-key | send-mail]`;
the commands live in server.main (`--help` lists them)."""

from services.identity.server import main

if __name__ == "__main__":
    raise SystemExit(main())
