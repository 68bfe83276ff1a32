"""Builtin model backends (``torch`` now), registered like third-party plugins."""
