"""predict_paths on a folder of awkward images: sizes, EXIF, modes, corrupt files, bombs."""

from __future__ import annotations

import csv
import errno
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dscnet.errors import MissingExtraError
from dscnet.inference.predict import predict_paths
from dscnet.inference.predict_inputs import expand_inputs, output_stems

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NAMES = ["background", "red thing", "green/thing"]
RED, GREEN = (255, 0, 0), (0, 255, 0)


def _red_green(h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:, : w // 2] = RED
    img[:, w // 2 :] = GREEN
    return img


def _write_exif_rotated(path, h: int = 24, w: int = 40) -> None:
    """A JPEG stored landscape (w x h) with EXIF orientation 6 (display rotated 90° CW)."""
    img = Image.fromarray(_red_green(h, w))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif, quality=95)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(_red_green(37, 53)).save(d / "a_rgb.png")
    Image.fromarray(np.full((30, 20), 60, dtype=np.uint8), mode="L").save(d / "b_gray.jpg")
    rgba = np.zeros((19, 23, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 128
    Image.fromarray(rgba, mode="RGBA").save(d / "c_rgba.png")
    _write_exif_rotated(d / "d_exif.jpg")
    (d / "e_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (d / "notes.txt").write_text("not an image, not an input")
    return d


def _mask(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.array(im)


def test_folder_with_awkward_images(colour_model, folder, tmp_path) -> None:
    out = tmp_path / "out"
    summary = predict_paths(colour_model, [folder], out, MEAN, STD, NAMES, progress=False)

    assert summary.ok == 4
    assert [p for p, _ in summary.failed] == [str(folder / "e_corrupt.jpg")]
    assert "e_corrupt.jpg" in summary.failed[0][1] and "corrupt" in summary.failed[0][1]
    assert not summary.all_ok

    # Same size as the (EXIF-transposed) input, palette PNG with the known answer.
    a = _mask(out / "a_rgb.png")
    assert a.shape == (37, 53)
    assert (a[:, :26] == 1).all() and (a[:, 27:] == 2).all()
    assert _mask(out / "b_gray.png").shape == (30, 20)
    assert (_mask(out / "b_gray.png") == 0).all()  # dark grey: R, G logits < 0 = background
    rgba = _mask(out / "c_rgba.png")
    assert rgba.shape == (19, 23) and (rgba == 1).all()  # colour under alpha is kept
    d = _mask(out / "d_exif.png")
    assert d.shape == (40, 24)  # orientation 6 swaps the sides
    # Rotated 90° clockwise: the red left half of the stored image ends up on top.
    assert (d[:18] == 1).all() and (d[22:] == 2).all()

    for stem in ("a_rgb", "b_gray", "c_rgba", "d_exif"):
        assert (out / f"{stem}_overlay.jpg").is_file()
    assert not list(out.glob("*_cam_*"))
    assert not (out / "e_corrupt.png").exists()
    with open(out / "index.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and rows[-1]["mask"] == "" and "corrupt" in rows[-1]["error"]


def test_cams_for_classes_the_model_finds(colour_model, tmp_path) -> None:
    Image.fromarray(np.full((20, 24, 3), RED, dtype=np.uint8)).save(tmp_path / "red.png")
    out = tmp_path / "out"
    summary = predict_paths(
        colour_model, [tmp_path / "red.png"], out, MEAN, STD, NAMES,
        save_cams=True, save_overlay=False, progress=False,
    )
    assert summary.ok == 1
    # Image scores: sigmoid(mean R) ~ 0.9 for class 1, sigmoid(mean G) ~ 0.1 for class 2.
    cams = sorted(p.name for p in out.glob("*_cam_*"))
    assert cams == ["red_cam_red_thing.png"]
    with Image.open(out / cams[0]) as im:
        assert im.size == (24, 20) and im.mode == "RGB"
    assert not (out / "red_overlay.jpg").exists()


def test_name_collisions_globs_and_missing_inputs(colour_model, tmp_path) -> None:
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        Image.fromarray(_red_green(8, 8)).save(tmp_path / sub / "same.png")
    Image.fromarray(_red_green(8, 10)).save(tmp_path / "x" / "same.jpg")
    out = tmp_path / "out"
    summary = predict_paths(
        colour_model,
        [tmp_path / "x", str(tmp_path / "y" / "*.png"), tmp_path / "x" / "same.png", tmp_path / "nope.png"],
        out, MEAN, STD, NAMES, save_overlay=False, progress=False, batch_size=3,
    )
    assert summary.ok == 3  # x/same.png listed twice is done once
    assert summary.failed == [(str(tmp_path / "nope.png"), f"no such file or folder: {tmp_path / 'nope.png'}")]
    assert sorted(p.name for p in out.glob("*.png")) == ["same-2.png", "same-3.png", "same.png"]
    sizes = {_mask(out / n).shape for n in ("same.png", "same-2.png", "same-3.png")}
    assert sizes == {(8, 8), (8, 10)}


def test_expand_inputs_reports_empty_folders_and_patterns(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    files, problems = expand_inputs([tmp_path / "empty", str(tmp_path / "*.jpg")])
    assert files == []
    assert "holds no images" in problems[0][1] and "matches no images" in problems[1][1]
    assert output_stems([tmp_path / "A.png", tmp_path / "sub" / "a.jpg"]) == ["A", "a-2"]


def test_decompression_bomb_is_refused(colour_model, tmp_path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(_red_green(20, 30)).save(images / "big.png")
    Image.fromarray(_red_green(5, 6)).save(images / "small.png")
    out = tmp_path / "out"
    summary = predict_paths(
        colour_model, [images], out, MEAN, STD, NAMES, max_pixels=100, progress=False
    )
    assert summary.ok == 1 and (out / "small.png").is_file()
    (path, message), = summary.failed
    assert path == str(images / "big.png")
    assert "30x20 = 600 pixels" in message and "decompression-bomb" in message


def test_crf_refines_and_missing_crf_fails_before_any_image(colour_model, tmp_path, monkeypatch) -> None:
    Image.fromarray(_red_green(16, 20)).save(tmp_path / "rg.png")
    out = tmp_path / "out"
    summary = predict_paths(
        colour_model, [tmp_path / "rg.png"], out, MEAN, STD, NAMES,
        scales=(0.75, 1.0), flip=True, crf={"iterations": 3}, save_overlay=False, progress=False,
    )
    assert summary.ok == 1
    mask = _mask(out / "rg.png")
    assert (mask[:, :9] == 1).all() and (mask[:, 11:] == 2).all()

    import sys

    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(MissingExtraError, match="crf"):
        predict_paths(colour_model, [tmp_path / "rg.png"], tmp_path / "o2", MEAN, STD, NAMES, crf={}, progress=False)
    assert not (tmp_path / "o2").exists()


def test_class_name_count_must_match(colour_model, tmp_path) -> None:
    from dscnet.errors import ConfigError

    Image.fromarray(_red_green(8, 8)).save(tmp_path / "rg.png")
    with pytest.raises(ConfigError, match="2 class names"):
        predict_paths(colour_model, [tmp_path / "rg.png"], tmp_path / "o", MEAN, STD, NAMES[:2], progress=False)


def test_upsampled_argmax_matches_full_resize() -> None:
    import torch
    import torch.nn.functional as F

    from dscnet.inference.predict import upsampled_argmax

    probs = torch.rand(2, 5, 7, 9, generator=torch.Generator().manual_seed(0))
    full = F.interpolate(probs, size=(30, 41), mode="bilinear", align_corners=False).argmax(1)
    out = upsampled_argmax(probs, (30, 41))
    assert out.dtype == torch.uint8 and out.shape == (2, 30, 41)
    torch.testing.assert_close(out.long(), full)


def test_large_images_are_segmented_at_max_side(colour_model, tmp_path) -> None:
    Image.fromarray(_red_green(60, 100)).save(tmp_path / "wide.png")
    seen = []
    segment = colour_model.segment
    colour_model.segment = lambda x: seen.append(tuple(x.shape[-2:])) or segment(x)
    out = tmp_path / "out"
    summary = predict_paths(
        colour_model, [tmp_path / "wide.png"], out, MEAN, STD, NAMES,
        max_side=40, crf={"iterations": 2}, save_overlay=False, progress=False,
    )
    assert summary.ok == 1 and seen == [(24, 40)]
    mask = _mask(out / "wide.png")
    assert mask.shape == (60, 100)
    assert (mask[:, :48] == 1).all() and (mask[:, 52:] == 2).all()


def test_predict_from_checkpoint_uses_its_config(tmp_path) -> None:
    import torch

    from dscnet.config import load_config
    from dscnet.engine.checkpoint import save_checkpoint
    from dscnet.inference.predict import predict_from_checkpoint
    from dscnet.models.dscnet import build_model

    cfg = load_config("synth_cpu", ["eval.scales=[0.5,1.0]", "eval.flip=true"])
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=2)
    ckpt = save_checkpoint(tmp_path / "m.pt", model=model.state_dict(), config=cfg, class_names=NAMES)
    Image.fromarray(_red_green(33, 47)).save(tmp_path / "img.png")
    summary = predict_from_checkpoint(
        ckpt, [tmp_path / "img.png"], tmp_path / "out", device="cpu", save_cams=True, progress=False
    )
    assert summary.ok == 1 and summary.all_ok
    mask = _mask(tmp_path / "out" / "img.png")
    assert mask.shape == (33, 47) and mask.max() <= 2


def test_pixel_limit_overrides_pillows_in_both_directions(colour_model, tmp_path, monkeypatch) -> None:
    Image.fromarray(_red_green(20, 30)).save(tmp_path / "img.png")
    refused = predict_paths(
        colour_model, [tmp_path / "img.png"], tmp_path / "o1", MEAN, STD, NAMES, max_pixels=100, progress=False
    )
    assert refused.ok == 0 and "decompression-bomb" in refused.failed[0][1]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's limit does not decide
    allowed = predict_paths(colour_model, [tmp_path / "img.png"], tmp_path / "o2", MEAN, STD, NAMES, progress=False)
    assert allowed.ok == 1 and Image.MAX_IMAGE_PIXELS == 100  # restored afterwards


def _tree(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_among_the_inputs_is_refused_before_any_work(colour_model, folder, tmp_path) -> None:
    from dscnet.errors import OutputError

    before = _tree(folder)
    (folder / "sub").mkdir()
    image = folder / "a_rgb.png"
    for inputs, out, why in [
        ([folder], folder, "is the input folder"),
        ([folder], folder / "sub", "lies inside the input folder"),
        ([str(folder / "*.png")], folder, "is the input folder"),
        ([image], folder, "is the folder of input images"),
    ]:
        with pytest.raises(OutputError, match=why):
            predict_paths(colour_model, inputs, out, MEAN, STD, NAMES, progress=False)
    assert _tree(folder) == before  # not one byte written or overwritten
    # A plain pattern's folder may hold the output folder: the pattern never reads it.
    summary = predict_paths(colour_model, [str(folder / "*.png")], folder / "sub", MEAN, STD, NAMES, progress=False)
    assert summary.ok == 2


def test_outputs_of_an_earlier_run_are_not_inputs(colour_model, folder, tmp_path) -> None:
    from dscnet.errors import DatasetError

    out = tmp_path / "out"
    predict_paths(colour_model, [folder], out, MEAN, STD, NAMES, progress=False)
    again = tmp_path / "again"
    with pytest.raises(DatasetError, match=r"output folder of an earlier dscnet predict \(it holds index\.csv\)"):
        predict_paths(colour_model, [out], again, MEAN, STD, NAMES, progress=False)
    with pytest.raises(DatasetError, match="earlier dscnet predict"):
        predict_paths(colour_model, [out / "a_rgb.png"], again, MEAN, STD, NAMES, progress=False)
    assert not again.exists()


def test_broken_links_and_folders_named_like_images_are_reported(colour_model, tmp_path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(_red_green(8, 8)).save(images / "ok.png")
    (images / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (images / "album.png").mkdir()
    out = tmp_path / "out"
    summary = predict_paths(colour_model, [images, str(images / "*.jpg")], out, MEAN, STD, NAMES, progress=False)
    assert summary.ok == 1
    failed = dict(summary.failed)
    assert "broken symbolic link" in failed[str(images / "gone.jpg")]
    assert "is a folder named like an image" in failed[str(images / "album.png")]
    with open(out / "index.csv") as f:
        rows = {r["input"]: r for r in csv.DictReader(f)}
    assert rows[str(images / "ok.png")]["mask"] == "ok.png"
    assert "broken symbolic link" in rows[str(images / "gone.jpg")]["error"]
    assert "folder" in rows[str(images / "album.png")]["error"]


def test_a_full_disk_stops_the_run_and_index_csv_says_what_happened(colour_model, tmp_path, monkeypatch) -> None:
    from dscnet.errors import OutputError

    images = tmp_path / "in"
    images.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(_red_green(8, 8)).save(images / f"{name}.png")
    real_save, calls = Image.Image.save, []

    def save_until_the_disk_is_full(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) > 2:  # a's mask and overlay fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_until_the_disk_is_full)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=r"b\.png: cannot write: no space left on device"):
        predict_paths(colour_model, [images], out, MEAN, STD, NAMES, progress=False)
    with open(out / "index.csv") as f:
        rows = {Path(r["input"]).name: r for r in csv.DictReader(f)}
    assert rows["a.png"]["mask"] == "a.png" and rows["a.png"]["error"] == ""
    assert "no space left on device" in rows["b.png"]["error"]
    assert rows["c.png"]["error"].startswith(f"{images / 'c.png'}: not processed (the run stopped")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_overlay.jpg", "index.csv"]  # no temp files


def test_masks_and_overlays_honour_the_umask(colour_model, tmp_path) -> None:
    import os
    import stat

    Image.fromarray(_red_green(8, 8)).save(tmp_path / "img.png")
    old = os.umask(0o027)
    try:
        predict_paths(colour_model, [tmp_path / "img.png"], tmp_path / "out", MEAN, STD, NAMES, progress=False)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert modes == {"img.png": 0o640, "img_overlay.jpg": 0o640, "index.csv": 0o640}
