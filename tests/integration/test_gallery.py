"""Galleries, opened as a person would: in a headless Chromium (Playwright, conftest's browser), every picture loaded,
nothing wider than a 1,280 px window, a screenshot kept (with VIZ_WRITE_SCREENSHOTS=1 the images gallery's is
docs/gallery.png, the README's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.images import shape_folder

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WRITE_DOCS = os.environ.get("VIZ_WRITE_SCREENSHOTS") == "1"
FIGURES = "Array.from(document.querySelectorAll('figure'))"
#: Each section's rows of pictures: how many different tops its figures have.
ROWS = """Array.from(document.querySelectorAll('section'),
  (s) => new Set(Array.from(s.querySelectorAll('figure'), (f) => f.getBoundingClientRect().top)).size)"""


def build(server, tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "gallery"
    cmd = [sys.executable, str(ROOT / "clients" / "gallery.py"), *args, "--url", server.url, "--out", str(out)]
    env_token = [f"--token={server.key}"]  # a key may start with "-": one argument
    subprocess.run(cmd + env_token, check=True, timeout=300, cwd=tmp_path)
    return out / "index.html"


def check_loaded(browser, tmp_path: Path, page: Path, docs: str | None = None) -> int:
    """The page in a 1,280 x 900 window: every picture loaded, nothing wider than the window (no horizontal scroll);
    returns the rows of pictures it shows. A screenshot beside it (with VIZ_WRITE_SCREENSHOTS=1 also docs/DOCS)."""
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        pg.goto(page.as_uri())
        pg.wait_for_function("document.title.startsWith('loaded')", timeout=30_000)
        loaded, total = map(int, re.fullmatch(r"loaded (\d+)/(\d+)", pg.title()).groups())
        assert total > 0 and loaded == total, f"{loaded} of {total} pictures loaded"
        width = pg.evaluate("document.documentElement.scrollWidth")
        right = pg.evaluate(f"Math.max(...{FIGURES}.map((f) => f.getBoundingClientRect().right))")
        assert width <= 1280 and right <= 1280 - 24, (width, right)  # within the window and its margin
        rows = pg.evaluate(ROWS)
        pg.screenshot(path=str(tmp_path / "gallery.png"))
        if docs and WRITE_DOCS:
            pg.screenshot(path=str(ROOT / "docs" / docs))
        return max(rows)
    finally:
        pg.close()


def test_class_pattern_gallery(server, browser, tmp_path):
    page = build(server, tmp_path, "classes", "--model", "shapes_viz", "--channel", "0-5", "--steps", "16")
    assert page.read_text().count("<img") == 6
    assert check_loaded(browser, tmp_path, page) == 2  # six of 224 px (and their gaps) do not fit 1,232 px: they wrap


def test_channel_gallery_for_several_layers(server, browser, tmp_path):
    page = build(server, tmp_path, "channels", "--model", "shapes_viz", "--layers", "features.0,features.3",
                 "--channel", "0-3", "--steps", "8")  # fmt: skip
    assert page.read_text().count("<img") == 8
    assert check_loaded(browser, tmp_path, page) == 1


def test_feature_map_and_gradcam_gallery_for_a_folder(server, browser, tmp_path):
    photos = tmp_path / "photos"
    shape_folder(photos, 3, 9)
    page = build(server, tmp_path, "images", str(photos), "--model", "shapes_viz")
    assert page.read_text().count("<img") == 3 * 4  # input, Grad-CAM, two feature-map grids
    assert check_loaded(browser, tmp_path, page, "gallery.png") >= 1
