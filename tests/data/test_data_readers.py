"""read_image / read_mask / class lists: conversions and the messages of bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dscnet.data.base import (
    check_label_ids,
    image_size,
    read_class_file,
    read_image,
    read_mask,
    tags_from_mask,
)
from dscnet.data.palette import colorize, voc_palette
from dscnet.errors import DatasetError
from tests.data.datahelpers import rgb_image, save_palette_png


def test_rgb_png_round_trip(tmp_path):
    arr = rgb_image(9, 13, 0)
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (9, 13, 3)
    np.testing.assert_array_equal(out, arr)


def test_missing_image_names_file(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.jpg: image file not found"):
        read_image(tmp_path / "nope.jpg")


def test_corrupt_image_names_file(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"this is not an image at all")
    with pytest.raises(DatasetError, match=r"bad\.jpg: cannot read image: not an image or corrupt"):
        read_image(path)


def test_truncated_image_names_file(tmp_path):
    path = tmp_path / "trunc.jpg"
    Image.fromarray(rgb_image(64, 64, 1)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"trunc\.jpg: cannot read image: corrupt or truncated"):
        read_image(path)


def test_grayscale_is_converted(tmp_path):
    grey = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    Image.fromarray(grey).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (12, 10, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((5, 6, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 77
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (5, 6, 3)
    assert (out == np.array([10, 20, 30], np.uint8)).all()


def test_palette_image_is_converted(tmp_path):
    mask = np.array([[0, 1], [2, 15]], dtype=np.uint8)
    save_palette_png(tmp_path / "p.png", mask)
    out = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out, voc_palette()[mask])


def test_16bit_grayscale_is_rescaled(tmp_path):
    # Pillow alone would clip 16-bit values to 255 (a white image); we rescale to 8 bits.
    values = np.array([[0, 257 * 100], [65535, 257 * 20]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[..., 0], [[0, 100], [255, 20]])


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((4, 8, 3), dtype=np.uint8)  # 4 high, 8 wide; a mark at the top-left
    arr[0, 0] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "o.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "o.jpg")
    assert out.shape == (8, 4, 3)
    assert image_size(tmp_path / "o.jpg") == (8, 4)
    # After a 90-degree clockwise rotation the top-left pixel lands at the top-right.
    assert out[0, -1].mean() > 200 and out[-1, 0].mean() < 60


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    Image.fromarray(rgb_image(40, 40, 2)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DatasetError, match=r"big\.png: image is larger than Pillow's limit of 100"):
        read_image(tmp_path / "big.png")


def test_read_mask_palette_and_grey(tmp_path):
    mask = np.array([[0, 1, 2], [255, 3, 0]], dtype=np.uint8)
    save_palette_png(tmp_path / "m.png", mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", num_classes=3), mask)
    Image.fromarray(mask).save(tmp_path / "l.png")  # mode L
    np.testing.assert_array_equal(read_mask(tmp_path / "l.png", num_classes=3), mask)


def test_read_mask_decodes_rgb_colour_masks(tmp_path):
    mask = np.array([[0, 1, 15], [255, 20, 7]], dtype=np.uint8)
    Image.fromarray(colorize(mask)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png", num_classes=20), mask)
    rgb = colorize(mask)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "odd.png")
    with pytest.raises(
        DatasetError, match=r"odd\.png: RGB mask has colours that are not in the VOC"
    ):
        read_mask(tmp_path / "odd.png")


def test_mask_size_mismatch_names_both_files(tmp_path):
    save_palette_png(tmp_path / "m.png", np.zeros((10, 12), np.uint8))
    with pytest.raises(DatasetError) as err:
        read_mask(tmp_path / "m.png", expected_size=(10, 14), image_path=tmp_path / "img.jpg")
    msg = str(err.value)
    assert "m.png" in msg and "img.jpg" in msg and "12x10" in msg and "14x10" in msg


def test_label_ids_out_of_range_are_named(tmp_path):
    mask = np.array([[0, 1, 7], [9, 255, 2]], dtype=np.uint8)
    save_palette_png(tmp_path / "m.png", mask)
    with pytest.raises(
        DatasetError, match=r"m\.png: label ids \[7, 9\] are outside the class list \(0\.\.3"
    ):
        read_mask(tmp_path / "m.png", num_classes=3)
    check_label_ids(mask, 9, "x")  # 255 is ignore, 0..9 are fine: no error


def test_tags_from_mask_skips_background_and_ignore():
    mask = np.array([[0, 2, 255], [2, 4, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(tags_from_mask(mask, 4), [0, 1, 0, 1])


def test_class_file_forms(tmp_path):
    (tmp_path / "a.txt").write_text("background\ncat\n\n# comment\ndog\n")
    assert read_class_file(tmp_path / "a.txt") == ["background", "cat", "dog"]
    (tmp_path / "b.txt").write_text("cat\ndog\n")  # foreground only: background prepended
    assert read_class_file(tmp_path / "b.txt") == ["background", "cat", "dog"]
    (tmp_path / "c.txt").write_text("background\ncat\ncat\n")
    with pytest.raises(DatasetError, match=r"c\.txt: duplicate class names \['cat'\]"):
        read_class_file(tmp_path / "c.txt")
    with pytest.raises(DatasetError, match="class list file not found"):
        read_class_file(tmp_path / "none.txt")
