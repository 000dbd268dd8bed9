"""gradcam, saliency and deconv through the service, on the project's trained shapes model."""

import base64
import io
import json
import re

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from cnnviz import CAM_METHODS, SALIENCY_METHODS, SIGNED_METHODS, OverBudget
from tests.images import raw_array, shape_png
from tests.services import shapes_service, tiny_service
from tests.tiny import Tiny
from vizserve import Limits, parse_request, read_image, render

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def svc():
    return shapes_service()


@pytest.fixture(scope="module")
def image():
    """A square (class 1), as PNG bytes, with its box."""
    return shape_png(label=1, seed=11, pool=40)


def ask(svc, **fields):
    [reply] = svc.handle([fields])
    return reply


def test_gradcam_entry(svc, image):
    data, (x0, y0, x1, y1) = image
    reply = ask(svc, data=data, mode="gradcam", raw="true")
    assert reply.status == 200, reply.body
    out = json.loads(reply.body)
    cam = out["gradcam"]
    assert out["predictions"][0]["label"] == "square"
    assert {k: cam[k] for k in ("method", "layer", "target", "label")} == {
        "method": "gradcam", "layer": "features", "target": 1, "label": "square",
    }  # fmt: skip
    assert cam["score"] == pytest.approx(out["predictions"][0]["score"], rel=1e-5)
    raw = raw_array(cam["raw"])
    assert raw.shape == (64, 64) and raw.dtype == np.float32 and raw.min() >= 0
    assert cam["max"] == pytest.approx(float(raw.max()), rel=1e-6)
    y, x = np.unravel_index(raw.argmax(), raw.shape)
    assert x0 - 4 <= x <= x1 + 4 and y0 - 4 <= y <= y1 + 4
    # 64 px enlarged 4x for display: the input beside the overlay, under the title, over the colour bar
    title = f"gradcam of features - square {cam['score']:.2f}"
    for key, width in (("image", 2 * 256 + render.GAP), ("heatmap", 256)):
        picture = Image.open(io.BytesIO(base64.b64decode(cam[key])))
        assert picture.mode == "RGB" and picture.size == (width, render.TITLE_H + 256 + render.BAR_BAND)
        band = np.asarray(picture)[: render.TITLE_H]
        assert (band > 200).any() and np.array_equal(band, render._title_band(title, width))


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_every_cam_method_answers_with_its_name(svc, image, method):
    data, (x0, y0, x1, y1) = image
    reply = ask(svc, data=data, mode="gradcam", method=method, raw="true")
    assert reply.status == 200, reply.body
    cam = json.loads(reply.body)["gradcam"]
    assert (cam["method"], cam["label"]) == (method, "square")
    assert cam["layer"] == (None if method == "fullgrad" else "features")  # FullGrad reads every layer
    raw = raw_array(cam["raw"])
    assert raw.shape == (64, 64) and cam["max"] == pytest.approx(float(raw.max()), rel=1e-6) and raw.max() > 0
    y, x = np.unravel_index(raw.argmax(), raw.shape)
    assert x0 - 4 <= x <= x1 + 4 and y0 - 4 <= y <= y1 + 4


def test_smoothing_options_change_the_map(svc, image):
    data, _ = image

    def raw(**fields):
        reply = ask(svc, data=data, mode="gradcam", method="layercam", raw="true", **fields)
        assert reply.status == 200, reply.body
        return raw_array(json.loads(reply.body)["gradcam"]["raw"])

    plain, aug, eigen = raw(), raw(aug_smooth="true"), raw(eigen_smooth="true")
    assert not np.allclose(plain, aug) and not np.allclose(plain, eigen)
    assert np.array_equal(raw(aug_smooth="false", eigen_smooth="0"), plain)


