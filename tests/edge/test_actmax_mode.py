"""actmax and invert through the service: targets, caps, streaming, the time budget."""

import io
import json
import re

import pytest
import torch
from PIL import Image

from cnnviz import build_model, torchvision_spec
from tests.images import shape_png
from tests.services import shapes_service
from vizserve import Limits, VizService, parse_request

PNG = b"\x89PNG\r\n\x1a\n"


def make(limits=Limits()):
    return shapes_service(limits)


@pytest.fixture(scope="module")
def svc():
    return make()


def png_of_shape(seed=4):
    return shape_png(seed=seed, pool=1)[0]


def test_class_targets_by_label_and_range_need_no_image(svc):
    [reply] = svc.handle([{"mode": "actmax", "channel": "circle,3-4", "steps": "8", "raw": "true"}])
    assert reply.status == 200, reply.body
    out = json.loads(reply.body)
    assert "predictions" not in out
    entries = out["actmax"]
    assert [(e["layer"], e["channel"], e["label"]) for e in entries] == [
        ("classes", 0, "circle"), ("classes", 3, "cross"), ("classes", 4, "horizontal stripes"),
    ]  # fmt: skip
    for e in entries:
        assert e["steps"] == 8 and not e["stopped_early"] and e["end"] > e["start"]
        assert Image.open(io.BytesIO(__import__("base64").b64decode(e["image"]))).size == (256, 256)


def test_channels_and_a_unit_of_a_layer(svc):
    [reply] = svc.handle([{"mode": "actmax", "layer": "features.3", "channel": "1,5", "y": "4", "x": "9",
                           "steps": "4", "format": "png"}])  # fmt: skip
    assert reply.content_type == "image/png" and reply.body.startswith(PNG)


def test_invert_reports_the_match_error(svc):
    [reply] = svc.handle([{"data": png_of_shape(), "mode": "invert", "layer": "features.3", "steps": "48"}])
    entry = json.loads(reply.body)["invert"]
    assert entry["layer"] == "features.3" and entry["error"] < entry["start_error"]


def test_streaming_sends_progress_then_the_answer(svc):
    chunks = []
    [reply] = svc.handle([{"mode": "actmax", "channel": "2", "steps": "16", "stream": "true"}],
                         emit=lambda i, chunk: chunks.append((i, chunk)))  # fmt: skip
    lines = [json.loads(c) for _, c in chunks]
    assert {i for i, _ in chunks} == {0}
    assert [line["step"] for line in lines] == list(range(1, 17))
    assert all(line["steps"] == 16 and len(line["objective"]) == 1 for line in lines)
    assert sum("preview" in line for line in lines) == 8
    assert reply.body.endswith(b"\n") and json.loads(reply.body)["actmax"][0]["steps"] == 16


def test_the_time_budget_cuts_a_long_optimization():
    svc = make(Limits(max_busy_seconds=1))
    [reply] = svc.handle([{"mode": "actmax", "channel": "0-5", "steps": "2048", "size": "256"}])
    entry = json.loads(reply.body)["actmax"][0]
    assert reply.status == 200 and entry["stopped_early"] and 0 < entry["steps"] < 2048 and entry["seconds"] < 3


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"mode": "actmax"}, "mode actmax needs option 'channel'"),
        ({"mode": "actmax", "channel": "7"}, r"'channel' must be a class index 0\.\.5"),
        ({"mode": "actmax", "channel": "2-9"}, r"range '2-9' must lie within 0\.\.5"),
        ({"mode": "actmax", "layer": "features.3", "channel": "24"}, r"'channel' must be a whole number in 0\.\.23"),
        (
            {"mode": "actmax", "layer": "features.3", "channel": "1", "y": "32"},
            r"'y' must be a whole number in 0\.\.31",
        ),
        ({"mode": "actmax", "channel": "1", "y": "3"}, "pick a unit of a \\[C, H, W\\] layer"),
        ({"mode": "actmax", "channel": "1", "steps": "2049"}, r"'steps' must be a whole number in 1\.\.2048"),
        ({"mode": "actmax", "channel": "1", "size": "513"}, r"'size' must be a whole number in 16\.\.512"),
        ({"mode": "actmax", "channel": "1", "size": "8"}, r"'size' must be a whole number in 16\.\.512"),
        ({"mode": "actmax", "channel": "1", "lr": "0"}, "'lr' must be above 0"),
        ({"mode": "actmax", "channel": "1", "lr": "11"}, r"'lr' must be a number in 0\.0\.\.10\.0"),
        ({"mode": "actmax", "channel": "1", "lr": "nan"}, r"'lr' must be a number"),
        ({"mode": "actmax", "channel": "1", "l2": "101"}, r"'l2' must be a number in 0\.0\.\.100\.0"),
        ({"mode": "actmax", "channel": "1", "l1": "-1"}, r"'l1' must be a number"),
        ({"mode": "actmax", "channel": "1", "tv": "inf"}, r"'tv' must be a number"),
        ({"mode": "actmax", "channel": "1", "init_weight": "1e9"}, r"'init_weight' must be a number"),
        ({"mode": "actmax", "channel": "1", "blur_every": "1001"}, r"'blur_every' must be a whole number in 0\.\.1000"),
        ({"mode": "actmax", "channel": "1", "seed": "-3"}, r"'seed' must be a whole number"),
        ({"mode": "actmax", "channel": "1", "param": "cppn"}, "'param' must be one of fft, pixel"),
        ({"mode": "actmax", "channel": "1", "optimizer": "lbfgs"}, "'optimizer' must be one of adam, sgd"),
        ({"mode": "actmax", "channel": "1", "init": "image"}, "init=image starts from the uploaded image"),
        ({"mode": "actmax", "channel": "1", "stream": "perhaps"}, "'stream' must be true or false"),
        ({"mode": "invert"}, "mode invert needs an image"),
        ({"mode": "layers", "seed": "1"}, "'seed' is used by mode actmax and invert"),
    ],
)
def test_every_cap_gives_a_400_that_names_it(svc, fields, match):
    [reply] = svc.handle([fields])
    assert reply.status == 400
    message = json.loads(reply.body)["message"]
    assert re.search(match, message), message


def test_target_count_cap():
    served = VizService(build_model("alexnet"), torchvision_spec("alexnet"), device=torch.device("cpu"), name="a")
    served = served.served
    from cnnviz import InvalidOption

    with pytest.raises(InvalidOption, match="more than 64 targets; at most 64 a request"):
        parse_request({"mode": "actmax", "layer": "features.10", "channel": "0-64"}, served)
    ok = parse_request({"mode": "actmax", "layer": "features.10", "channel": "0-63"}, served)
    assert len(ok.values["actmax"]["targets"]) == 64


def test_precision_auto_resolves_to_what_the_device_does_well(svc):
    from vizserve.served import bf16_is_fast

    req = parse_request({"mode": "actmax", "channel": "1"}, svc.served)
    assert req.values["actmax"]["precision"] == "auto"
    assert isinstance(bf16_is_fast(torch.device("cpu")), bool)
    [reply] = svc.handle([{"mode": "actmax", "channel": "1", "steps": "2", "precision": "float32"}])
    assert reply.status == 200
