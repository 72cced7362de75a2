"""``dscnet report``: an HTML page of a run (curves, per-class IoU, confusion, examples)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dscnet.errors import DscnetError
from dscnet.utils.io import check_output_file
from dscnet.visualize.report import write_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write an HTML report of a run directory")
    p.add_argument("run_dir", help="a folder written by dscnet train / demo")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise DscnetError(f"run directory not found: {run_dir}")
    check_output_file(run_dir / "report.html", "report")
    path = write_report(run_dir)
    print(f"report written to {path}")
    return 0