def test_perturbation_methods_over_the_cap_are_refused_and_batches_run_in_parts(image):
    data, _ = image
    svc = shapes_service(Limits(max_cam_passes=64))  # layer 'features' has 32 channels
    [over] = svc.handle([{"data": data, "mode": "gradcam", "method": "scorecam", "aug_smooth": "true"}])
    assert over.status == 413
    assert json.loads(over.body)["message"] == (
        "method=scorecam runs one forward pass per channel of 'layer': 32 channels of features x 6 aug_smooth "
        "copies is 192 passes, over this server's cap of 64 (max_cam_passes); name a layer with fewer channels, "
        "leave out aug_smooth, or use a gradient method such as gradcam"
    )
    [small] = svc.handle([{"data": data, "mode": "gradcam", "method": "ablationcam", "layer": "features.3"}])
    assert small.status == 200, small.body  # features.3 has 24 channels
    # three requests of 32 passes each: parts of two rows and one, each row as it is alone
    asked = [{"data": data, "mode": "gradcam", "method": "scorecam", "target": t, "raw": "true"} for t in "012"]
    batch = [raw_array(json.loads(r.body)["gradcam"]["raw"]) for r in svc.handle(asked)]
    alone = [raw_array(json.loads(svc.handle([a])[0].body)["gradcam"]["raw"]) for a in asked]
    for b, a in zip(batch, alone, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(a.max()))


def test_a_perturbation_method_past_the_time_budget_is_refused_before_any_pass(image):
    svc = shapes_service(Limits(max_busy_seconds=0))
    calls = []
    handle = svc.model.register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        [reply] = svc.handle([{"data": image[0], "mode": "gradcam", "method": "scorecam"}])
    finally:
        handle.remove()
    body = json.loads(reply.body)
    assert reply.status == 422 and body["type"] == "OverBudget" and body["budget_s"] == 0 and body["estimate_s"] > 0
    assert body["message"].startswith("this request would take about ") and "(max_busy_seconds)" in body["message"]
    assert "gradcam " in body["message"] and calls == []  # its estimate, by part; not one pass ran
    assert all(not m._forward_hooks for m in svc.model.modules())


def test_a_perturbation_method_stops_at_its_deadline_as_it_runs(image):
    """The estimate admits; the pass-by-pace check still stops a batch that runs slower than estimated."""
    from vizserve.modes import MODES

    svc = shapes_service(Limits(max_busy_seconds=0))
    x = svc.served.transform(read_image(image[0], max_pixels=10**6))[None]
    values = parse_request({"data": image[0], "mode": "gradcam", "method": "scorecam"}, svc.served).values["gradcam"]
    with pytest.raises(OverBudget) as info:
        MODES["gradcam"].run(svc.served, x, [values])
    assert info.value.message.startswith("ScoreCAM runs one forward pass per channel and input (1 x 32 channels of "
                                         "layer 'features': 26 passes, 6 channels that are zero everywhere skipped); "
                                         "no time is left")  # fmt: skip
    assert all(not m._forward_hooks for m in svc.model.modules())


def test_each_request_in_a_batch_keeps_its_target_and_method(svc, image):
    data, _ = image
    replies = svc.handle([
        {"data": data, "mode": "gradcam", "target": "circle"},
        {"data": data, "mode": "gradcam", "target": "3"},
        {"data": data, "mode": "gradcam", "method": "gradcam++"},
        {"data": data, "mode": "saliency", "method": "smoothgrad", "samples": "4", "target": "Triangle"},
    ])  # fmt: skip
    outs = [json.loads(r.body) for r in replies]
    assert [o["gradcam"]["label"] for o in outs[:3]] == ["circle", "cross", "square"]
    assert outs[2]["gradcam"]["method"] == "gradcam++"
    assert outs[3]["saliency"]["label"] == "triangle" and outs[3]["saliency"]["method"] == "smoothgrad"
    assert outs[0]["gradcam"]["score"] < 0.5 < outs[2]["gradcam"]["score"]


