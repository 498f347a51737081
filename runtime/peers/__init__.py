"""Typed clients for calling other services through their generated stubs."""
