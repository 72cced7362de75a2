"""``dscnet train``: train a model from a config (one process or under torchrun)."""

from __future__ import annotations

import argparse

from dscnet.cli.common import add_config_args, config_from_args
from dscnet.engine.distributed import cleanup_distributed, init_distributed
from dscnet.engine.trainer import Trainer, TrainResult
from dscnet.utils.io import check_output_dir
from dscnet.visualize.examples import write_examples


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model",
        description="Train DSCNet (or an ablation row) from a config. Runs as one process, or "
        "as many under `torchrun --nproc_per_node=N -m dscnet.cli.main train ...`.",
    )
    add_config_args(p)
    p.add_argument("--resume", default=None, help="checkpoint to resume from, or 'auto' (the run's last.pth)")
    p.add_argument("--examples", type=int, default=16, help="validation examples to draw at the end (0: none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    check_output_dir(cfg.experiment.work_dir, "run folder (experiment.work_dir)")
    ctx = init_distributed(cfg.experiment.device)
    try:
        trainer = Trainer(cfg, ctx, resume=args.resume)
        result = trainer.fit()
        final = trainer.run_eval("final", what=("seg", "cam", "pseudo"))
        if ctx.is_main and args.examples > 0:
            # Pictures for `dscnet report`: worst validation images first.
            write_examples(trainer, result.run_dir / "examples", count=args.examples)
    finally:
        cleanup_distributed()
    if ctx.is_main:
        best = f"{result.best_miou:.4f}" if result.best_miou is not None else "n/a"
        periodic = trainer.eval_images("seg", periodic=True)[1].describe()
        print(
            f"{describe_steps(result, cfg.train.max_steps)}; best periodic seg mIoU {best} "
            f"({periodic}); run dir {result.run_dir}"
        )
        if final:
            print(
                "final mIoU: "
                + ", ".join(
                    f"{what} {100 * m['miou']:.2f} ({trainer.eval_images(what)[1].describe()})"
                    for what, m in final.items()
                )
                + " (cam/pseudo from the ground-truth tags)"
            )
        else:
            print(f"validation split '{cfg.data.val_split}' has no masks: no mIoU to report")
        if trainer.health is not None:
            # The health warnings of the run (final evaluation included), once more at the end.
            lines = trainer.health.summary()
            print(f"training health: {len(lines)} warning(s)" + (" (also in scalars.jsonl and `dscnet report`):" if lines else ""))
            for line in lines:
                print(f"  - {line}")
    return 0


def describe_steps(result: TrainResult, max_steps: int) -> str:
    """What this run trained: its own steps (not those of the run it resumed) and their speed."""
    ran = result.steps - result.start_step
    if ran:
        text = f"trained {ran} steps in {result.seconds:.0f} s ({result.images_per_second:.1f} images/s)"
    else:
        text = f"no step to train (train.max_steps={max_steps})"
    if result.start_step:
        text += f", resumed at step {result.start_step}, now at step {result.steps}"
    return text