@pytest.mark.parametrize("method", SALIENCY_METHODS)
def test_saliency_methods(svc, image, method):
    data, _ = image
    reply = ask(svc, data=data, mode="saliency", method=method, samples="2", ig_steps="4", baseline="white", raw="1")
    assert reply.status == 200, reply.body
    entry = json.loads(reply.body)["saliency"]
    assert entry["method"] == method and entry["label"] == "square" and entry["max"] > 0
    raw = raw_array(entry["raw"])
    assert raw.shape == (64, 64) and entry["signed"] == (method in SIGNED_METHODS)
    assert entry["max"] == pytest.approx(float(np.abs(raw).max()), rel=1e-6)
    if not entry["signed"]:
        assert raw.min() >= 0


def test_signed_maps_keep_their_sign(svc, image):
    data, _ = image
    raw = raw_array(json.loads(ask(svc, data=data, mode="saliency", method="input_x_gradient", raw="1").body)[
        "saliency"]["raw"])  # fmt: skip
    assert raw.min() < 0 < raw.max()


def test_occlusion_over_the_cap_is_refused_alone(capped, image):
    data, _ = image
    over, fine = capped.handle([
        {"data": data, "mode": "saliency", "method": "occlusion", "window": "0.05"},
        {"data": data, "mode": "saliency", "method": "feature_ablation", "window": "0.25"},
    ])  # fmt: skip
    assert over.status == 413
    assert json.loads(over.body)["message"] == (
        "occlusion of a 64x64 input with 3 px patches every 2 px takes 1,024 forward passes; this server makes at most "
        "1,000 an input (max_perturbations): ask for a larger 'window' or 'stride'"
    )
    assert fine.status == 200 and json.loads(fine.body)["saliency"]["method"] == "feature_ablation"


@pytest.fixture(scope="module")
def capped():
    from vizserve import Limits

    return shapes_service(Limits(max_perturbations=1000))


@pytest.mark.parametrize("mode, fields", [("saliency", {"method": "deeplift"}), ("gradcam", {})])
def test_faithfulness_curves(svc, image, mode, fields):
    data, _ = image
    reply = ask(svc, data=data, mode=mode, faithfulness="true", faithfulness_steps="4", **fields)
    assert reply.status == 200, reply.body
    entry = json.loads(reply.body)[mode]
    f = entry["faithfulness"]
    assert len(f["deletion"]) == len(f["insertion"]) == 5
    assert 0 <= f["deletion_auc"] <= 1 and 0 <= f["insertion_auc"] <= 1
    # the first deletion point and the last insertion point are the input itself
    assert f["deletion"][0] == pytest.approx(entry["score"], abs=1e-5) == f["insertion"][-1]
    assert f["deletion_auc"] < f["insertion_auc"]  # a trained model's maps of a clear shape
    assert "faithfulness" not in json.loads(ask(svc, data=data, mode=mode, **fields).body)[mode]


def test_lrp_refuses_a_model_captum_has_no_rule_for(image):
    class WithGELU(Tiny):
        def __init__(self) -> None:
            super().__init__()
            self.features[1] = torch.nn.GELU()

    [reply] = tiny_service(model=WithGELU()).handle([{"data": image[0], "mode": "saliency", "method": "lrp"}])
    assert reply.status == 400
    assert json.loads(reply.body)["message"] == (
        "method lrp cannot explain tiny: layer 'features.1' is a GELU, which Captum's LRP has no rule for"
    )


def test_deconv_entry(svc, image):
    data, _ = image
    out = json.loads(ask(svc, data=data, mode="deconv", layer="features.3", channel="5", raw="true").body)["deconv"]
    assert out["layer"] == "features.3" and out["channel"] == 5
    assert raw_array(out["raw"]).shape == (3, 64, 64)
    default = json.loads(ask(svc, data=data, mode="deconv").body)["deconv"]
    assert default["layer"] == "features" and default["activation"] > 0


