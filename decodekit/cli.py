"""The ``decodekit`` command line.

Subcommands: ``run`` (a pipeline file on one prompt or a JSONL file of prompts),
``plugins``, ``strategies``, ``processors`` and ``backends`` (what is installed), plus any
command a plugin registers through the ``decodekit_register_commands`` hook.

User errors (a bad pipeline file, an unknown name, an invalid prompt file...) print one line,
``decodekit: error: <message>``, on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from decodekit.errors import DecodekitError, InputError, PluginConflictError, PluginError, UserError

if TYPE_CHECKING:  # pragma: no cover
    from decodekit.generation import Generation
    from decodekit.manager import PluginSystem
    from decodekit.pipeline import Pipeline

PROG = "decodekit"
LOG_LEVELS = ("debug", "info", "warning", "error")
log = logging.getLogger(__name__)
BUILTIN_COMMANDS = ("run", "plugins", "strategies", "processors", "backends")
_LISTED_KINDS = {"strategies": "strategy", "processors": "processor", "backends": "backend"}


# -- run ----------------------------------------------------------------------------------------


def read_prompts(path: str, stdin: IO[str] | None = None) -> list[tuple[Any, dict[str, Any], int]]:
    """Read a JSONL prompt file (``-``: standard input).

    Each non-blank line is a JSON string (the prompt) or an object with a ``"prompt"`` field
    (a string or a list of token ids); an ``"id"`` field is copied to the output record.

    Returns
    -------
    list
        ``(prompt, extra, line)`` triples, ``extra`` holding the fields copied to the output.

    Raises
    ------
    InputError
        Naming the file and line of the first invalid line.
    """
    shown = "<stdin>" if path == "-" else path
    try:
        text = (stdin or sys.stdin).read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"input file {shown!r} not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"input file {shown!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"cannot read input file {shown!r}: {exc.strerror or exc}") from None
    items: list[tuple[Any, dict[str, Any], int]] = []
    expected = 'each line must be a JSON string or a JSON object with a "prompt" field'
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{shown}:{number}: invalid JSON ({exc.msg} at column {exc.colno}); "
                             f"{expected}") from None
        extra: dict[str, Any] = {}
        if isinstance(item, dict):
            if "prompt" not in item:
                raise InputError(f'{shown}:{number}: no "prompt" field; {expected}')
            if "id" in item:
                extra["id"] = item["id"]
            item = item["prompt"]
        ok = (isinstance(item, str) and bool(item)) or (isinstance(item, list) and bool(item) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in item))
        if not ok:
            raise InputError(f"{shown}:{number}: a prompt must be a non-empty string or list of "
                             f"token ids, got {json.dumps(item)[:60]}")
        items.append((item, extra, number))
    if not items:
        raise InputError(f"input file {shown!r} holds no prompts")
    return items


def _open_output(path: str | None) -> IO[str]:
    if path is None or path == "-":
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise UserError(f"cannot write output file {path!r}: {exc.strerror or exc}") from None


def _record(generation: Generation, extra: dict[str, Any]) -> str:
    return json.dumps({**extra, **generation.as_dict()}, ensure_ascii=False, default=str)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def _quiet_unless_terminal() -> Iterator[None]:
    """Hide what loading a model prints on stderr (progress bars) unless stderr is a terminal,
    so that logs and pipes get only results and one-line errors. Shown again if loading fails
    with something other than a user error."""
    if _stderr_console().is_terminal:
        yield
        return
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            yield
    except UserError:
        raise
    except BaseException:
        sys.stderr.write(buffer.getvalue())
        raise


def _run_one_json(pipeline: Pipeline, prompt: str, output: str | None) -> int:
    generation = pipeline.run([prompt])[0]
    handle = _open_output(output)
    try:
        handle.write(_record(generation, {}) + "\n")
    finally:
        if handle is not sys.stdout:
            handle.close()
    return 0


def _run_one(pipeline: Pipeline, prompt: str, output: str | None) -> int:
    out = sys.stdout
    handle = _open_output(output) if output is not None else None
    try:
        stream = pipeline.stream(prompt)
        for delta in stream:
            if delta.text:
                out.write(delta.text)
                out.flush()
        out.write("\n")
        out.flush()
        generation: Generation | None = stream.generations[0] if stream.generations else None
        if generation is None:  # pragma: no cover - a stream always ends with its results
            return 1
        if handle is not None:
            handle.write(_record(generation, {}) + "\n")
    finally:
        if handle is not None and handle is not sys.stdout:
            handle.close()
    console = _stderr_console()
    if console.is_terminal:
        s = generation.stats
        console.print(f"[dim]{s.new_tokens} tokens, {s.forward_passes} forward passes, "
                      f"{s.seconds:.2f} s, {s.tokens_per_second:.1f} tokens/s[/dim]")
    return 0


def _run_many(pipeline: Pipeline, items: list[tuple[Any, dict[str, Any], int]], output: str | None,
              force_json: bool = False, args: argparse.Namespace | None = None) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from decodekit.scale import PromptItem, run

    console = _stderr_console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    prompts = [PromptItem(i, prompt, extra, line) for i, (prompt, extra, line) in enumerate(items)]
    engine: Any = getattr(args, "engine", "local")
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("generating", total=len(items))

        def advance(count: int) -> None:
            progress.advance(task, count)
            log.info("generated %d of %d prompts", int(progress.tasks[0].completed), len(items))

        summary = run(pipeline, prompts, output, engine=engine, replicas=getattr(args, "replicas", 1),
                      ray_address=getattr(args, "ray_address", None), resume=getattr(args, "resume", False),
                      output_format="jsonl" if force_json else None, progress=advance)
    shown = "<stdin>" if args is None or args.input == "-" else args.input
    for line, message in summary.errors[:5]:
        print(f"{PROG}: warning: {shown}:{line}: {message} (written as a record with an 'error' field)",
              file=sys.stderr)
    if len(summary.errors) > 5:
        print(f"{PROG}: warning: {len(summary.errors)} prompts failed in all", file=sys.stderr)
    return 1 if summary.errors and len(summary.errors) == summary.written else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from decodekit.pipeline import Pipeline

    pipeline = Pipeline.from_file(args.pipeline).with_overrides(args.set or [])
    if args.prompt is not None:
        if not args.prompt:
            raise InputError("--prompt is empty; give some text")
        if args.resume or args.engine != "local":
            raise UserError("--resume and --engine ray run a prompt file: use --input, not --prompt")
        with _quiet_unless_terminal():
            pipeline.load()
        if args.json:
            return _run_one_json(pipeline, args.prompt, args.output)
        return _run_one(pipeline, args.prompt, args.output)
    items = read_prompts(args.input)
    if args.engine == "local":
        with _quiet_unless_terminal():
            pipeline.load()
    return _run_many(pipeline, items, args.output, force_json=args.json, args=args)


# -- listings -----------------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=repr))


def _cmd_plugins(args: argparse.Namespace, system: PluginSystem) -> int:
    infos = system.plugins()
    if args.json:
        _print_json([{"name": i.name, "version": i.version, "builtin": i.builtin, "hooks": list(i.hooks)}
                     for i in infos])
        return 0
    width = max([len("NAME")] + [len(i.name) for i in infos])
    vwidth = max([len("VERSION")] + [len(i.version) for i in infos])
    print(f"{'NAME':<{width}}  {'VERSION':<{vwidth}}  HOOKS")
    for i in infos:
        print(f"{i.name:<{width}}  {i.version:<{vwidth}}  {', '.join(i.hooks)}")
    return 0


def _describe(obj: Any) -> str:
    text = getattr(obj, "description", "") or ""
    if not text and obj.__doc__:
        text = obj.__doc__.strip().splitlines()[0]
    return text


def _cmd_list(args: argparse.Namespace, system: PluginSystem, kind: str) -> int:
    from decodekit.options import NoOptions, describe_options

    rows = []
    for entry in system.registry.entries(kind):
        row: dict[str, Any] = {"name": entry.name, "description": _describe(entry.obj),
                               "plugin": entry.plugin}
        if args.options:
            infos = describe_options(getattr(entry.obj, "Options", NoOptions))
            row["options"] = [{"name": o.name, "type": o.type, "default": o.default,
                               "required": o.required, "description": o.description} for o in infos]
        rows.append(row)
    if args.json:
        _print_json(rows)
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    for row in rows:
        print(f"{row['name']:<{width}}  {row['description']}")
        if not args.options:
            continue
        if not row["options"]:
            print(" " * 4 + "(no options)")
        for opt in row["options"]:
            value = "required" if opt["required"] else f"= {opt['default']!r}"
            print(f"    {opt['name']}: {opt['type']} {value}")
            if opt["description"]:
                print(f"        {opt['description']}")
    return 0


# -- parser -------------------------------------------------------------------------------------


def _plugin_command(system: PluginSystem, entry: Any, parser: argparse.ArgumentParser) -> Callable[..., Any]:
    try:
        run = entry.obj(parser)
    except DecodekitError:
        raise
    except Exception as exc:
        raise PluginError(entry.plugin, f"setting up command {entry.name!r} raised "
                                        f"{type(exc).__name__}: {exc}") from exc
    if not callable(run):
        raise PluginError(entry.plugin, f"the setup of command {entry.name!r} must return the "
                                        f"function that runs it, got {run!r}")

    own_json = _has_json_flag(parser)
    if not own_json:
        _add_json_flag(parser, argparse.SUPPRESS)
        parser.set_defaults(json=False)

    def invoke(args: argparse.Namespace) -> Any:
        try:
            if not own_json and args.json:
                return _as_json(run, args)
            return run(args)
        except (DecodekitError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise PluginError(entry.plugin, f"command {entry.name!r} raised "
                                            f"{type(exc).__name__}: {exc}") from exc

    return invoke


def _has_json_flag(parser: argparse.ArgumentParser) -> bool:
    return any("--json" in action.option_strings for action in parser._actions)


def _add_json_flag(parser: argparse.ArgumentParser, default: Any) -> None:
    """Add ``--json`` to a plugin command's parser and to its sub-command parsers."""
    parser.add_argument("--json", action="store_true", default=default,
                        help="print JSON: the command's output as a JSON value")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not _has_json_flag(child):
                    _add_json_flag(child, argparse.SUPPRESS)


