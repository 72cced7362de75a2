"""benchmarks/cam_grid_oracle.py: known answers of the grid oracle, and the command end to end
on a tiny VOC-layout folder."""

from __future__ import annotations

import json

import pytest
import torch

from . import benchmark_script
from .test_real_photos import _voc


@pytest.fixture(scope="module")
def oracle():
    with benchmark_script("cam_grid_oracle") as module:
        yield module


def _miou(module, mask: torch.Tensor, k: int, stride: int) -> dict:
    return module.oracle_scores([mask], k, [stride])[stride]


def test_grid_aligned_regions_are_reproduced_exactly(oracle) -> None:
    # Bands of whole stride-8 cells across a 40 x 48 image, vertical and horizontal.
    cols = torch.tensor([0, 1, 1, 2, 0, 3]).repeat_interleave(8)
    rows = torch.tensor([0, 2, 2, 1, 3]).repeat_interleave(8)
    for mask in (cols[None, :].expand(40, 48).clone(), rows[:, None].expand(40, 48).clone()):
        assert torch.equal(oracle.oracle_prediction(mask, 4, 8), mask)
        assert _miou(oracle, mask, 4, 8)["miou"] == pytest.approx(1.0)
    # A cell-aligned rectangle: the shares are one-hot, the argmax rounds only its corners.
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[8:24, 8:24] = 1
    shares = oracle.area_shares(mask, 2, 8)
    assert shares.shape == (2, 4, 4) and torch.equal(shares[1], (shares[1] > 0).float())
    assert torch.equal(oracle.oracle_prediction(mask, 2, 1), mask)


def test_a_one_pixel_wide_object_is_lost_at_stride_8_kept_at_stride_1(oracle) -> None:
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[:, 13] = 1
    lost = _miou(oracle, mask, 2, 8)
    assert lost["iou"][1] == 0.0 and lost["miou"] == pytest.approx(0.5 * (1024 - 32) / 1024)
    assert not bool((oracle.oracle_prediction(mask, 2, 8) == 1).any())
    assert torch.equal(oracle.oracle_prediction(mask, 2, 1), mask)
    assert _miou(oracle, mask, 2, 1)["miou"] == pytest.approx(1.0)


def test_ignored_pixels_do_not_vote(oracle) -> None:
    # One 16x16 cell: a quarter is class 2, the rest ignored -> the cell is all class 2.
    mask = torch.full((16, 16), 255, dtype=torch.long)
    mask[:8, :8] = 2
    shares = oracle.area_shares(mask, 3, 16)
    assert torch.allclose(shares[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert bool((oracle.oracle_prediction(mask, 3, 16) == 2).all())
    # A cell of class 1 (a few pixels) among ignored ones outvotes a background cell that is
    # mostly labelled; an all-ignored cell holds no votes at all.
    mask = torch.full((8, 24), 255, dtype=torch.long)
    mask[:, 8:16] = 0
    mask[0, 0] = 1
    shares = oracle.area_shares(mask, 2, 8)
    assert torch.allclose(shares[:, 0, 0], torch.tensor([0.0, 1.0]))
    assert torch.allclose(shares[:, 0, 1], torch.tensor([1.0, 0.0]))
    assert torch.equal(shares[:, 0, 2], torch.zeros(2))
    assert int(oracle.oracle_prediction(mask, 2, 8)[0, 0]) == 1
    assert _miou(oracle, mask, 2, 8)["num_pixels"] == 8 * 8 + 1  # ignored pixels are not scored
    with pytest.raises(ValueError, match="outside"):
        oracle.area_shares(torch.full((4, 4), 7), 2, 2)


def test_the_command_writes_the_strides_asked_and_rejects_a_missing_root(oracle, tmp_path, capsys) -> None:
    _voc(tmp_path / "voc")
    out = tmp_path / "oracle.json"
    status = oracle.main(["--root", str(tmp_path / "voc"), "--split", "train", "--strides", "16,4,1",
                          "--out", str(out)])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "| stride |" in printed and "commit" in printed and "| 16 |" in printed
    report = json.loads(out.read_text())
    assert list(report["strides"]) == ["16", "4", "1"] and report["images"] == 6
    assert report["strides"]["1"]["miou"] == pytest.approx(1.0)  # stride 1 is the mask itself
    assert all(0.0 <= r["miou"] <= 1.0 for r in report["strides"].values())
    assert set(report["strides"]["4"]["iou"]) == {"background", "disc", "bar"}
    assert oracle.main(["--root", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
