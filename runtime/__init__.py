"""The shared runtime every Pixelshop service is built on.

Settings, database, gRPC server bootstrap, authentication, errors, logging and the
typed clients services use to call each other. Nothing here knows a service's domain.
"""
