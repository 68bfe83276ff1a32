"""Exception types raised by decodekit.

Every error caused by what a user asked for derives from :class:`UserError`; the CLI prints
such errors as one line and exits with status 2. Anything else is a bug (in decodekit or in a
plugin) and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class DecodekitError(Exception):
    """Base class of all decodekit errors."""


class UserError(DecodekitError):
    """An error caused by the user's input: a name, an option, a file or a prompt."""


class UnknownNameError(UserError, ValueError):
    """A strategy, processor, backend or other registered name does not exist.

    Parameters
    ----------
    kind
        What was looked up, e.g. ``"strategy"``.
    name
        The name that was asked for.
    valid
        The names that exist.
    """

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.valid = sorted(valid)
        choices = ", ".join(self.valid) if self.valid else "(none registered)"
        super().__init__(f"unknown {kind} {name!r}; valid {kind} names: {choices}")


class OptionsError(UserError, ValueError):
    """Options given to a strategy, processor or backend failed validation."""


class InputError(UserError, ValueError):
    """A prompt or generation limit is invalid (empty, too long, ids outside the vocabulary...)."""


class ConfigError(UserError):
    """A pipeline file is malformed or holds an invalid value.

    Parameters
    ----------
    message
        What is wrong.
    path
        The file.
    line, column
        1-based position of the offending value, when known.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 column: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
                if column is not None:
                    where += f":{column}"
            where += ": "
        super().__init__(where + message)


class MissingDependencyError(UserError, ImportError):
    """An optional dependency is not installed.

    Parameters
    ----------
    package
        The import name that failed.
    extra
        The decodekit extra that installs it (``pip install 'decodekit[extra]'``).
    feature
        What needed it.
    install
        An explicit install command, when an extra cannot provide the package.
    """

    def __init__(self, package: str, *, extra: str | None = None, feature: str = "",
                 install: str | None = None) -> None:
        self.package = package
        self.extra = extra
        how = install or f"pip install 'decodekit[{extra}]'"
        what = f" for {feature}" if feature else ""
        super().__init__(f"the optional dependency {package!r} is needed{what} but is not "
                         f"installed; install it with: {how}")


class CapabilityError(UserError):
    """A strategy needs a backend capability the chosen backend lacks."""

    def __init__(self, strategy: str, backend: str, missing: Iterable[str]) -> None:
        self.strategy = strategy
        self.backend = backend
        self.missing = sorted(missing)
        super().__init__(f"strategy {strategy!r} needs the backend capabilities "
                         f"{', '.join(self.missing)}, which backend {backend!r} does not have")


class PluginError(DecodekitError):
    """A plugin failed: raised inside a hook, or registered something invalid.

    Parameters
    ----------
    plugin
        The name of the plugin at fault.
    message
        What happened.
    """

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class PluginConflictError(PluginError, UserError):
    """Two plugins registered the same name for the same kind of object."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        self.kind = kind
        self.name = name
        self.first = first
        self.second = second
        super().__init__(second, f"registers {kind} {name!r}, which plugin {first!r} already "
                                 f"registered; block one of them (DECODEKIT_BLOCK_PLUGINS)")


class UnsupportedSchemaError(UserError, ValueError):
    """A JSON Schema uses a keyword the grammar converter cannot enforce exactly, or is invalid.

    Parameters
    ----------
    keyword
        The keyword at fault, e.g. ``"multipleOf"``.
    path
        JSON path of the keyword in the schema, e.g. ``"$.properties.age.multipleOf"``.
    reason
        Why it cannot be converted.
    approximable
        Whether ``allow_approximation=True`` would accept the schema (as an over-approximation).
    """

    def __init__(self, keyword: str, path: str, reason: str, *, approximable: bool = True) -> None:
        self.keyword = keyword
        self.path = path
        self.reason = reason
        hint = ("; pass allow_approximation=True to ignore it (the grammar then accepts more "
                "than the schema)") if approximable else ""
        super().__init__(f"JSON Schema keyword {keyword!r} at {path}: {reason}{hint}")
