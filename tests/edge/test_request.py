import base64
import json

import pytest

from cnnviz import InvalidInput, InvalidOption, LayerTable, UnknownLayer, build_model, imagenet_weights
from vizserve import OPTIONS, fields_of, parse_request


@pytest.fixture(scope="module")
def table():
    return LayerTable(build_model("alexnet"))


LABELS = imagenet_weights("alexnet").meta["categories"]


def parse(table, **fields):
    return parse_request(fields, table, LABELS)


def test_defaults(table):
    req = parse(table, data=b"img")
    assert req.modes == ("classify",) and req.topk == 5 and req.channels == 64 and not req.raw
    assert req.layers == ("features.0", "features.10") and req.format == "json" and req.normalize == "channel"


def test_multipart_values_arrive_as_bytes(table):
    req = parse(table, data=bytearray(b"x"), mode=bytearray(b"featuremaps,filters"), layers=b"features.3",
                channels=b"all", raw=b"true", topk=b"10")  # fmt: skip
    assert req.modes == ("classify", "featuremaps", "filters")
    assert req.layers == ("features.3",) and req.channels is None and req.raw and req.topk == 10


def test_json_values_keep_their_types(table):
    data = base64.b64encode(b"img").decode()
    req = parse(table, data=data, mode=["featuremaps"], topk=3, raw=True, layers=["features.0", "features.8"])
    assert req.data == b"img" and req.topk == 3 and req.raw and req.layers == ("features.0", "features.8")
    assert parse(table, data="data:image/png;base64," + data).data == b"img"


def test_modes_without_an_image(table):
    assert parse(table, mode="layers").modes == ("layers",)
    assert parse(table, mode="filters,layers").modes == ("filters", "layers")
    with pytest.raises(InvalidInput, match="mode classify needs an image"):
        parse(table)
    with pytest.raises(InvalidInput, match="mode featuremaps needs an image"):
        parse(table, mode="featuremaps")


@pytest.mark.parametrize(
    "fields, error, match",
    [
        ({"mode": "gradcams"}, InvalidOption, "unknown mode 'gradcams'; modes: classify, featuremaps, filters, layers"),
        ({"layr": "features.0"}, InvalidOption, "unknown option 'layr'; options: data, mode, topk, layers"),
        (
            {"layer": "features.0"},
            InvalidOption,
            "option 'layer' is used by mode gradcam, deconv, actmax and invert; add it",
        ),
        ({"topk": "abc"}, InvalidOption, r"'topk' must be a whole number in 1\.\.1000, got 'abc'"),
        ({"topk": "0"}, InvalidOption, r"'topk' must be a whole number in 1\.\.1000, got '0'"),
        ({"topk": "1001"}, InvalidOption, r"'topk' must be a whole number in 1\.\.1000, got '1001'"),
        ({"topk": "nan"}, InvalidOption, "whole number"),
        ({"topk": "-1"}, InvalidOption, "whole number"),
        ({"topk": "1e3"}, InvalidOption, "whole number"),
        ({"topk": 2.5}, InvalidOption, "whole number"),
        (
            {"channels": "0", "mode": "featuremaps"},
            InvalidOption,
            r"'channels' must be a whole number in 1\.\.100000 or 'all', got '0'",
        ),
        ({"channels": "inf", "mode": "featuremaps"}, InvalidOption, "whole number"),
        ({"raw": "maybe"}, InvalidOption, "'raw' must be true or false"),
        ({"format": "jpeg"}, InvalidOption, "'format' must be one of json, png"),
        ({"format": "png"}, InvalidOption, "format=png returns a picture: add one of the modes gradcam, saliency"),
        ({"normalize": "global"}, InvalidOption, "'normalize' must be one of channel, layer"),
        ({"layers": "features.0"}, InvalidOption, "'layers' is used by modes featuremaps and filters"),
        ({"mode": "featuremaps", "layers": ","}, InvalidOption, "'layers' is empty"),
        ({"mode": "featuremaps", "layers": ",".join(["features.0"] * 17)}, InvalidOption, "at most 16"),
        ({"mode": "featuremaps", "layers": "features.99"}, UnknownLayer, "unknown layer 'features.99'"),
        ({"mode": "featuremaps", "layers": "classifier.1"}, UnknownLayer, "not \\[C, H, W\\]"),
        ({"mode": "filters", "layers": "features.1"}, UnknownLayer, "has no convolution filters"),
        ({"mode": "featuremaps", "layers": "__class__"}, UnknownLayer, "unknown layer '__class__'"),
        ({"mode": b"\xff\xfe"}, InvalidOption, "not UTF-8"),
        ({"mode": {"a": 1}}, InvalidOption, "must be text or a number"),
    ],
)
def test_bad_options_name_the_problem(table, fields, error, match):
    with pytest.raises(error, match=match):
        parse(table, data=b"img", **fields)


def test_bad_base64(table):
    with pytest.raises(InvalidInput, match="not valid base64"):
        parse(table, data="@@@@")


def test_topk_is_capped_by_the_class_count(table):
    with pytest.raises(InvalidOption, match=r"1\.\.3"):
        parse_request({"data": b"x", "topk": "4"}, table, ["a", "b", "c"])


def test_every_option_has_a_documented_default():
    assert set(OPTIONS) == {
        "data", "mode", "topk", "layers", "channels", "raw", "format", "normalize",
        "method", "target", "layer", "channel", "samples", "noise", "steps", "baseline",
        "y", "x", "param", "optimizer", "lr", "size", "seed", "init", "init_weight", "l1", "l2", "tv", "blur_every",
        "transforms", "stream", "precision",
    }  # fmt: skip


@pytest.mark.parametrize(
    "item, expected",
    [
        ({"body": bytearray(b"\xff\xd8jpeg")}, {"data": b"\xff\xd8jpeg"}),
        ({"body": {"mode": "layers"}}, {"mode": "layers"}),
        ({"body": bytearray(b' {"mode": "layers"}')}, {"mode": "layers"}),
        ({"data": b"x", "mode": b"filters"}, {"data": b"x", "mode": b"filters"}),
    ],
)
def test_fields_of_every_request_shape(item, expected):
    assert fields_of(item) == expected


def test_fields_of_refuses_bad_json_and_non_objects():
    with pytest.raises(InvalidInput, match="looks like JSON but does not parse"):
        fields_of({"body": bytearray(b"{nope")})
    with pytest.raises(InvalidInput, match="got JSON list"):
        fields_of({"body": json.loads("[1, 2]")})
