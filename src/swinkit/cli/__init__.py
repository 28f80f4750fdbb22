"""The ``swinkit`` command: each subcommand lives in its own module here and is a thin call into the library.

A subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence

COMMANDS = (
    "models",
    "convert",
    "convert-data",
    "predict",
    "batch",
    "train",
    "pretrain",
    "evaluate",
    "serve",
    "export",
)


def _available() -> dict[str, object]:
    modules = {}
    for name in COMMANDS:
        module = f"swinkit.cli.{name.replace('-', '_')}"
        try:
            modules[name] = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
    return modules


def version() -> str:
    """The installed package's version, else the source tree's ``swinkit.__version__``."""
    try:
        return importlib.metadata.version("swinkit")
    except importlib.metadata.PackageNotFoundError:
        import swinkit

        return swinkit.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swinkit", description="Swin Transformer toolkit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--version", action="version", version=f"swinkit {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p, _interrupted=getattr(module, "interrupted", None))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # reported with the subcommand's usage, not the top level's
        args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"swinkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # permissions, a full disk, ...: the system's reason, in one line
        print(f"swinkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "_interrupted", None)
        if hint:
            print(f"interrupted: {hint(args)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
