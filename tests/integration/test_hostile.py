"""Hostile and odd inputs against a real TorchServe: each bad one gets a clear 4xx, each odd-but-valid image a 200,
and the worker that served them is the same process afterwards."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import requests
from PIL import Image

from tests.images import encode, jpeg, npy, photo, png_header_only

pytestmark = pytest.mark.integration
MODEL = "alexnet_viz"


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello")
    return buf.getvalue()


def bilevel_bomb() -> bytes:
    """12000 x 12000 one-bit PNG: about 20 kB on the wire, 432 MB once decoded to RGB."""
    return encode(Image.new("1", (12_000, 12_000), 0), "PNG")


def gif_header(width: int, height: int) -> bytes:
    """A real 8 x 8 GIF whose logical screen claims ``width x height``."""
    data = bytearray(encode(Image.new("P", (8, 8), 0), "GIF"))
    data[6:10] = width.to_bytes(2, "little") + height.to_bytes(2, "little")
    return bytes(data)


def pickled_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


def forged_npy() -> bytes:
    return npy(np.zeros((3, 8, 8), np.float32)).replace(b"(3, 8, 8)", b"(3, 99999, 99999)")


def corrupt_png() -> bytes:
    data = bytearray(encode(photo(64, 64), "PNG"))
    data[60:80] = b"\x00" * 20  # inside the image data: bad CRC / bad deflate stream
    return bytes(data)


# (name, form fields or raw body, expected status, expected error type, text in the message)
BAD = [
    ("empty body", {"body": b""}, 400, "InvalidInput", "needs an image"),
    ("truncated jpeg", {"data": jpeg()[:500]}, 400, "InvalidInput", "cannot decode"),
    ("corrupt png", {"data": corrupt_png()}, 400, "InvalidInput", "cannot decode"),
    ("plain text", {"data": b"just some text, not a picture"}, 400, "InvalidInput", "not an image"),
    ("zip archive", {"data": zip_bytes()}, 400, "InvalidInput", "not an image"),
    ("png bomb header", {"data": png_header_only(40_000, 40_000)}, 413, "InputTooLarge", "1,600,000,000 pixels"),
    ("bilevel png bomb", {"data": bilevel_bomb()}, 413, "InputTooLarge", "144,000,000 pixels"),
    ("gif bomb header", {"data": gif_header(65535, 65535)}, 413, "InputTooLarge", "pixels"),
    ("npy huge header", {"data": forged_npy()}, 413, "InputTooLarge", "99999"),
    ("npy nan", {"data": npy(np.full((3, 64, 64), np.nan, np.float32))}, 400, "InvalidInput", "NaN or infinity"),
    ("npy inf", {"data": npy(np.full((3, 64, 64), -np.inf, np.float32))}, 400, "InvalidInput", "NaN or infinity"),
    ("npy float64", {"data": npy(np.zeros((3, 64, 64)))}, 400, "InvalidInput", "expected float32"),
    ("npy pickle", {"data": pickled_npy()}, 400, "InvalidInput", "dtype"),
    ("npy too small", {"data": npy(np.zeros((3, 8, 8), np.float32))}, 400, "InvalidInput", "63..1024"),
    ("topk text", {"data": jpeg(), "topk": "abc"}, 400, "InvalidOption", "'topk'"),
    ("topk overflow", {"data": jpeg(), "topk": "1e309"}, 400, "InvalidOption", "'topk'"),
    ("topk negative", {"data": jpeg(), "topk": "-5"}, 400, "InvalidOption", "'topk'"),
    ("channels nan", {"data": jpeg(), "mode": "featuremaps", "channels": "NaN"}, 400, "InvalidOption", "'channels'"),
    ("noise inf", {"data": jpeg(), "mode": "saliency", "noise": "inf"}, 400, "InvalidOption", "'noise'"),
    ("samples cap", {"data": jpeg(), "mode": "saliency", "samples": "65"}, 400, "InvalidOption", "1..64"),
    ("ig steps cap", {"data": jpeg(), "mode": "saliency", "ig_steps": "129"}, 400, "InvalidOption", "'ig_steps'"),
    ("actmax steps", {"mode": "actmax", "channel": "1", "steps": "99999999999"}, 400, "InvalidOption", "'steps'"),
    ("actmax size", {"mode": "actmax", "channel": "1", "size": "100000"}, 400, "InvalidOption", "16..512"),
    (
        "actmax targets",
        {"mode": "actmax", "layer": "features.10", "channel": "0-200"},
        400,
        "InvalidOption",
        "at most 64",
    ),
    ("actmax lr", {"mode": "actmax", "channel": "1", "lr": "-1"}, 400, "InvalidOption", "'lr'"),
    ("unknown mode", {"data": jpeg(), "mode": "rm -rf /"}, 400, "InvalidOption", "unknown mode"),
    (
        "unknown layer",
        {"data": jpeg(), "mode": "featuremaps", "layers": "features.99"},
        400,
        "UnknownLayer",
        "valid: features",
    ),
    (
        "dunder layer",
        {"data": jpeg(), "mode": "featuremaps", "layers": "__class__.__init__.__globals__"},
        400,
        "UnknownLayer",
        "unknown layer",
    ),
    (
        "python expression",
        {"data": jpeg(), "mode": "gradcam", "layer": "model.features[0]"},
        400,
        "UnknownLayer",
        "unknown layer",
    ),
    ("shell text", {"data": jpeg(), "mode": "deconv", "layer": "$(id); `id`"}, 400, "UnknownLayer", "unknown"),
    (
        "sql-ish target",
        {"data": jpeg(), "mode": "gradcam", "target": "'; DROP TABLE x;--"},
        400,
        "InvalidOption",
        "'target'",
    ),
    ("unknown option", {"data": jpeg(), "__import__": "os"}, 400, "InvalidOption", "unknown option"),
    ("png of nothing", {"data": jpeg(), "format": "png"}, 400, "InvalidOption", "format=png"),
    ("bad base64", {"json": {"data": "%%%not base64%%%"}}, 400, "InvalidInput", "base64"),
    ("json list", {"json": [1, 2, 3]}, 400, "InvalidInput", "JSON"),
    ("broken json", {"body": b'{"mode": ', "type": "application/json"}, 400, "InvalidInput", "does not parse"),
]


def send(server, case: dict) -> requests.Response:
    case = dict(case)
    if "body" in case:
        kind = case.pop("type", "application/octet-stream")
        return server.post(MODEL, data=case["body"], headers={"Content-Type": kind})
    if "json" in case:
        return server.post(MODEL, json=case["json"])
    files = {"data": ("input", case.pop("data"))} if "data" in case else None
    return server.post(MODEL, files=files, data=case)


@pytest.fixture(scope="module")
def pids(server):
    before = server.worker_pids(MODEL)
    yield before
    assert server.worker_pids(MODEL) == before, "a hostile input restarted the worker"


@pytest.mark.parametrize("name, case, status, kind, text", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_clear_4xx(server, pids, name, case, status, kind, text):
    r = send(server, case)
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    err = r.json()
    assert err == {"code": status, "type": kind, "message": err["message"]}
    assert text in err["message"], err["message"]


def test_oversized_request_is_refused_by_the_front_end(server, pids):
    r = server.post(MODEL, data=b"\xff" * (33 * 2**20), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413, r.text[:200]  # TorchServe's front end answers before the handler, with no JSON


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 8
    return encode(photo(80, 40), "JPEG", exif=exif.tobytes())


def animated() -> bytes:
    frames = [photo(64, 64, seed=s) for s in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


ODD = [
    ("1x1", encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG")),
    ("2x2 greyscale", encode(Image.new("L", (2, 2), 128), "PNG")),
    ("16-bit greyscale", encode(Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16), "PNG")),
    ("CMYK jpeg", encode(photo(64, 64).convert("CMYK"), "JPEG")),
    ("palette with transparency", encode(photo(64, 64).convert("P"), "PNG", transparency=0)),
    ("RGBA", encode(photo(64, 64).convert("RGBA"), "PNG")),
    ("animated gif", animated()),
    ("4000x10 strip", encode(photo(4000, 10), "PNG")),
    ("exif rotated", exif_rotated()),
    ("bmp", encode(photo(50, 50), "BMP")),
    ("webp", encode(photo(50, 50), "WEBP")),
    ("tiff", encode(photo(50, 50), "TIFF")),
    ("one-bit", encode(Image.new("1", (30, 30), 1), "PNG")),
]


@pytest.mark.parametrize("name, data", ODD, ids=[o[0] for o in ODD])
def test_odd_but_valid_images_are_answered(server, pids, name, data):
    r = server.post(MODEL, files={"data": ("input", data)}, data={"mode": "featuremaps", "channels": "4"})
    assert r.status_code == 200, (name, r.text[:300])
    assert len(r.json()["predictions"]) == 5


def test_the_next_valid_request_succeeds(server, pids):
    r = server.post(MODEL, data=jpeg(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200 and json.loads(r.content)["model"] == MODEL
