"""``dscnet`` entry point: sub-commands, user errors printed without a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dscnet import __version__
from dscnet.errors import DscnetError

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except DscnetError as exc:
        print(f"dscnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dscnet {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
