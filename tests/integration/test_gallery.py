"""Galleries, opened as a person would: in a headless Chromium, every picture loaded, a screenshot kept."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.images import shape_folder

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000"]  # fmt: skip


def chromium(tmp_path: Path, *args: str) -> str:
    assert CHROMIUM, "Chromium is needed to open the galleries: apt-get install chromium (scripts/setup.sh --dev does)"
    profile = tmp_path / "chromium-profile"
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    return run.stdout


def build(server, tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "gallery"
    cmd = [sys.executable, str(ROOT / "clients" / "gallery.py"), *args, "--url", server.url, "--out", str(out)]
    env_token = [f"--token={server.key}"]  # a key may start with "-": one argument
    subprocess.run(cmd + env_token, check=True, timeout=300, cwd=tmp_path)
    return out / "index.html"


def check_loaded(tmp_path: Path, page: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    m = re.search(r"<title>loaded (\d+)/(\d+)</title>", dom)
    assert m, dom[:500]
    loaded, total = int(m.group(1)), int(m.group(2))
    assert total > 0 and loaded == total, f"{loaded} of {total} pictures loaded"
    shot = tmp_path / "gallery.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri())
    with Image.open(shot) as picture:
        assert picture.size == (1200, 900)


def test_class_pattern_gallery(server, tmp_path):
    page = build(server, tmp_path, "classes", "--model", "shapes_viz", "--channel", "0-5", "--steps", "16")
    assert page.read_text().count("<img") == 6
    check_loaded(tmp_path, page)


def test_channel_gallery_for_several_layers(server, tmp_path):
    page = build(server, tmp_path, "channels", "--model", "shapes_viz", "--layers", "features.0,features.3",
                 "--channel", "0-3", "--steps", "8")  # fmt: skip
    assert page.read_text().count("<img") == 8
    check_loaded(tmp_path, page)


def test_feature_map_and_gradcam_gallery_for_a_folder(server, tmp_path):
    photos = tmp_path / "photos"
    shape_folder(photos, 3, 9)
    page = build(server, tmp_path, "images", str(photos), "--model", "shapes_viz")
    assert page.read_text().count("<img") == 3 * 4  # input, Grad-CAM, two feature-map grids
    check_loaded(tmp_path, page)