def test_explain_adds_gradcam_and_format_png_gives_the_overlay(svc, image):
    data, _ = image
    [reply] = svc.handle([{"data": data}], explain=[True])
    assert "gradcam" in json.loads(reply.body)
    png = ask(svc, data=data, mode="gradcam", format="png")
    assert png.content_type == "image/png" and png.body.startswith(PNG)


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"mode": "gradcam", "method": "lime"}, "unknown method 'lime' for mode gradcam; methods: gradcam, gradcam++"),
        ({"mode": "gradcam", "method": "smoothgrad"}, "unknown method 'smoothgrad' for mode gradcam"),
        ({"mode": "gradcam", "target": "circel"}, "did you mean 'circle'"),
        ({"mode": "gradcam", "target": "6"}, r"class index 0\.\.5"),
        ({"mode": "gradcam", "layer": "classifier"}, r"not \[C, H, W\]"),
        ({"mode": "gradcam", "layer": "features.__class__"}, "unknown layer"),
        ({"mode": "gradcam", "aug_smooth": "maybe"}, "'aug_smooth' must be true or false"),
        ({"mode": "saliency", "eigen_smooth": "1"}, "'eigen_smooth' is used by mode gradcam; add it to mode"),
        ({"mode": "saliency", "samples": "65"}, r"'samples' must be a whole number in 1\.\.64"),
        ({"mode": "saliency", "ig_steps": "0"}, r"'ig_steps' must be a whole number in 1\.\.128"),
        ({"mode": "saliency", "steps": "8"}, "'steps' is used by mode actmax and invert; add it to mode"),
        ({"mode": "gradcam,saliency", "method": "lime"}, "unknown method 'lime' for mode gradcam, saliency"),
        ({"mode": "saliency", "noise": "nan"}, r"'noise' must be a number in 0\.0\.\.1\.0"),
        ({"mode": "saliency", "noise": "inf"}, r"'noise' must be a number"),
        ({"mode": "saliency", "baseline": "grey"}, "'baseline' must be one of black, zero, white"),
        ({"mode": "deconv", "channel": "32"}, r"'channel' must be a whole number in 0\.\.31"),
        ({"mode": "classify", "samples": "4"}, "'samples' is used by mode saliency; add it to mode"),
        ({"mode": "saliency", "window": "0"}, r"'window' must be a number in 0\.01\.\.1\.0"),
        ({"mode": "saliency", "stride": "2"}, r"'stride' must be a number in 0\.1\.\.1\.0"),
        ({"mode": "gradcam", "faithfulness_steps": "65"}, r"'faithfulness_steps' must be a whole number in 1\.\.64"),
        ({"mode": "gradcam", "window": "0.5"}, "'window' is used by mode saliency; add it to mode"),
        ({"mode": "classify", "faithfulness": "true"}, "'faithfulness' is used by mode gradcam and saliency"),
    ],
)
def test_bad_attribution_options(svc, image, fields, match):
    reply = ask(svc, data=image[0], **fields)
    assert reply.status == 400

    assert re.search(match, json.loads(reply.body)["message"]), json.loads(reply.body)["message"]


