"""read_image / read_mask / class lists: conversions and the messages of bad input."""

from __future__ import annotations

import errno
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dscnet.data.base import tags_from_mask
from dscnet.data.palette import colorize, voc_palette
from dscnet.data.readers import (
    DEFAULT_MAX_PIXELS,
    check_label_ids,
    image_size,
    read_class_file,
    read_image,
    read_mask,
)
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


def png_claiming(width: int, height: int) -> bytes:
    """A 100-byte PNG whose header claims ``width x height`` RGB pixels (a decompression bomb
    in miniature: decoding it would allocate the claimed size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    # 8000 x 8000 = 64 Mpixel: under Pillow's 89 Mpixel, over dscnet's 40 Mpixel default.
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(8000, 8000))
    assert path.stat().st_size < 200 and 8000 * 8000 > DEFAULT_MAX_PIXELS
    # Refused from the header: decoding would have reported the file as truncated instead.
    for read in (read_image, image_size, read_mask):
        with pytest.raises(DatasetError, match=r"bomb\.png: .* refused: it is 8000x8000 = 64,000,000 pixels"):
            read(path)
    # The limit can be raised (then the file is read, and found truncated).
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        read_image(path, max_pixels=64_000_000)


def test_pixel_limit_is_dscnets_not_pillows(tmp_path, monkeypatch):
    Image.fromarray(rgb_image(40, 40, 2)).save(tmp_path / "big.png")
    with pytest.raises(DatasetError, match=r"big\.png: image refused: it is 40x40 = 1,600 pixels, more than the limit of 100 pixels"):
        read_image(tmp_path / "big.png", max_pixels=100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own guard, lowered
    assert read_image(tmp_path / "big.png").shape == (40, 40, 3)
    assert Image.MAX_IMAGE_PIXELS == 100  # left as it was


def test_unreadable_file_is_not_called_corrupt(tmp_path, monkeypatch):
    from pathlib import Path

    Image.fromarray(rgb_image(4, 4, 0)).save(tmp_path / "locked.png")

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", denied)  # chmod 000 does not stop root, this does
    with pytest.raises(DatasetError, match=r"locked\.png: cannot read image: permission denied$"):
        read_image(tmp_path / "locked.png")


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


def test_class_file_with_background_last_says_so(tmp_path):
    (tmp_path / "c.txt").write_text("cat\ndog\nbackground\n")
    with pytest.raises(DatasetError, match=r"c\.txt:3: 'background' must be the first class"):
        read_class_file(tmp_path / "c.txt")
