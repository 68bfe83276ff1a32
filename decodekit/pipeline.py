"""Config-file pipelines: a model, a strategy and its processors, saved as TOML or YAML.

A pipeline file names everything a generation needs; ``decodekit run PIPELINE`` runs it and
:class:`Pipeline` does the same from Python::

    model = "default"
    chat = true
    max_new_tokens = 64
    stop = ["\\n\\n"]

    [strategy]
    name = "sample"
    options = { temperature = 0.7, top_p = 0.9, seed = 0 }

    [[processors]]
    name = "repetition_penalty"
    options = { penalty = 1.2 }

Every problem in a file is reported as :class:`decodekit.errors.ConfigError` with the file,
line and column of the offending key or value: syntax errors, unknown keys, wrong types,
unknown strategy/processor/backend names and invalid options of each (validated against the
plugin's own typed options when the file is loaded, before any model is).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic
import tomllib
from pydantic import ConfigDict, Field

from decodekit.errors import ConfigError, InputError, OptionsError, UserError
from decodekit.options import validate_options
from decodekit.overrides import apply_overrides
from decodekit.sourcemap import SourceMap, toml_positions, toml_syntax_error, yaml_positions

if TYPE_CHECKING:  # pragma: no cover
    from decodekit.api import Model
    from decodekit.generation import Generation
    from decodekit.manager import PluginSystem
    from decodekit.streaming import Stream

Prompt = str | list[int]


class _Section(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NamedSpec(_Section):
    """A strategy, processor or backend: its registry name and its own options.

    In a file either a table ``{name = "...", options = {...}}`` or just the name.
    """

    name: str = Field(description="registry name")
    options: dict[str, Any] = Field(default_factory=dict, description="the plugin's typed options")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if not isinstance(data, Mapping) and not isinstance(data, NamedSpec):
            raise ValueError("expected a name or a table with 'name' and 'options'")
        return data


class PluginsSpec(_Section):
    """Which plugins this pipeline loads (like ``DECODEKIT_BLOCK_PLUGINS`` / ``DECODEKIT_PLUGINS``)."""

    block: list[str] = Field(default_factory=list, description="plugin names not to load")
    only: list[str] | None = Field(None, description="the only entry-point plugins to load")


class PipelineSpec(_Section):
    """The validated contents of a pipeline file (see the module docstring for an example)."""

    model: str = Field("default", description="'default', a model directory, a .gguf file or a Hub id")
    backend: NamedSpec = Field(NamedSpec(name="torch"), description="backend name and load options")
    strategy: NamedSpec = Field(NamedSpec(name="greedy"), description="strategy name and options")
    processors: list[NamedSpec] = Field(default_factory=list, description="logits processors, in order")
    grammar: Any = Field(None, description="grammar constraint, passed to generate(grammar=...)")
    max_new_tokens: int = Field(64, gt=0, description="maximum new tokens per sequence")
    seed: int | None = Field(None, description="seed of the random generator (sampling)")
    chat: bool = Field(False, description="wrap text prompts in the model's chat template")
    system_prompt: str | None = Field(None, description="system message for the chat template")
    stop: list[str] = Field(default_factory=list, description="stop strings (the 'stop' processor)")
    batch_size: int = Field(8, ge=1, description="prompts decoded together by run()")
    output_format: Literal["jsonl", "text"] = Field("jsonl", description="what 'decodekit run' writes")
    plugins: PluginsSpec | None = Field(None, description="plugins to block or allow")

    @pydantic.field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


def builtin_pipelines() -> list[str]:
    """Names of the pipelines shipped with decodekit (``decodekit run NAME``)."""
    folder = resources.files("decodekit").joinpath("pipelines")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def resolve_pipeline(reference: str | Path) -> Path:
    """A pipeline file path, or the builtin pipeline named ``reference``.

    Raises
    ------
    UserError
        When neither a file nor a builtin pipeline of that name exists.
    """
    path = Path(reference).expanduser()
    if path.is_file():
        return path
    name = str(reference)
    name = name[:-5] if name.endswith(".toml") else name
    if name in builtin_pipelines():
        with resources.as_file(resources.files("decodekit").joinpath("pipelines").joinpath(f"{name}.toml")) as p:
            return Path(p)
    if path.is_dir():
        raise UserError(f"pipeline {str(reference)!r} is a directory, not a pipeline file")
    raise UserError(f"pipeline file {str(reference)!r} not found, and no builtin pipeline has that "
                    f"name; builtin pipelines: {', '.join(builtin_pipelines()) or '(none)'}")


def _read_file(path: Path) -> tuple[dict[str, Any], SourceMap]:
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"pipeline file {shown!r} not found") from None
    except OSError as exc:
        raise UserError(f"cannot read pipeline file {shown!r}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError("the file is not valid UTF-8 text", shown, line, column) from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise toml_syntax_error(exc, text, shown) from None
        return data, toml_positions(text, shown)
    if suffix in (".yaml", ".yml"):
        import yaml

        smap = yaml_positions(text, shown)  # raises located syntax errors
        data = yaml.safe_load(text)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"a pipeline file holds a mapping of settings, not a "
                              f"{type(data).__name__}", shown, 1, 1)
        return data, smap
    raise UserError(f"cannot tell the format of pipeline file {shown!r}: use the extension .toml, "
                    f".yaml or .yml")


def _clean_loc(loc: Sequence[Any], data: Any) -> tuple[Any, ...]:
    """Keep the parts of a pydantic error location that index into ``data``."""
    out: list[Any] = []
    cur = data
    for part in loc:
        if isinstance(cur, Mapping) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif isinstance(part, str) and not isinstance(cur, (Mapping, list)):
            continue  # a union member name (e.g. 'str'), or a name below a shorthand
        elif isinstance(cur, Mapping):
            out.append(part)  # a missing or unknown key: keep it for the message
            break
    return tuple(out)


def _section_fields(loc: tuple[Any, ...]) -> list[str]:
    """Valid keys of the table at ``loc`` (for unknown-key messages)."""
    cls: Any = PipelineSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return []
        candidates = [field.annotation, *getattr(field.annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, pydantic.BaseModel)]
        if not nested:
            return []
        cls = nested[0]
    return list(cls.model_fields)


def _spec_error(exc: pydantic.ValidationError, data: Mapping[str, Any], smap: SourceMap) -> ConfigError:
    err = exc.errors()[0]
    loc = _clean_loc(err["loc"], data)
    if err["type"] == "extra_forbidden":
        valid = _section_fields(loc[:-1])
        return smap.error(f"unknown key {loc[-1]!r}; valid keys: {', '.join(valid)}", loc, at="key")
    if err["type"] == "missing":
        return smap.error(f"missing required key {loc[-1]!r}", loc, at="key")
    message = err["msg"].removeprefix("Value error, ")
    return smap.error(f"{message} (got {err.get('input')!r})", loc)


def _check_options(cls: Any, values: Mapping[str, Any], owner: str, key_path: tuple[Any, ...],
                   smap: SourceMap) -> None:
    try:
        validate_options(cls.Options, values, owner=owner)
    except OptionsError as exc:
        unknown = [k for k in values if k not in cls.Options.model_fields]
        if unknown:
            raise smap.error(str(exc), key_path + (unknown[0],), at="key") from None
        try:
            cls.Options(**values)
        except pydantic.ValidationError as verr:
            loc = verr.errors()[0]["loc"]
            if loc and loc[0] in values:
                raise smap.error(str(exc), key_path + (loc[0],)) from None
        raise smap.error(str(exc), key_path, at="key") from None


def _check_plugins(spec: PipelineSpec, smap: SourceMap, system: PluginSystem) -> None:
    from decodekit.errors import UnknownNameError

    registry = system.registry
    named: list[tuple[str, tuple[Any, ...], Any]] = [("backend", ("backend",), spec.backend),
                                                     ("strategy", ("strategy",), spec.strategy)]
    named += [("processor", ("processors", i), p) for i, p in enumerate(spec.processors)]
    for kind, key_path, item in named:
        try:
            cls = registry.get(kind, item.name)
        except UnknownNameError as exc:
            raise smap.error(str(exc), key_path + ("name",)) from None
        _check_options(cls, item.options, f"{kind} {item.name!r}", key_path + ("options",), smap)
    if spec.grammar is not None and not registry.names("grammar_engine"):
        raise smap.error("a grammar needs a grammar engine, and no installed plugin registers one",
                         ("grammar",))


class Pipeline:
    """A validated pipeline: model, backend, strategy, processors and generation settings.

    Build one with :meth:`from_file` or :meth:`from_dict`; the model loads on first use.

    Parameters
    ----------
    spec
        The validated settings.
    data
        The settings as given (before defaults), used by :meth:`with_overrides`.
    source_map
        Where each setting came from (file, line, column).
    system
        The plugin system to use (default: the process-wide one, or a new one honouring the
        ``plugins`` setting).
    """

    def __init__(self, spec: PipelineSpec, *, data: Mapping[str, Any] | None = None,
                 source_map: SourceMap | None = None, system: PluginSystem | None = None) -> None:
        self.spec = spec
        self._data = copy.deepcopy(dict(data)) if data is not None else spec.model_dump(exclude_unset=True)
        self._smap = source_map or SourceMap()
        self._system = system
        self._model: Model | None = None

    @property
    def source(self) -> str | None:
        """The file the pipeline was read from (``None`` if built from a mapping)."""
        return self._smap.path

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> Pipeline:
        """Load a ``.toml``, ``.yaml`` or ``.yml`` pipeline file (or a builtin pipeline name).

        A relative ``model`` path is resolved against the file's folder when it exists there.

        Raises
        ------
        ConfigError
            With file, line and column, for anything wrong in the file.
        """
        resolved = resolve_pipeline(path)
        data, smap = _read_file(resolved)
        smap.path = str(path) if Path(path).is_file() else str(resolved)
        model = data.get("model")
        if isinstance(model, str) and model != "default" and not Path(model).expanduser().is_absolute():
            local = resolved.parent / model
            if local.exists():
                data["model"] = str(local)
        return cls._validated(data, smap)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pipeline:
        """Build a pipeline from a mapping with the keys of a pipeline file."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"pipeline settings must be a mapping, got {type(data).__name__}")
        return cls._validated(dict(data), SourceMap())

    @classmethod
    def _validated(cls, data: dict[str, Any], smap: SourceMap) -> Pipeline:
        try:
            spec = PipelineSpec.model_validate(data)
        except pydantic.ValidationError as exc:
            raise _spec_error(exc, data, smap) from None
        system = cls._make_system(spec, smap)
        _check_plugins(spec, smap, system)
        return cls(spec, data=data, source_map=smap, system=system)

    @staticmethod
    def _make_system(spec: PipelineSpec, smap: SourceMap) -> PluginSystem:
        from decodekit.manager import PluginSystem, get_plugin_system

        if spec.plugins is None:
            return get_plugin_system()
        try:
            return PluginSystem(block=spec.plugins.block, only=spec.plugins.only)
        except UserError as exc:
            raise smap.error(str(exc), ("plugins",), at="key") from None

    def with_overrides(self, assignments: Iterable[str]) -> Pipeline:
        """A copy with ``key.path=value`` settings applied (the CLI's ``--set``).

        Values are read as TOML values (numbers, booleans, quoted strings, arrays, inline
        tables), else as JSON (``null``), else as plain strings. Paths name table keys and
        array indices (or processor names), e.g. ``strategy.options.top_k=5``,
        ``processors.0.options.penalty=1.3``, ``processors.no_repeat_ngram.options.size=4``.

        Raises
        ------
        ConfigError
            For an unknown key path (listing the valid keys) or an invalid value.
        """
        items = list(assignments)
        if not items:
            return self
        system = self.system
        data, touched = apply_overrides(self._data, items, system.registry)
        smap = _OverrideMap(self.source, self._smap.positions, touched)
        return type(self)._validated(data, smap)

    # -- settings ----------------------------------------------------------------------------

    @property
    def system(self) -> PluginSystem:
        """The plugin system this pipeline uses (its own when the file has ``[plugins]``)."""
        if self._system is None:
            self._system = self._make_system(self.spec, SourceMap())
        return self._system

    def processor_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """Processors as ``(name, options)`` pairs, with ``stop`` strings merged into ``stop``."""
        specs = [(p.name, dict(p.options)) for p in self.spec.processors]
        if self.spec.stop:
            for name, options in specs:
                if name == "stop":
                    options["strings"] = [*options.get("strings", []), *self.spec.stop]
                    break
            else:
                specs.append(("stop", {"strings": list(self.spec.stop)}))
        return specs

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`decodekit.generate` equivalent to this pipeline."""
        s = self.spec
        return {"strategy": s.strategy.name, "options": dict(s.strategy.options),
                "processors": self.processor_specs(), "grammar": s.grammar,
                "max_new_tokens": s.max_new_tokens, "seed": s.seed, "chat": s.chat,
                "system_prompt": s.system_prompt}

    def to_dict(self) -> dict[str, Any]:
        """All settings, defaults included, as plain data."""
        return self.spec.model_dump()

    def __repr__(self) -> str:
        s = self.spec
        where = f" from {self.source!r}" if self.source else ""
        return f"Pipeline(model={s.model!r}, strategy={s.strategy.name!r}{where})"

    # -- running -----------------------------------------------------------------------------

    def load(self) -> Model:
        """Load the model (once; later calls return the same handle)."""
        if self._model is None:
            from decodekit.api import load
            from decodekit.manager import get_plugin_system

            shared = self.system is get_plugin_system()
            self._model = load(self.spec.model, self.spec.backend.name, system=self.system,
                               cache=shared, **self.spec.backend.options)
        return self._model

    def batches(self, prompts: Iterable[Prompt]) -> Iterator[list[Generation]]:
        """Generate in batches of ``batch_size`` prompts, yielding each batch's results in order."""
        from decodekit.api import generate

        items = _prompt_list(prompts)
        model = self.load()
        kwargs = self.generate_kwargs()
        size = self.spec.batch_size
        for start in range(0, len(items), size):
            batch = items[start:start + size]
            try:
                results = generate(batch, model=model, **kwargs)  # type: ignore[arg-type]
            except InputError as exc:
                if len(items) == 1:
                    raise
                raise self._prompt_error(exc, model, batch, start) from None
            yield results

    def _prompt_error(self, exc: InputError, model: Model, batch: list[Prompt], start: int) -> PromptError:
        """Find which prompt of a failed batch is at fault, so the error can name it."""
        from decodekit.loop import tokenize_prompts

        backend = model.backend
        limit = backend.max_context
        for offset, prompt in enumerate(batch):
            try:
                ids = tokenize_prompts(backend, [prompt], chat=self.spec.chat,
                                       system_prompt=self.spec.system_prompt)[0]
            except InputError as single:
                return PromptError(start + offset, str(single))
            if limit is not None and len(ids) + self.spec.max_new_tokens > limit:
                return PromptError(start + offset, f"it has {len(ids)} tokens; with max_new_tokens="
                                                   f"{self.spec.max_new_tokens} that exceeds the "
                                                   f"model's context of {limit} tokens")
        return PromptError(start, f"{exc} (in the batch of prompts {start} to {start + len(batch) - 1})")

    def run(self, prompts: Prompt | Iterable[Prompt]) -> list[Generation]:
        """Generate for every prompt (strings or token-id lists); one result per prompt, in order."""
        return [g for batch in self.batches(prompts) for g in batch]  # type: ignore[arg-type]

    def stream(self, prompt: Prompt) -> Stream:
        """Stream the text of one prompt; see :func:`decodekit.generate` with ``stream=True``."""
        from decodekit.api import generate

        if not isinstance(prompt, str) and not _is_token_ids(prompt):
            raise InputError("stream() takes one prompt: a string or a list of token ids")
        return generate(prompt, model=self.load(), stream=True, **self.generate_kwargs())