def test_200_requests_leave_no_hooks_and_no_memory_growth(svc, image):
    data, _ = image
    process = psutil.Process()
    modes = ["gradcam", "saliency", "deconv", "featuremaps"]

    def run(n):
        for i in range(n):
            assert svc.handle([{"data": data, "mode": modes[i % 4]}])[0].status == 200

    run(40)  # warm-up: allocator pools and caches settle
    before = process.memory_info().rss
    run(200)
    growth = process.memory_info().rss - before
    assert growth < 20 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB over 200 requests"
    model = svc.model
    assert not model.training
    assert all(not (m._forward_hooks or m._backward_hooks or m._forward_pre_hooks) for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_a_gradcam_request_classifies_in_its_own_pass(svc, image):
    data, _ = image
    calls = []
    handle = svc.model.register_forward_hook(lambda m, a, o: calls.append(len(a[0])))
    try:
        [only] = svc.handle([{"data": data, "mode": "gradcam"}])
        first = list(calls)
        [both] = svc.handle([{"data": data, "mode": "gradcam,featuremaps"}])
    finally:
        handle.remove()
    assert first == [1] and calls == [1, 1, 1]  # gradcam alone: one pass; with feature maps: one more
    assert json.loads(only.body)["predictions"] == json.loads(both.body)["predictions"]


def test_a_failed_gradient_pass_costs_no_further_forward_pass(image, monkeypatch):
    from vizserve.modes import MODES

    svc = shapes_service()

    def broken(served, x, values):
        raise RuntimeError("boom")

    calls = []
    svc.model.register_forward_hook(lambda m, a, o: calls.append(1))
    monkeypatch.setattr(MODES["gradcam"], "run", broken)
    [reply] = svc.handle([{"data": image[0], "mode": "gradcam,featuremaps"}])
    assert reply.status == 500 and calls == []


# The pictures of a map: [title] / [input | overlay] / [colour bar with ticks]; the shapes model's 64 px input is
# enlarged 4x to 256 px.
SIDE = 256


def panels(entry):
    """The input panel, the overlay panel, the map (of the heatmap picture) and the colour bar's middle row, each
    as uint8 arrays, found from the bottom (the colour bar has a fixed height) so that a longer title does not
    move them."""
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["image"]))).convert("RGB"))
    heatmap = np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["heatmap"]))).convert("RGB"))
    top = image.shape[0] - render.BAR_BAND - SIDE
    bar = image[top + SIDE + 6 + render.BAR_H // 2, render.PAD : image.shape[1] - render.PAD]
    left, right = image[top : top + SIDE, :SIDE], image[top : top + SIDE, SIDE + render.GAP :]
    return left, right, heatmap[heatmap.shape[0] - render.BAR_BAND - SIDE : -render.BAR_BAND], bar


def is_blue(p):
    return int(p[2]) > 80 and int(p[2]) > int(p[0]) + 40 and int(p[2]) > int(p[1]) + 20


def is_red(p):
    return int(p[0]) > 80 and int(p[0]) > int(p[2]) + 40 and int(p[0]) > int(p[1]) + 20


def test_colour_bar_of_an_unsigned_map_is_jet_from_blue_to_red(svc, image):
    cam = json.loads(ask(svc, data=image[0], mode="gradcam").body)["gradcam"]
    _, _, heat, bar = panels(cam)
    assert is_blue(bar[0]) and is_red(bar[-1]) and bar[len(bar) // 2][1] > 200  # jet: blue, green, red
    assert heat.min() >= 0 and tuple(bar[0]) == tuple(render.colour_table("jet")[0])
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(cam["image"]))).convert("RGB"))
    ticks = np.zeros((render.BAR_BAND - 6 - render.BAR_H - 3, image.shape[1]), np.uint8)
    render._text(ticks, render.PAD, -render._TICK_TOP, "0", render._TICK_FONT)  # the 0 tick, left under the bar
    under = image[-ticks.shape[0] :, :20, 0]
    assert np.array_equal(under, render._painted(ticks, False)[:, :20])


