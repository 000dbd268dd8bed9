"""Clips [3, T, H, W] through the service, on the tiny hand-set 3-D model: the modes that take one, and their
pictures (time from left to right, in rows)."""

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnviz import ModelSpec, Preprocess
from tests.images import jpeg, npy, raw_array
from tests.tiny import Tiny3D, tiny_clip
from vizserve import VizService, render


@pytest.fixture(scope="module")
def svc():
    pre = Preprocess(resize=2, crop=(2, 3), mean=(0.0,) * 3, std=(1.0,) * 3, frames=2, fps=15.0)
    spec = ModelSpec("tiny3d", (3, 2, 2, 3), pre, ("zero", "one", "two"), modality="video", weights="hand-set")
    return VizService(Tiny3D(), spec, device=torch.device("cpu"), name="tiny3d_viz")


CLIP = npy(tiny_clip()[0].numpy())  # the hand-computed clip, sent exactly as given


def picture(text):
    return Image.open(io.BytesIO(base64.b64decode(text)))


def test_classify_featuremaps_and_gradcam_of_a_clip(svc):
    [reply] = svc.handle([{"data": CLIP, "mode": "featuremaps,gradcam", "layers": "features.0", "raw": "true",
                           "target": "zero"}])  # fmt: skip
    assert reply.status == 200, reply.body
    out = json.loads(reply.body)
    assert out["predictions"][0]["label"] == "zero"
    [fm] = out["featuremaps"]
    assert fm["shape"] == [2, 2, 1, 2]
    raw = raw_array(fm["raw"])
    assert raw.tolist() == [[[[11.0, 15.0]], [[23.0, 31.0]]], [[[-12.0, -16.0]], [[-24.0, -32.0]]]]
    grid = np.asarray(picture(fm["image"]))
    title = "tiny3d features.0 feature maps [2, 2, 1, 2], all 2 channels; frames to the right"
    band = render._title_band(title, grid.shape[1], rgb=False)  # wrapped to the narrow grid's width
    assert np.array_equal(grid[: band.shape[0]], band)
    assert grid.shape[1] > grid.shape[0] - band.shape[0]  # two channels by two frames, under the title
    cam = out["gradcam"]
    assert cam["layer"] == "features" and cam["max"] == pytest.approx(7.75)
    heat = raw_array(cam["raw"])
    assert heat.shape == (2, 2, 3) and heat[1, 0].tolist() == pytest.approx([5.75, 6.75, 7.75])
    # two frames of 2 x 3, each enlarged 56x to 112 x 168 (a clip's frames: render.MIN_FRAME), 2 px apart: the
    # inputs' row above the overlays' row, under the title (which says how to read the frames) and over the colour bar
    strip = picture(cam["image"])
    title = f"gradcam of features - zero {cam['score']:.2f}; 2 frames, time to the right"
    band = render._title_band(title, 2 * 168 + 2)
    assert strip.size == (2 * 168 + 2, band.shape[0] + 112 + render.PAD + 112 + render.BAR_BAND)
    assert np.array_equal(np.asarray(strip)[: band.shape[0]], band)
    assert picture(cam["heatmap"]).size == (2 * 168 + 2, band.shape[0] + 112 + render.BAR_BAND)


def test_filters_of_a_3d_convolution_are_strips_over_time(svc):
    [reply] = svc.handle([{"mode": "filters"}])
    [entry] = json.loads(reply.body)["filters"]
    assert entry["shape"] == [2, 3, 1, 2, 2] and picture(entry["image"]).mode == "RGB"


def test_saliency_and_describe_of_a_clip(svc):
    [reply] = svc.handle([{"data": CLIP, "mode": "saliency,describe", "raw": "true", "target": "0"}])
    out = json.loads(reply.body)
    grads = raw_array(out["saliency"]["raw"])
    assert grads.tolist() == [[[0.25, 0.5, 0.25]] * 2] * 2
    assert out["describe"]["modality"] == "video" and out["describe"]["input_shape"] == [3, 2, 2, 3]
    sampling = {o["name"]: o for o in out["describe"]["input_options"]}
    assert list(sampling) == ["frames", "start", "clip"] and sampling["frames"]["default"] == 2