class PromptError(InputError):
    """One prompt of :meth:`Pipeline.run` is invalid.

    Parameters
    ----------
    index
        Its position among the prompts (0-based).
    reason
        What is wrong with it.
    """

    def __init__(self, index: int, reason: str) -> None:
        self.index = index
        self.reason = reason
        super().__init__(f"prompt {index}: {reason}")


class _OverrideMap(SourceMap):
    """Positions for re-validation after ``--set``: errors below an overridden key name it."""

    def __init__(self, path: str | None, positions: dict[Any, Any], touched: dict[tuple[Any, ...], str]) -> None:
        super().__init__(path, positions)
        self.touched = touched

    def error(self, message: str, key_path: Any, *, at: str = "value") -> ConfigError:
        key_path = tuple(key_path)
        for prefix in sorted(self.touched, key=len, reverse=True):
            if key_path[:len(prefix)] == prefix:
                return ConfigError(f"--set {self.touched[prefix]}: {message}")
        return super().error(message, key_path, at=at)


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value)


def _prompt_list(prompts: Prompt | Iterable[Prompt]) -> list[Prompt]:
    if isinstance(prompts, str) or _is_token_ids(prompts):
        return [prompts]  # type: ignore[list-item]
    items: list[Prompt] = list(prompts)  # type: ignore[arg-type]
    if not items:
        raise InputError("no prompts given")
    return items