def test_a_signed_map_is_blue_where_negative_and_red_where_positive(svc, image):
    data, _ = image
    entry = json.loads(ask(svc, data=data, mode="saliency", method="input_x_gradient", raw="1").body)["saliency"]
    raw = raw_array(entry["raw"])
    assert entry["signed"] and raw.min() < 0 < raw.max()
    _, _, heat, bar = panels(entry)
    assert is_blue(bar[0]) and is_red(bar[-1]) and (bar[len(bar) // 2] > 240).all()  # RdBu_r: white in the middle
    for at, colour in ((np.unravel_index(raw.argmin(), raw.shape), is_blue), (np.unravel_index(raw.argmax(),
                       raw.shape), is_red)):  # fmt: skip
        y, x = (int(v) * 4 + 2 for v in at)
        assert colour(heat[y, x]), (at, heat[y, x])
    zero = np.unravel_index(np.abs(raw).argmin(), raw.shape)  # the smallest magnitude: near white
    assert (heat[int(zero[0]) * 4 + 2, int(zero[1]) * 4 + 2] > 230).all()


def test_colormap_and_opacity(svc, image):
    data, _ = image
    plain = json.loads(ask(svc, data=data, mode="gradcam").body)["gradcam"]
    viridis = json.loads(ask(svc, data=data, mode="gradcam", colormap="viridis").body)["gradcam"]
    inputs, overlay, heat, bar = panels(plain)
    v_inputs, v_overlay, v_heat, v_bar = panels(viridis)
    table = render.colour_table("viridis")
    assert tuple(v_bar[0]) == tuple(table[0]) and tuple(v_bar[-1]) == tuple(table[-1])  # dark purple .. yellow
    assert np.array_equal(v_inputs, inputs) and not np.array_equal(v_overlay, overlay)
    assert set(map(tuple, v_heat.reshape(-1, 3))) <= set(map(tuple, table))  # every map pixel a viridis colour
    none = json.loads(ask(svc, data=data, mode="gradcam", opacity="0").body)["gradcam"]
    full = json.loads(ask(svc, data=data, mode="gradcam", opacity="1").body)["gradcam"]
    n_inputs, n_overlay, _, _ = panels(none)
    _, f_overlay, f_heat, _ = panels(full)
    assert np.array_equal(n_overlay, n_inputs) and np.array_equal(n_inputs, inputs)  # the input itself
    assert np.array_equal(f_overlay, f_heat) and np.array_equal(f_heat, heat)  # the colour map alone
    half = overlay.astype(int)
    assert np.abs(half - (inputs.astype(int) + heat.astype(int)) / 2).max() <= 1  # the default: half and half
    signed = json.loads(ask(svc, data=data, mode="saliency", method="deeplift", colormap="jet").body)["saliency"]
    assert is_blue(panels(signed)[3][0])  # a signed map in the colour map asked for


def test_deconv_heatmap_has_a_title_and_a_colour_bar(svc, image):
    out = json.loads(ask(svc, data=image[0], mode="deconv", layer="features.3", channel="5", colormap="magma").body)
    entry = out["deconv"]
    heatmap = np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["heatmap"]))).convert("RGB"))
    title = f"deconv of features.3 channel 5 (activation {entry['activation']:.3g}), magnitude"
    band = render._title_band(title, SIDE)
    assert np.array_equal(heatmap[: band.shape[0]], band)
    bar = heatmap[-render.BAR_BAND + 6 + render.BAR_H // 2, render.PAD : SIDE - render.PAD]
    assert tuple(bar[0]) == tuple(render.colour_table("magma")[0])


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"mode": "gradcam", "colormap": "hot"}, "'colormap' must be one of jet, turbo, viridis, inferno, magma, gray, "
         "rdbu_r, bwr; got 'hot'"),
        ({"mode": "saliency", "colormap": "__class__"}, "'colormap' must be one of jet"),
        ({"mode": "gradcam", "opacity": "1.5"}, r"'opacity' must be a number in 0\.0\.\.1\.0"),
        ({"mode": "deconv", "opacity": "0.2"}, "'opacity' is used by mode gradcam and saliency; add it to mode"),
        ({"mode": "featuremaps", "colormap": "jet"}, "'colormap' is used by mode gradcam, saliency and deconv"),
    ],
)  # fmt: skip
def test_bad_picture_options(svc, image, fields, match):
    reply = ask(svc, data=image[0], **fields)
    body = json.loads(reply.body)
    assert reply.status == 400 and body["type"] == "InvalidOption" and re.search(match, body["message"]), body