def test_occlusion_of_a_clip_and_its_faithfulness(svc):
    # black is 0 here (mean 0, std 1): the drops of tests/core/test_attributions.py, the same in both frames
    [reply] = svc.handle([{"data": CLIP, "mode": "saliency", "method": "occlusion", "window": "0.5", "raw": "true",
                           "target": "0", "faithfulness": "true", "faithfulness_steps": "3"}])  # fmt: skip
    entry = json.loads(reply.body)["saliency"]
    assert raw_array(entry["raw"]).tolist() == [[[0.75, 3.0, 2.25], [3.0, 7.5, 4.5]]] * 2
    assert entry["signed"] and "animation" in entry
    f = entry["faithfulness"]
    assert len(f["deletion"]) == 4 and f["deletion"][0] == pytest.approx(entry["score"], abs=1e-5)


def test_a_video_model_refuses_an_image_and_answers_the_modes_without_an_input():
    from cnnviz import build_model, torchvision_spec

    video = VizService(build_model("r3d_18"), torchvision_spec("r3d_18", weights="random"), device=torch.device("cpu"),
                       name="r3d_18_viz")  # fmt: skip
    bad, filters = video.handle([{"data": jpeg()}, {"mode": "filters,describe", "layers": "stem.0", "channels": "8"}])
    assert bad.status == 400 and "r3d_18 takes a video (MP4, WebM" in json.loads(bad.body)["message"]
    out = json.loads(filters.body)
    assert out["filters"][0]["shape"] == [64, 3, 3, 7, 7] and picture(out["filters"][0]["image"]).mode == "RGB"
    assert out["describe"]["preprocess"]["resize"] == [128, 171] and out["describe"]["cam_layer"] == "layer4"
    [invert] = video.handle([{"mode": "invert", "data": jpeg()}])
    assert invert.status == 400 and "video models cannot take yet" in invert.body.decode()


def test_a_preferred_video_through_the_service_and_its_preview(svc):
    from vizserve.modes.optimizing import preview

    [reply] = svc.handle([{"mode": "actmax", "channel": "zero", "steps": "8", "size": "16", "tv_time": "1",
                           "raw": "true"}])  # fmt: skip
    assert reply.status == 200, reply.body
    [entry] = json.loads(reply.body)["actmax"]
    video = raw_array(entry["raw"])
    assert video.shape == (3, 2, 16, 16) and entry["end"] > entry["start"] and entry["label"] == "zero"
    image = picture(entry["image"])  # two 16 px frames enlarged 7x side by side, under a title of one or more lines
    assert image.size[0] == 2 * 112 + 2 and (image.size[1] - 112 - render.TITLE_H) % render.TITLE_LINE == 0
    strip = Image.open(io.BytesIO(preview(torch.rand(2, 3, 4, 16, 16))))  # a video's middle frame, per target
    assert strip.size == (2 * 64 + 3, 64 + 2)
    [bad] = svc.handle([{"mode": "actmax", "channel": "0", "init": "image", "data": CLIP}])
    assert bad.status == 400 and "uploaded clip" in bad.body.decode()
    [pixel] = svc.handle([{"mode": "actmax", "channel": "0", "param": "pixel", "time_cycles": "0.5"}])
    assert pixel.status == 400 and "low-passes the Fourier parameterization (param=fft)" in pixel.body.decode()
    [pixel] = svc.handle([{"mode": "actmax", "channel": "0", "param": "pixel", "steps": "1", "size": "16"}])
    assert pixel.status == 200, pixel.body  # the video default (time_cycles 0.5) is not in the way of param=pixel


def test_a_video_file_and_a_npy_clip_through_a_video_model():
    from cnnviz import build_model, random_state_dict, torchvision_spec
    from tests.edge.test_video import made

    model = build_model("r3d_18")
    model.load_state_dict(random_state_dict("r3d_18", seed=0))
    video = VizService(model, torchvision_spec("r3d_18", weights="random"), device=torch.device("cpu"), name="r3d")
    [reply] = video.handle([{"data": made("MP4"), "mode": "featuremaps,gradcam", "layers": "layer4", "frames": "8",
                             "raw": "true", "channels": "4"}])  # fmt: skip
    assert reply.status == 200, reply.body[:300]
    out = json.loads(reply.body)
    assert out["input"]["container"] == "MP4" and len(out["input"]["timestamps"]) == 8
    assert len(out["predictions"]) == 5 and out["featuremaps"][0]["shape"] == [512, 1, 7, 7]
    assert raw_array(out["gradcam"]["raw"]).shape == (8, 112, 112)

    clip = torch.randn(3, 16, 112, 112)
    [reply] = video.handle([{"data": npy(clip.numpy()), "mode": "featuremaps", "layers": "layer2", "raw": "true"}])
    fmap = raw_array(json.loads(reply.body)["featuremaps"][0]["raw"])
    seen = {}
    handle = model.layer2.register_forward_hook(lambda m, a, o: seen.update(out=o))
    try:
        with torch.inference_mode():
            model(clip[None])
    finally:
        handle.remove()
    assert np.allclose(fmap, seen["out"][0].numpy(), atol=1e-5)
    [image, bad] = video.handle([{"data": jpeg()}, {"data": made("MP4"), "frames": "99"}])
    assert image.status == 400 and "takes a video" in json.loads(image.body)["message"]
    assert bad.status == 400 and "'frames' must be a whole number in 1..64" in json.loads(bad.body)["message"]


