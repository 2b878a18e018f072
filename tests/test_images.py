import io

import numpy as np
import pytest
from PIL import Image

from robustct.data.images import ImageDecodeError, load_preprocessed, open_complete, to_grayscale_array


def test_16bit_png_is_scaled_by_bit_depth(tmp_path):
    arr = np.array([[0, 1000], [32768, 65535]], dtype=np.uint16)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    gray = to_grayscale_array(open_complete(path))
    np.testing.assert_allclose(gray, arr / 65535.0, atol=1e-6)


def test_rgba_is_composited_on_black():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[0, 0, 3] = 255   # opaque white
    rgba[0, 1, 3] = 0     # fully transparent white -> black
    rgba[1, :, 3] = 128   # half transparent
    gray = to_grayscale_array(Image.fromarray(rgba, "RGBA"))
    assert gray[0, 0] == pytest.approx(1.0)
    assert gray[0, 1] == pytest.approx(0.0)
    assert gray[1, 0] == pytest.approx(128 / 255, abs=2 / 255)


def test_same_pixels_same_tensor_whatever_the_encoding(tmp_path):
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    Image.fromarray(np.stack([gray] * 3, -1), "RGB").save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 255)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray, "L").convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    out = {p: load_preprocessed(tmp_path / p, 32).astype(int) for p in ("l.png", "rgb.png", "rgba.png", "cmyk.jpg")}
    assert np.array_equal(out["l.png"], out["rgb.png"])
    assert np.array_equal(out["l.png"], out["rgba.png"])
    assert np.abs(out["l.png"] - out["cmyk.jpg"]).max() <= 3
    assert out["l.png"].shape == (32, 32)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("L", (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    path = tmp_path / "o.jpg"
    im.save(path, exif=exif)
    assert open_complete(path).size == (20, 40)


@pytest.mark.parametrize("kind", ["truncated_png", "truncated_jpeg", "empty", "text"])
def test_undecodable_files_name_the_file(tmp_path, kind):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(
        buf, "PNG" if "png" in kind else "JPEG")
    data = {"truncated_png": buf.getvalue()[:-200], "truncated_jpeg": buf.getvalue()[: len(buf.getvalue()) // 2],
            "empty": b"", "text": b"not an image at all"}[kind]
    path = tmp_path / f"bad {kind}%.png"
    path.write_bytes(data)
    with pytest.raises(ImageDecodeError, match=str(path).replace("%", ".")):
        open_complete(path)


def test_decompression_bomb_guard(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(path)
    with pytest.raises(ImageDecodeError, match="decompression-bomb guard"):
        open_complete(path, max_pixels=10_000)
