"""The explorer (clients/explorer.py), used as a person would: its page in a real headless Chromium (driven by
Playwright, with Debian's Chromium: Playwright's own browsers are never downloaded), against the test TorchServe.

Screenshots go to the test's folder; with VIZ_WRITE_SCREENSHOTS=1 also to docs/explorer*.png (the README's).
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images import shape_folder

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WRITE_DOCS = os.environ.get("VIZ_WRITE_SCREENSHOTS") == "1"


@pytest.fixture(scope="module")
def explorer_url(server) -> Iterator[str]:
    """clients/explorer.py on a free loopback port, forwarding to the test TorchServe; always stopped."""
    cmd = [sys.executable, str(ROOT / "clients" / "explorer.py"), "--server", server.url, "--management",
           server.management, "--key-file", str(server.workdir / "key_file.json"), "--port", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        first = lines.get(timeout=30)
        assert first.startswith("explorer: http://127.0.0.1:"), first
        yield first.split()[1]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


@pytest.fixture(scope="module")
def page(browser, explorer_url, tmp_path_factory):
    """The explorer's page, loaded, with a shape (a cross) dropped in and shapes_viz picked in panel A."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(str(e)))
    pg.goto(explorer_url)
    pg.wait_for_selector("#panel-a[data-ready=true]", timeout=30_000)
    pg.locator("#panel-a .model").select_option("shapes_viz")
    pg.wait_for_selector("#panel-a[data-ready=true][data-model=shapes_viz]", timeout=30_000)
    shapes = tmp_path_factory.mktemp("shapes")
    shape_folder(shapes, 4, 3)  # seed 3: shape3.png is a cross
    pg.set_input_files("#file", str(shapes / "shape3.png"))
    pg.wait_for_selector("body[data-input='shape3.png']")
    yield pg
    pg.close()
    assert not problems, problems  # no script error on the page


def shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    if WRITE_DOCS:
        page.screenshot(path=str(ROOT / "docs" / f"{name}.png"), full_page=True)


def run(panel, mode: str, **options: str) -> None:
    """Pick ``mode`` and the options (opening 'more options' for those there), and press Run."""
    panel.locator(".mode").select_option(mode)
    for name, value in options.items():
        field = panel.locator(f"[data-option={name}]")
        if not field.is_visible():
            panel.locator(".more summary").click()
        if panel.locator(f"select[data-option={name}]").count():
            field.select_option(value)
        else:
            field.fill(value)
    panel.locator(".run").click()


def test_models_and_controls_come_from_the_server(page):
    models = page.locator("#panel-a .model option").all_inner_texts()
    assert {"alexnet_viz", "shapes_viz", "r3d_18_viz", "motion_viz"} <= set(models)
    modes = page.locator("#panel-a .mode option").all_inner_texts()
    assert modes[:3] == ["classify", "featuremaps", "filters"] and "actmax" in modes and "describe" not in modes
    page.locator("#panel-a .mode").select_option("gradcam")
    methods = page.locator("#panel-a [data-option=method] option").all_inner_texts()
    assert "gradcam++" in methods and "scorecam" in methods  # describe's choices for gradcam
    labels = [o.get_attribute("value") for o in page.locator("#labels-a option").all()]
    assert labels == ["circle", "square", "triangle", "cross", "horizontal stripes", "vertical stripes"]


def test_a_photo_gives_predictions_and_a_layer_its_feature_maps(page, tmp_path):
    a = page.locator("#panel-a")
    run(a, "classify")
    page.wait_for_selector("#panel-a [data-kind=predictions] .bar-row", timeout=30_000)
    assert a.locator(".bar-label").first.inner_text() == "cross (3)"
    run(a, "featuremaps", layers="features.3")
    page.wait_for_selector("#panel-a [data-kind=featuremaps][data-layer='features.3'] .channel", timeout=30_000)
    assert a.locator(".channel").count() == 24  # features.3 has 24 channels
    assert "[24,32,32]" in a.locator("[data-kind=grid] figcaption").inner_text()
    a.locator(".channel[data-channel='5']").click()
    zoom = a.locator(".zoom")
    assert zoom.get_attribute("data-channel") == "5" and "channel 5: 32 x 32" in zoom.inner_text()
    link = a.locator("[data-kind=grid] a.download")
    assert link.get_attribute("download") == "shapes_viz_featuremaps_features.3.png"
    assert link.get_attribute("href").startswith("data:image/png;base64,")
    shot(page, tmp_path, "explorer")


def test_two_panels_compare_two_layers(page, tmp_path):
    page.locator("#compare").check()
    b = page.locator("#panel-b")
    page.wait_for_selector("#panel-b[data-ready=true][data-model=shapes_viz]", timeout=30_000)
    run(page.locator("#panel-a"), "gradcam", method="gradcam++")
    run(b, "featuremaps", layers="features.8")
    page.wait_for_selector("#panel-a [data-kind=gradcam] [data-kind=overlay] img", timeout=30_000)
    page.wait_for_selector("#panel-b [data-kind=featuremaps][data-layer='features.8'] .channel", timeout=30_000)
    # each result once: the server's overlay (the input beside the map over it) and the map; the input itself is at
    # the top of the page, not a third time in the row
    captions = page.locator("#panel-a [data-kind=gradcam] figcaption").all_inner_texts()
    assert len(captions) == 2 and captions[0].startswith("gradcam: gradcam++") and "map (max" in captions[1]
    assert page.locator("#panel-a .results img[src^='blob:']").count() == 0
    shot(page, tmp_path, "explorer_compare")
    page.locator("#compare").uncheck()


