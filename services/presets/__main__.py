"""`python -m services.presets`: serve the presets service until SIGTERM."""

from services.presets.server import main

main()
