"""Video through a real TorchServe: an MP4 posted as a person would, to r3d_18 (random weights) and the motion
model (trained); one file for the family."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from examples.motion.motion_data import CLASSES, make_clips, write_video
from tests.images import raw_array

pytestmark = pytest.mark.integration


def mp4_of(label: str, seed: int = 77) -> bytes:
    clips, labels, _ = make_clips(24, seed)
    buf = io.BytesIO()
    write_video(clips[labels.tolist().index(CLASSES.index(label))], buf)
    return buf.getvalue()


def test_an_mp4_to_r3d_18_gets_kinetics_top5_feature_maps_over_time_and_a_gradcam_animation(server):
    # Grad-CAM of R3D-18 is seconds of compute on a CPU: a job (202), followed to its answer
    r, _ = server.job("r3d_18_viz", files={"data": mp4_of("right")},
                      data={"mode": "classify,featuremaps,gradcam", "layers": "layer1", "channels": "4"})  # fmt: skip
    assert r.status_code == 200, r.text[:300]
    out = r.json()
    assert out["input"]["container"] == "MP4" and len(out["input"]["timestamps"]) == 16
    assert len(out["predictions"]) == 5 and all(p["label"] for p in out["predictions"])
    [fmap] = out["featuremaps"]
    assert fmap["shape"] == [64, 16, 56, 56]  # [C, T, H, W]: time kept by r3d's first stage
    animation = Image.open(io.BytesIO(base64.b64decode(out["gradcam"]["animation"])))
    assert animation.format == "WEBP" and animation.n_frames == 16
    webp, _ = server.job("r3d_18_viz", files={"data": mp4_of("right")}, data={"mode": "gradcam", "format": "webp"})
    assert webp.status_code == 200 and webp.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(webp.content)).n_frames == 16


def test_the_motion_model_reads_an_mp4_and_prefers_a_video_of_its_class(server):
    for label in ("right", "up", "rotating"):
        r = server.post("motion_viz", files={"data": mp4_of(label)}, data={"mode": "classify,gradcam"})
        assert r.status_code == 200, r.text[:300]
        assert r.json()["predictions"][0]["label"] == label
    r, _ = server.job("motion_viz", data={"mode": "actmax", "channel": "right", "steps": "16", "raw": "true"})
    assert r.status_code == 200, r.text[:300]
    [entry] = r.json()["actmax"]
    assert entry["label"] == "right" and entry["end"] > entry["start"]
    video = raw_array(entry["raw"])
    assert video.shape == (3, 16, 64, 64)
    assert Image.open(io.BytesIO(base64.b64decode(entry["animation"]))).n_frames == 16
    r, _ = server.job("motion_viz", data={"mode": "actmax", "channel": "left", "steps": "8", "format": "webp"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(r.content)).n_frames == 16
    described = server.post("motion_viz", data={"mode": "describe"}).json()
    assert json.dumps(described).count("rotating") >= 1
