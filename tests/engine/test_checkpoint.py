import errno
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from dscnet.engine.checkpoint import rng_state, save_checkpoint, set_rng_state
from dscnet.errors import CheckpointError, OutputError
from dscnet.models.loading import load_checkpoint
from dscnet.utils.io import atomic_write


def test_rng_state_round_trip_restores_every_generator():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_checkpoint_loads_with_weights_only_and_keeps_rng(tmp_path: Path):
    path = save_checkpoint(tmp_path / "c.pth", model={"w": torch.ones(2)}, config={"a": 1}, rng=[rng_state()], step=3)
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 3 and torch.equal(ckpt["model"]["w"], torch.ones(2))
    # the whole payload is plain data: the safe loader accepts it
    torch.load(path, weights_only=True)
    set_rng_state(ckpt["rng"][0])


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path: Path):
    target = tmp_path / "last.pth"
    target.write_text("old")

    def boom(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=r"last\.pth: cannot write: no space left on device"):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temp file left


def test_bad_checkpoints_get_clear_errors(tmp_path: Path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth: cannot read checkpoint"):
        load_checkpoint(corrupt)
    other = tmp_path / "other.pth"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not a dscnet checkpoint"):
        load_checkpoint(other)
    good = save_checkpoint(tmp_path / "g.pth", model={}, config={})
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        load_checkpoint(truncated)
