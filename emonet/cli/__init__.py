"""``python -m emonet <command>``: one module per command, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

COMMANDS = ["quickstart", "predict", "train", "evaluate", "video", "export"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emonet", description="Valence, arousal and expression from faces (EmoNet toolkit)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        # Commands are optional modules: a missing one is simply not offered.
        if importlib.util.find_spec(f"emonet.cli.{name}") is None:
            continue
        module = importlib.import_module(f"emonet.cli.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
