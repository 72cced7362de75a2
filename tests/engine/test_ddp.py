"""Two gloo CPU processes against one process on the same data.

- gradients of one global batch under DDP equal the 1-process gradients accumulated over
  the same two halves (what DDP promises: rank-mean of per-rank gradients);
- validation metrics from a sharded split, reduced across ranks, equal the 1-process ones;
- the Trainer runs under 2 ranks with every stream on, rank 0 writes, weights stay in sync.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dscnet.cam.labeler import build_pseudo_labeler
from dscnet.data.build import build_dataset
from dscnet.engine.distributed import DistContext
from dscnet.engine.evaluate import evaluate
from dscnet.engine.trainer import Trainer
from dscnet.losses.dscl import DSCLObjective
from dscnet.models.dscnet import build_model
from dscnet.utils.seed import seed_everything
from tests.conftest import tiny_config

STEP_WITH_SEG = 2  # >= train.cls_warmup_steps in the tiny config, < contrast start below


def _setup(tmp: Path):
    cfg = tiny_config(tmp / "run", "loss.contrast_start_step=1000")
    seed_everything(0)
    data = build_dataset(cfg, "val", train=False)
    model = build_model(cfg, data.num_classes)
    for m in model.modules():  # dropout would draw different masks in the two set-ups
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
    objective = DSCLObjective(cfg, data.num_classes, build_pseudo_labeler(cfg))
    # A sharp random classifier, so that the untrained model predicts many classes and the
    # metric comparison below is not trivially "everything is one class".
    last_conv = [m for m in model.seg_head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.normal_(last_conv.weight, std=3.0)
    batch = [data[i] for i in range(8)]
    images = torch.stack([b["image"] for b in batch])
    tags = torch.stack([b["tags"] for b in batch])
    return cfg, data, model, objective, images, tags


def _worker(rank: int, tmp: str) -> None:
    tmp_path = Path(tmp)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=rank, world_size=2)
    try:
        cfg, data, model, objective, images, tags = _setup(tmp_path)
        confusion = evaluate(model, data, cfg, what="seg", rank=rank, world_size=2).confusion
        if rank == 0:
            torch.save(confusion.matrix.cpu(), tmp_path / "ddp_confusion.pth")
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        half = slice(4 * rank, 4 * rank + 4)
        out = ddp(images[half], tags[half])
        objective(out, model, images[half], tags[half], STEP_WITH_SEG).total.backward()
        if rank == 0:
            torch.save({n: p.grad for n, p in model.named_parameters()}, tmp_path / "ddp_grads.pth")

        ctx = DistContext(rank=rank, world_size=2, local_rank=rank, device=torch.device("cpu"))
        trainer = Trainer(tiny_config(tmp_path / "train", "train.max_steps=3"), ctx)
        trainer.fit()
        flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        both = [torch.empty_like(flat) for _ in range(2)]
        dist.all_gather(both, flat)
        if rank == 0:
            torch.save(torch.stack(both), tmp_path / "ddp_weights.pth")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process(tmp_path: Path):
    os.environ.pop("WORLD_SIZE", None)
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=2, join=True)

    cfg, data, model, objective, images, tags = _setup(tmp_path)
    single = evaluate(model, data, cfg, what="seg").confusion.matrix.cpu()
    assert single.sum() == 12 * 48 * 48  # every validation pixel counted once, none twice
    assert (single.sum(0) > 0).sum() >= 2  # the untrained model predicts several classes
    assert torch.equal(torch.load(tmp_path / "ddp_confusion.pth", weights_only=True), single)
    for half in (slice(0, 4), slice(4, 8)):
        out = model(images[half], tags[half])
        (objective(out, model, images[half], tags[half], STEP_WITH_SEG).total / 2).backward()
    ddp_grads = torch.load(tmp_path / "ddp_grads.pth", weights_only=True)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ddp_grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)

    weights = torch.load(tmp_path / "ddp_weights.pth", weights_only=True)
    assert torch.equal(weights[0], weights[1])
    assert (tmp_path / "train" / "checkpoints" / "last.pth").is_file()
