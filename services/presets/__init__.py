"""The presets service: system and community presets, likes, forks (schema `presets`)."""
