"""``python -m emonet <command>``: one module per command, one way to build and run each.

Every name in :data:`COMMANDS` is a module ``emonet.cli.<name>`` declaring ``HELP`` (one line),
``DESCRIPTION``, ``add_options(parser)`` (built from the shared definitions in :mod:`emonet.cli.options`)
and ``run(args) -> int`` (optionally ``FORMATTER``, an argparse help formatter). This module turns them into
sub-commands, and :func:`script_main` into the seed's scripts (``face_visibility.py`` ...), so both spellings
parse and fail the same way. Only the requested command's module is imported (fast start, isolation from a
broken sibling); ``--help`` imports every module and lists the ones that load.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import signal
import sys
import threading
from collections.abc import Callable
from types import ModuleType

from emonet import __version__
from emonet.cli.options import add_verbose, resolve_weight_names
from emonet.errors import UserError
from emonet.nativelogs import configure_native_logs

COMMANDS = ["quickstart", "predict", "video", "demo", "train", "finetune", "distill", "evaluate", "review", "visibility", "preprocess", "export", "download",
            "app", "batch", "models"]


def available_commands() -> list[str]:
    """The commands whose module exists (without importing them)."""
    return [name for name in COMMANDS if importlib.util.find_spec(f"emonet.cli.{name}") is not None]


def _load(name: str) -> ModuleType:
    module = importlib.import_module(f"emonet.cli.{name}")
    for attr in ("add_options", "run"):
        if not callable(getattr(module, attr, None)):
            raise AttributeError(f"emonet/cli/{name}.py: command module has no {attr}() function")
    for attr in ("HELP", "DESCRIPTION"):
        if not isinstance(getattr(module, attr, None), str):
            raise AttributeError(f"emonet/cli/{name}.py: command module has no {attr} text")
    return module


def _parser_kwargs(module: ModuleType) -> dict:
    # allow_abbrev=False: a prefix is never read as a longer option (`train --backbone X` was `--backbone-lr X`)
    return {"description": module.DESCRIPTION, "formatter_class": getattr(module, "FORMATTER", argparse.HelpFormatter),
            "allow_abbrev": False}


def _add_command_options(module: ModuleType, parser: argparse.ArgumentParser) -> None:
    module.add_options(parser)
    if not any("--verbose" in action.option_strings for action in parser._actions):
        add_verbose(parser)  # every command has it; a command may define its own
    parser.set_defaults(handler=module.run)


def command_parser(name: str, prog: str) -> argparse.ArgumentParser:
    """The parser of one command on its own, named ``prog`` (the seed's scripts, tests)."""
    module = _load(name)
    parser = argparse.ArgumentParser(prog=prog, **_parser_kwargs(module))
    _add_command_options(module, parser)
    return parser


def script_main(name: str, prog: str) -> Callable[[list[str] | None], int]:
    """``main(argv=None) -> exit code`` of a script that is the command ``name`` under another name."""

    def main(argv: list[str] | None = None) -> int:
        parsed = parse_or_exit_code(command_parser(name, prog), sys.argv[1:] if argv is None else argv)
        return parsed if isinstance(parsed, int) else run_command(parsed.handler, parsed)

    main.__doc__ = f"``{prog} ARGS`` = ``python -m emonet {name} ARGS``; returns the exit code."
    return main


def parse_or_exit_code(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    """Parsed options, or the exit code argparse chose (2 after printing a usage error naming the option, 0
    after --help): ``main()`` returns codes, it does not raise SystemExit."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def build_parser(names: list[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with a sub-parser per command in ``names`` (default: all available)."""
    parser = argparse.ArgumentParser(
        prog="python -m emonet", description="Valence, arousal and expression from faces (EmoNet toolkit).",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"emonet-toolkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    requested = names is not None
    for name in names if names is not None else available_commands():
        try:
            module = _load(name)
        except Exception as exc:  # listing every command must survive one broken module
            if requested:
                raise
            print(f"warning: command {name!r} unavailable ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        sub = subparsers.add_parser(name, help=module.HELP, **_parser_kwargs(module))
        _add_command_options(module, sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    # Import only the requested command's module (fast start, isolation from the other commands).
    names = [first] if first in available_commands() else None
    parser = build_parser(names)
    args = parse_or_exit_code(parser, argv)
    if isinstance(args, int):
        return args
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return run_command(args.handler, args)


# OS errors that come from a path the user gave (the message names it), not from a bug.
_USER_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


def run_command(handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command: user mistakes and bad data print ``error: ...`` (exit 2), Ctrl-C exits 130; no traceback.

    Commands write their outputs atomically or as clearly named ``.partial`` files, and say what they kept
    before re-raising an interrupt, so nothing finished is lost here.
    """
    # Before the command imports MediaPipe/OpenCV: their log levels are read at start-up.
    configure_native_logs(True if getattr(args, "verbose", False) else None)  # EMONET_VERBOSE=1 also works
    # `kill` / a container stop (SIGTERM) ends a command like Ctrl-C: it keeps what is finished and says so.
    previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        resolve_weight_names(args)  # `--weights emonet_8` in every command: found or downloaded here, once
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted (exit 130)", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except _USER_OS_ERRORS as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) and str(exc.filename) not in str(exc) else ""
        print(f"error: {where}{exc.strerror or exc}" if where else f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
