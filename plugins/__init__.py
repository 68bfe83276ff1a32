"""Builtin strategy and processor plugins, one module each, registered like third-party plugins."""
