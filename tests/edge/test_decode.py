import io

import numpy as np
import pytest
from PIL import Image

from cnnviz import InputTooLarge, InvalidInput
from tests.images import encode, jpeg, npy, photo
from vizserve import read_image, read_npy

CAP = 10_000_000


def test_jpeg_decodes_to_rgb():
    im = read_image(jpeg(64, 48), max_pixels=CAP)
    assert im.mode == "RGB" and im.size == (64, 48)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (4, 2), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = read_image(encode(im, "JPEG", exif=exif.tobytes()), max_pixels=CAP)
    assert out.size == (2, 4)


@pytest.mark.parametrize(
    "mode, colour, expected",
    [
        ("L", 100, (100, 100, 100)),
        ("1", 1, (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),  # fully transparent -> the white background
        ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
        ("LA", (0, 128), (128, 128, 128)),  # black at half alpha over white
    ],
)
def test_modes_become_rgb(mode, colour, expected):
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    out = read_image(encode(Image.new(mode, (3, 3), colour), fmt), max_pixels=CAP)
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == pytest.approx(expected, abs=1)


def test_palette_with_transparency():
    im = Image.new("P", (2, 2), 0)
    im.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    im.putpixel((1, 1), 1)
    out = read_image(encode(im, "PNG", transparency=0), max_pixels=CAP)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (200, 0, 0)


def test_sixteen_bit_greyscale_uses_its_full_range():
    arr = np.array([[0, 32768], [65535, 65535]], dtype=np.uint16)
    out = read_image(encode(Image.fromarray(arr), "PNG"), max_pixels=CAP)
    assert [out.getpixel(p)[0] for p in [(0, 0), (1, 0), (0, 1)]] == [0, 128, 255]


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (4, 4), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert read_image(data, max_pixels=CAP).getpixel((0, 0)) == (255, 0, 0)


def test_pixel_cap_is_checked_from_the_header_before_decoding():
    data = encode(photo(200, 100), "PNG")[:100]  # header only: decoding it would fail
    with pytest.raises(InputTooLarge, match=r"200x100 = 20,000 pixels; this server takes at most 10,000"):
        read_image(data, max_pixels=10_000)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"GIF89a-not-really", "not an image"),
        (b"hello world", "not an image"),
        (jpeg()[:400], "cannot decode the"),
        (jpeg()[:2000], "cannot decode the"),
    ],
)
def test_broken_images(data, match):
    with pytest.raises(InvalidInput, match=match):
        read_image(data, max_pixels=CAP)


def test_npy_used_exactly_as_given():
    arr = np.random.default_rng(0).standard_normal((3, 70, 80)).astype(np.float32)
    got = read_npy(npy(arr), min_side=63, max_side=1024)
    assert got.dtype.is_floating_point and got.shape == (3, 70, 80)
    assert np.array_equal(got.numpy(), arr)
    fortran = np.asfortranarray(arr)
    assert np.array_equal(read_npy(npy(fortran), min_side=1, max_side=1024).numpy(), arr)


@pytest.mark.parametrize(
    "arr, error, match",
    [
        (np.zeros((3, 70, 70), np.float64), InvalidInput, r"dtype <f8; expected float32"),
        (np.zeros((70, 70, 3), np.float32), InvalidInput, r"shape \[70, 70, 3\]; expected \[3, H, W\]"),
        (np.zeros((3, 10, 70), np.float32), InvalidInput, r"within 63\.\.1024"),
        (np.zeros((3, 2000, 70), np.float32), InputTooLarge, r"within 63\.\.1024"),
        (np.full((3, 70, 70), np.nan, np.float32), InvalidInput, "NaN or infinity"),
        (np.full((3, 70, 70), np.inf, np.float32), InvalidInput, "NaN or infinity"),
    ],
)
def test_bad_arrays(arr, error, match):
    with pytest.raises(error, match=match):
        read_npy(npy(arr), min_side=63, max_side=1024)


def test_npy_header_claiming_a_huge_shape_is_refused_without_reading():
    header = npy(np.zeros((3, 8, 8), np.float32))
    forged = header.replace(b"(3, 8, 8)", b"(3, 99999999, 9)")
    with pytest.raises(InputTooLarge):
        read_npy(forged, min_side=1, max_side=1024)


def test_npy_with_missing_data_and_pickles():
    data = npy(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(InvalidInput, match="needs 768 bytes of data, got 700"):
        read_npy(data[:-68], min_side=1, max_side=1024)
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInput, match="dtype"):
        read_npy(buf.getvalue(), min_side=1, max_side=1024)


def test_pillows_own_bomb_check_gives_the_same_message():
    from tests.images import png_header_only

    with pytest.raises(InputTooLarge, match=r"image is 400,000,000 pixels; this server takes at most 1,000,000"):
        read_image(png_header_only(20_000, 20_000), max_pixels=1_000_000)