def _as_json(run: Callable[..., Any], args: argparse.Namespace) -> int:
    """Run a plugin command that has no JSON mode of its own and print its outcome as JSON:
    its standard output parsed as JSON when it is JSON, else as a list of lines."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = run(args)
    text = buffer.getvalue()
    try:
        output: Any = json.loads(text)
    except json.JSONDecodeError:
        output = text.splitlines()
    _print_json({"command": args.command, "status": int(status or 0), "output": output})
    return int(status or 0)


def build_parser(system: PluginSystem) -> argparse.ArgumentParser:
    """The argument parser, with the builtin commands and those plugins register."""
    from decodekit import __version__
    from decodekit.pipeline import builtin_pipelines

    parser = argparse.ArgumentParser(prog=PROG, description="Composable LLM decoding strategies.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=None,
                        help="log messages of this level and above on stderr (default: warning; "
                             "environment: DECODEKIT_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run", help="run a pipeline file on a prompt or a JSONL file of prompts",
        description="Run a pipeline (a .toml/.yaml file, or a builtin pipeline name).",
        epilog=f"builtin pipelines: {', '.join(builtin_pipelines()) or '(none)'}")
    run.add_argument("pipeline", metavar="PIPELINE", help="pipeline file or builtin pipeline name")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", metavar="TEXT", help="one prompt; its text streams to stdout")
    source.add_argument("--input", metavar="FILE",
                        help='JSONL prompts (JSON strings or objects with "prompt"; "-": stdin)')
    run.add_argument("--output", metavar="FILE",
                     help="write JSONL records here (a .parquet name: Parquet; default: stdout)")
    run.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                     help="override a setting, e.g. strategy.options.top_k=5 (repeatable)")
    run.add_argument("--json", action="store_true",
                     help="print JSON records (with --prompt: one record instead of streamed text; "
                          "with --input: JSONL even if the pipeline's output_format is text)")
    run.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="with --input: decode here (local) or on a Ray actor pool (ray)")
    run.add_argument("--replicas", metavar="N", type=int, default=1,
                     help="model replicas (Ray actors) for --engine ray (default: 1)")
    run.add_argument("--ray-address", metavar="ADDR",
                     help="existing Ray cluster for --engine ray (default: start a local one)")
    run.add_argument("--resume", action="store_true",
                     help="skip prompts already in --output (by id, else position) and append")
    run.set_defaults(func=_cmd_run)

    plugins = sub.add_parser("plugins", help="list loaded plugins with their versions and hooks")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(func=lambda args: _cmd_plugins(args, system))

    for command, kind in _LISTED_KINDS.items():
        lister = sub.add_parser(command, help=f"list {command} with their descriptions")
        lister.add_argument("--options", action="store_true",
                            help="show each one's options: type, default and description")
        lister.add_argument("--json", action="store_true", help="print JSON")
        lister.set_defaults(func=lambda args, _kind=kind: _cmd_list(args, system, _kind))

    for entry in system.registry.entries("command"):
        if entry.name in BUILTIN_COMMANDS:
            raise PluginConflictError("command", entry.name, "decodekit", entry.plugin)
        command_parser = sub.add_parser(entry.name, help=entry.extra or None,
                                        description=entry.extra or None)
        command_parser.set_defaults(func=_plugin_command(system, entry, command_parser))
    return parser


def configure_logging(level: str | None = None) -> None:
    """Send the ``decodekit`` loggers' messages to stderr at ``level`` (default: the
    ``DECODEKIT_LOG_LEVEL`` environment variable, else ``warning``).

    Raises
    ------
    UserError
        If the level is not one of ``debug``, ``info``, ``warning``, ``error``.
    """
    name = (level or os.environ.get("DECODEKIT_LOG_LEVEL") or "warning").lower()
    if name not in LOG_LEVELS:
        raise UserError(f"log level {name!r} is not valid; choose one of {', '.join(LOG_LEVELS)}")
    logger = logging.getLogger("decodekit")
    logger.setLevel(getattr(logging, name.upper()))
    for old in [h for h in logger.handlers if getattr(h, "_decodekit_cli", False)]:
        logger.removeHandler(old)  # its stream may be gone (a closed, redirected stderr)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("decodekit: %(levelname)s: %(name)s: %(message)s"))
    handler._decodekit_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n")).strip() or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for user errors).

    Parameters
    ----------
    argv
        Arguments without the program name (default: ``sys.argv[1:]``).
    """
    try:
        from decodekit.manager import get_plugin_system

        parser = build_parser(get_plugin_system())
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
        configure_logging(args.log_level)
        status = args.func(args)
        return int(status or 0)
    except UserError as exc:
        sys.stdout.flush()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `decodekit run ... | head`: stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
