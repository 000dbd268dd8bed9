"""A real TorchServe on loopback, started once for the integration tests and always stopped after them."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch

from cnnviz import random_state_dict
from scripts.local_torchserve import ROOT, local_torchserve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def alexnet_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "alexnet_seeded.pt"
    torch.save(random_state_dict("alexnet", seed=7), path)
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory, alexnet_weights):
    work = tmp_path_factory.mktemp("torchserve")
    store = work / "model_store"
    short = work / "shapes_short"  # the shapes model with a 3 s optimization budget and a 10 s response timeout
    shutil.copytree(ROOT / "examples" / "shapes", short)
    for args in (
        ["--weights", str(alexnet_weights), "alexnet"],
        ["--random-weights", "resnet18"],
        ["--random-weights", "inception_v3"],  # another family: 299 px, transform_input, a concatenating last stage
        ["shapes"],
        ["--random-weights", "r3d_18"],  # the video family: Kinetics labels, 16 x 112 x 112 clips
        ["motion"],  # the project's own video model, trained
        ["--max-busy-seconds", "3", "--response-timeout", "10", str(short)],
    ):
        subprocess.run([str(ROOT / "archive.sh"), "--out", str(store), *args], check=True, timeout=600)
    try:
        # Leaving the block stops TorchServe and raises if any of it is still running: a failed teardown.
        archives = ["alexnet_viz.mar", "resnet18_viz.mar", "inception_v3_viz.mar", "shapes_viz.mar",
                    "shapes_short_viz.mar", "r3d_18_viz.mar", "motion_viz.mar"]  # fmt: skip
        with local_torchserve(store, archives, work) as srv:
            yield srv
    finally:
        shutil.rmtree(store, ignore_errors=True)  # the archives are large


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through Playwright (its own browsers are never downloaded), for the explorer's and
    the galleries' pages; always closed."""
    assert CHROMIUM, "Chromium is needed to open the pages: apt-get install chromium (scripts/setup.sh --dev does)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()