def test_a_refused_request_shows_the_servers_message(page):
    a = page.locator("#panel-a")
    run(a, "deconv", layer="features.8", channel="999")
    page.wait_for_selector("#panel-a .error:not([hidden])", timeout=30_000)
    text = a.locator(".error").inner_text()
    assert text.startswith("HTTP 400 InvalidOption: ") and "'channel'" in text and "999" in text, text


def test_actmax_shows_live_previews_and_a_progress_bar_before_the_final_image(page, tmp_path):
    a = page.locator("#panel-a")
    run(a, "actmax", channel="cross", steps="320")
    page.wait_for_selector("#panel-a[data-previews='2']", timeout=30_000)  # a second, different preview
    assert a.locator(".stop").is_visible() and a.locator(".progress").is_visible()
    assert a.locator(".progress").get_attribute("max") == "320"
    assert a.locator("[data-kind=actmax] img.final").count() == 0  # the final image comes after the previews
    shot(page, tmp_path, "explorer_actmax")
    page.wait_for_selector("#panel-a [data-kind=actmax] img.final", timeout=60_000)
    assert int(a.get_attribute("data-previews")) >= 2 and "cross (320 steps)" in a.locator(".results").inner_text()
    assert not a.locator(".job").is_visible() and not a.locator(".stop").is_visible()


def test_stop_ends_the_job_with_what_it_has(page):
    a = page.locator("#panel-a")
    start = time.monotonic()
    # 2000 steps: over a minute on this model; Stop must end it in seconds. (shapes_short_viz's 3 s budget would
    # refuse it with 422: this is the 90 s model.)
    run(a, "actmax", channel="circle", steps="2000")
    page.wait_for_selector("#panel-a[data-previews='1']", timeout=30_000)
    assert a.locator(".error").is_hidden(), a.locator(".error").inner_text()
    a.locator(".stop").click()
    page.wait_for_selector("#panel-a[data-busy=false]", timeout=15_000)
    assert a.locator(".error").is_hidden(), a.locator(".error").inner_text()
    assert a.locator(".status").inner_text().startswith("stopped: actmax on shapes_viz answered what it had")
    caption = a.locator(".results").inner_text()
    steps = int(re.search(r"STOPPED EARLY after (\d+) steps", caption).group(1))
    assert 0 < steps < 2000 and time.monotonic() - start < 30, (caption, time.monotonic() - start)


def test_filters_saliency_invert_and_a_video_model(page, tmp_path):
    """The modes the other tests leave out, each to its picture; then a video file for the motion model (last: it
    replaces the page's input)."""
    a = page.locator("#panel-a")
    run(a, "filters", layers="features.0")
    page.wait_for_selector("#panel-a [data-kind=filters] img", timeout=30_000)
    assert "filters of features.0" in a.locator("[data-kind=filters] figcaption").inner_text()
    run(a, "saliency", method="integrated_gradients")
    page.wait_for_selector("#panel-a [data-kind=saliency] [data-kind=heatmap] img", timeout=30_000)
    assert "integrated_gradients" in a.locator("[data-kind=saliency] [data-kind=overlay] figcaption").inner_text()
    run(a, "invert", layer="features.3", steps="16")
    page.wait_for_selector("#panel-a [data-kind=invert] img.final", timeout=60_000)
    assert "(16 steps)" in a.locator("[data-kind=invert] figcaption").first.inner_text()
    video_only = ["tv_time", "time_jitter", "time_cycles", "t"]
    a.locator(".mode").select_option("actmax")  # an image model: only the options it takes
    assert a.locator("[data-option=steps]").count() == 1
    assert [a.locator(f"[data-option={name}]").count() for name in video_only] == [0, 0, 0, 0]

    from examples.motion.motion_data import CLASSES, make_clips, write_video

    clips, labels, _ = make_clips(12, 5)
    k = next(i for i, c in enumerate(labels.tolist()) if CLASSES[c] == "right")
    video = tmp_path / "right.mp4"
    write_video(clips[k], video)
    a.locator(".model").select_option("motion_viz")
    page.wait_for_selector("#panel-a[data-ready=true][data-model=motion_viz]", timeout=30_000)
    page.set_input_files("#file", str(video))
    page.wait_for_selector("body[data-input='right.mp4']")
    a.locator(".mode").select_option("actmax")  # a video model: its video options too
    assert [a.locator(f"[data-option={name}]").count() for name in video_only] == [1, 1, 1, 1]
    run(a, "gradcam")
    page.wait_for_selector("#panel-a [data-kind=gradcam] [data-kind=overlay] img", timeout=30_000)
    assert a.locator(".bar-label").first.inner_text() == "right (2)"
    assert a.locator(".error").is_hidden()
    # each result once: the frames with their overlays, the maps, the animation; at the server's size, which is
    # 2 rows of 8 frames of 128 px (the 16 frames of 64 px: render.strip_shape), not a thumbnail of one row
    row = a.locator("[data-kind=gradcam]")
    assert [f.get_attribute("data-kind") for f in row.locator("figure").all()] == ["overlay", "heatmap", ""]
    for kind in ("overlay", "heatmap"):
        natural, shown = row.locator(f"[data-kind={kind}] img").evaluate("i => [i.naturalWidth, i.clientWidth]")
        assert natural == shown == 8 * 128 + 7 * 2, (kind, natural, shown)
    shot(page, tmp_path, "explorer_video")
