"""``dscnet data``: dataset tools (the built-in synthetic benchmark)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dscnet.config import load_config
from dscnet.data.synth import SyntheticDataset, SynthSpec, preview_grid, write_synthetic_voc
from dscnet.utils.io import check_output_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", metavar="TOOL")
    data_sub.required = True
    s = data_sub.add_parser(
        "synth",
        help="write the synthetic benchmark in PASCAL VOC layout",
        description="Generate the deterministic synthetic benchmark (data.synth.* of the config) "
        "and write it as a VOC-layout folder that `data.type=voc data.root=DIR` reads.",
    )
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--config", default="synth_cpu", help="config whose data.synth section is used")
    s.add_argument("--photo", action="store_true", help="real-photo backgrounds (pip extra 'pretrained')")
    s.add_argument("--preview", type=int, default=0, metavar="N", help="also write preview.png of N train images")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.synth.num_train=500")
    s.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    check_output_dir(args.out)
    spec = SynthSpec.from_config(cfg.data.synth, photo_backgrounds=True if args.photo else None)
    out = write_synthetic_voc(args.out, spec)
    print(f"wrote {spec.num_train} train + {spec.num_val} val images ({spec.num_classes} classes, {spec.image_size} px) to {out}")
    if args.preview:
        path = preview_grid(SyntheticDataset(spec, "train"), args.preview, Path(args.out) / "preview.png")
        print(f"preview: {path}")
    return 0