def test_clips_come_animated_too_and_format_picks_the_animation(svc):
    [reply] = svc.handle([{"data": CLIP, "mode": "featuremaps,gradcam", "layers": "features.0"}])
    out = json.loads(reply.body)
    for entry in (out["gradcam"], out["featuremaps"][0]):
        movie = picture(entry["animation"])
        assert entry["animation_type"] == "image/webp" and movie.n_frames == 2  # one frame per frame of the clip
    preferred = {"mode": "actmax", "channel": "1", "steps": "2", "size": "16", "format": "gif"}
    [webp, gif] = svc.handle([{"data": CLIP, "mode": "gradcam", "format": "webp"}, preferred])
    assert webp.content_type == "image/webp" and Image.open(io.BytesIO(webp.body)).n_frames == 2
    assert gif.content_type == "image/gif" and Image.open(io.BytesIO(gif.body)).n_frames == 2
    # the first frame of the animated overlay (224 x 336: animations keep MIN_PICTURE) is the first frame of the
    # overlays' row (112 x 168, below the inputs'), both enlarged from 2 x 3 without smoothing
    strip = np.asarray(picture(out["gradcam"]["image"]).convert("RGB"))
    first = np.asarray(Image.open(io.BytesIO(webp.body)).convert("RGB"))
    assert first.shape == (224, 336, 3)
    top = strip.shape[0] - render.BAR_BAND - 112
    overlay = strip[top : top + 112, :168]
    assert np.abs(overlay.astype(int) - first[::2, ::2].astype(int)).max() <= 1


def test_animation_formats_need_a_video_model():
    from tests.services import tiny_service

    [reply] = tiny_service().handle([{"data": jpeg(), "mode": "gradcam", "format": "webp"}])
    assert reply.status == 400 and "format=webp answers with an animation" in json.loads(reply.body)["message"]


def test_a_unit_of_a_video_layer_at_one_frame(svc):
    [reply] = svc.handle([{"mode": "actmax", "layer": "features.0", "channel": "1", "y": "0", "x": "1", "t": "1",
                           "steps": "4", "size": "16"}])  # fmt: skip
    assert reply.status == 200, reply.body
    [entry] = json.loads(reply.body)["actmax"]
    assert (entry["t"], entry["y"], entry["x"], entry["channel"]) == (1, 0, 1, 1)
    [late, classes] = svc.handle([{"mode": "actmax", "layer": "features.0", "channel": "1", "t": "2"},
                                      {"mode": "actmax", "channel": "1", "t": "0"}])  # fmt: skip
    assert late.status == 400 and "'t' must be a whole number in 0..1" in late.body.decode()
    assert classes.status == 400 and "outputs [3]" in classes.body.decode()


def test_describe_lists_the_video_options_for_a_video_model_only(svc):
    from tests.services import tiny_service

    video_only = {"tv_time", "time_jitter", "time_cycles", "t"}

    def options(service):
        [reply] = service.handle([{"mode": "describe"}])
        modes = json.loads(reply.body)["describe"]["modes"]
        return {m["name"]: {o["name"] for o in m["options"]} for m in modes}

    video, image = options(svc), options(tiny_service())
    assert video_only <= video["actmax"] and {"tv_time", "time_jitter", "time_cycles"} <= video["invert"]
    assert not video_only & set().union(*image.values())  # an image model's client shows none of them
    assert image["actmax"] == video["actmax"] - video_only and "y" in image["actmax"]
    [refused] = tiny_service().handle([{"mode": "actmax", "channel": "0", "tv_time": "1"}])
    assert refused.status == 400 and "are for video models" in refused.body.decode()