def test_titles_say_which_channels_and_filters_are_shown(svc, image):
    out = json.loads(ask(svc, data=image[0], mode="featuremaps,filters", layers="features.8", channels="8").body)
    [fm], [filters] = out["featuremaps"], out["filters"]
    for entry, title in (
        (fm, "shapes features.8 feature maps [32, 16, 16], channels 0-7 of 32 shown"),
        (filters, "shapes features.8 filters [32, 32, 3, 3]: rows out, columns in, blue < 0 < red; rows 0-7 of 32, "
                  "columns 0-7 of 32 shown"),
    ):  # fmt: skip
        picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["image"]))))
        band = render._title_band(title, picture.shape[1], picture.ndim == 3)
        assert np.array_equal(picture[: band.shape[0]], band), title
    every = json.loads(ask(svc, data=image[0], mode="featuremaps", layers="features.8", channels="all").body)
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(every["featuremaps"][0]["image"]))))
    band = render._title_band("shapes features.8 feature maps [32, 16, 16], all 32 channels", picture.shape[1], False)
    assert np.array_equal(picture[: band.shape[0]], band)


@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift", "gradientshap"])
def test_a_signed_map_shows_over_its_input_where_the_even_blend_washed_it_out(svc, image, method):
    """The service's own signed maps of the square: magnitude-weighted over the input in grey (shared.OVERLAYS),
    against the even blend at 0.5 the service drew before (recomputed here from the same map), scored by
    tests/contrast.py. Measured: map_shown 15.9 to 17.5 against 3.0 to 3.5, photo_kept 0.83 against 0.45."""
    from tests.contrast import overlay_contrast
    from vizserve.modes.shared import OVERLAYS

    entry = json.loads(ask(svc, data=image[0], mode="saliency", method=method, raw="1").body)["saliency"]
    inputs, overlay, _, _ = panels(entry)
    photo, overlay = inputs[::4, ::4], overlay[::4, ::4]  # back to the 64 px the map has
    raw = raw_array(entry["raw"]).astype(np.float64)
    where = 0.5 + 0.5 * raw / np.abs(raw).max()
    rgb = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
    none = torch.full(where.shape, 0.5)  # a map that is 0 everywhere

    def scored(blend, opacity, drawn=None):
        null = render._to_uint8(render._overlay(rgb, none, render.DIVERGING, opacity, blend, True))
        if drawn is None:
            drawn = render._to_uint8(render._overlay(rgb, torch.from_numpy(where).float(), render.DIVERGING, opacity,
                                                     blend, True))  # fmt: skip
        return overlay_contrast(photo, null, drawn, where, signed=True)

    now, before = scored(*OVERLAYS["signed"], overlay), scored("even", 0.5)
    assert now["map_shown"] >= 12 and now["photo_kept"] >= 0.7, now
    assert before["map_shown"] < 6 and before["photo_kept"] < 0.5, before


def test_opacity_of_a_saliency_map_is_its_largest_and_zero_is_the_input_in_grey(svc, image):
    data, _ = image
    plain = json.loads(ask(svc, data=data, mode="saliency", method="deeplift", raw="1").body)["saliency"]
    half = json.loads(ask(svc, data=data, mode="saliency", method="deeplift", opacity="0.5").body)["saliency"]
    none = json.loads(ask(svc, data=data, mode="saliency", method="deeplift", opacity="0").body)["saliency"]
    inputs, overlay, heat, _ = panels(plain)
    grey = np.rint(inputs.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(int)
    n_inputs, n_overlay, _, _ = panels(none)
    assert np.array_equal(n_inputs, inputs) and np.abs(n_overlay.astype(int) - grey[..., None]).max() <= 1
    raw = raw_array(plain["raw"])
    y, x = (int(v) * 4 + 2 for v in np.unravel_index(np.abs(raw).argmax(), raw.shape))  # where the map is largest
    for entry, opacity in ((plain, 0.9), (half, 0.5)):  # the default for a signed map, and one asked for
        mixed = (1 - opacity) * grey[y, x] + opacity * heat[y, x].astype(int)
        assert np.abs(panels(entry)[1][y, x] - mixed).max() <= 1.5, (opacity, panels(entry)[1][y, x], mixed)
    quiet = np.unravel_index(np.abs(raw).argmin(), raw.shape)  # where it is about 0: the input in grey
    qy, qx = (int(v) * 4 + 2 for v in quiet)
    assert np.abs(overlay[qy, qx].astype(int) - grey[qy, qx]).max() <= 3
