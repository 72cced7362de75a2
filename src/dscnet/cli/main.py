"""``dscnet`` entry point: sub-commands, user errors printed without a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dscnet import __version__
from dscnet.errors import DscnetError
from dscnet.utils.io import os_reason

# Each sub-command lives in its own module with ``add_parser(subparsers)`` and ``run(args)``.
COMMANDS = ("demo", "train", "eval", "threshold", "ablate", "data", "predict", "pseudo", "report", "export")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (sub-command modules are imported lazily by name)."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="dscnet",
        description="Weakly-supervised semantic segmentation from image-level tags (DSCNet).",
    )
    parser.add_argument("--version", action="version", version=f"dscnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"dscnet.cli.cmd_{name}")
        module.add_parser(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args`` that also takes ``key=value`` overrides after options.

    argparse fills a ``nargs="*"`` positional only once, so in ``train a=1 --resume auto b=2``
    it would call ``b=2`` an unrecognized argument; overrides are collected wherever they stand
    (in order). Anything else unknown is still an error.
    """
    args, extra = parser.parse_known_args(argv)
    if extra:
        takes_overrides = isinstance(getattr(args, "overrides", None), list)
        stray = [e for e in extra if not takes_overrides or e.startswith("-") or "=" not in e]
        if stray:
            parser.error(f"unrecognized arguments: {' '.join(stray)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        status = args.func(args)
    except DscnetError as exc:
        print(f"dscnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # The last resort for a file error no reader or writer turned into a DscnetError:
        # the path and the reason, not a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"dscnet {args.command}: error: {where}{os_reason(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dscnet {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
