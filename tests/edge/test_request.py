import base64
import json

import pytest
import torch

from cnnviz import InvalidInput, InvalidOption, UnknownLayer, build_model, torchvision_spec
from vizserve import MODES, VizService, all_options, fields_of, parse_request


@pytest.fixture(scope="module")
def table():
    """The served AlexNet (named ``table`` for the tests' brevity)."""
    return VizService(build_model("alexnet"), torchvision_spec("alexnet"), device=torch.device("cpu"), name="a").served


def parse(served, **fields):
    return parse_request(fields, served)


def test_defaults(table):
    req = parse(table, data=b"img", mode="featuremaps")
    fm = req.values["featuremaps"]
    assert req.modes == ("classify", "featuremaps") and req.values["classify"]["topk"] == 5 and not req.raw
    assert fm["channels"] == 64 and fm["layers"] == ("features.0", "features.10") and fm["normalize"] == "channel"
    assert req.format == "json"


def test_multipart_values_arrive_as_bytes(table):
    req = parse(table, data=bytearray(b"x"), mode=bytearray(b"featuremaps,filters"), layers=b"features.3",
                channels=b"all", raw=b"true", topk=b"10")  # fmt: skip
    assert req.modes == ("classify", "featuremaps", "filters")
    fm = req.values["featuremaps"]
    assert fm["layers"] == ("features.3",) and fm["channels"] is None and req.raw
    assert req.values["classify"]["topk"] == 10 and req.values["filters"]["layers"] == ("features.3",)


def test_json_values_keep_their_types(table):
    data = base64.b64encode(b"img").decode()
    req = parse(table, data=data, mode=["featuremaps"], topk=3, raw=True, layers=["features.0", "features.8"])
    assert req.data == b"img" and req.values["classify"]["topk"] == 3 and req.raw
    assert req.values["featuremaps"]["layers"] == ("features.0", "features.8")
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
        (
            {"mode": "gradcams"},
            InvalidOption,
            r"unknown mode 'gradcams' \(did you mean 'gradcam'\?\); modes: classify, featuremaps, filters, layers",
        ),
        ({"layr": "features.0"}, InvalidOption, r"^unknown option 'layr'; did you mean 'layer', 'layers' or 'lr'\?$"),
        ({"frames": "8"}, InvalidOption, "options 'frames', 'start' and 'clip' sample a video; alexnet takes images"),
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
        (
            {"mode": "actmax", "channel": "1", "stream": "true"},
            InvalidOption,
            "option 'stream' is gone: actmax and invert run as jobs .* field 'job'",
        ),
        (
            {"job": "abc", "mode": "classify"},
            InvalidOption,
            "a poll sends field 'job' alone \\(a cancel: 'job' and 'cancel'\\); this one also has data, mode",
        ),
        ({"cancel": "true"}, InvalidOption, "option 'cancel' ends a job: send it with field 'job'"),
        ({"normalize": "global", "mode": "featuremaps"}, InvalidOption, "'normalize' must be one of channel, layer"),
        ({"normalize": "layer"}, InvalidOption, "'normalize' is used by mode featuremaps; add it to mode"),
        ({"layers": "features.0"}, InvalidOption, "'layers' is used by mode featuremaps and filters"),
        ({"mode": "featuremaps", "layers": ","}, InvalidOption, "'layers' is empty"),
        ({"mode": "featuremaps", "layers": ",".join(["features.0"] * 17)}, InvalidOption, "at most 16"),
        ({"mode": "featuremaps", "layers": "features.99"}, UnknownLayer, "unknown layer 'features.99'"),
        ({"mode": "featuremaps", "layers": "classifier.1"}, UnknownLayer, "not \\[C, H, W\\]"),
        ({"mode": "filters", "layers": "features.1"}, UnknownLayer, "has no convolution filters"),
        ({"mode": "featuremaps", "layers": "__class__"}, UnknownLayer, "unknown layer '__class__'"),
        ({"mode": "featuremaps", "layers": "x" * 10_000}, UnknownLayer, r"unknown layer 'x{77}\.\.\.'"),
        ({"mode": "x" * 10_000}, InvalidOption, r"unknown mode 'x{77}\.\.\.'; modes"),
        ({"mode": b"\xff\xfe"}, InvalidOption, "not UTF-8"),
        ({"mode": {"a": 1}}, InvalidOption, "must be text or a number"),
    ],
)
def test_bad_options_name_the_problem(table, fields, error, match):
    with pytest.raises(error, match=match):
        parse(table, data=b"img", **fields)


def test_a_poll_or_a_cancel_without_jobs_is_refused(table):
    for fields in ({"job": "abc"}, {"job": "abc", "cancel": "true"}):
        with pytest.raises(InvalidOption, match="runs optimizations in the request \\(no jobs\\)"):
            parse(table, **fields)


def test_bad_base64(table):
    with pytest.raises(InvalidInput, match="not valid base64"):
        parse(table, data="@@@@")


def test_topk_is_capped_by_the_class_count():
    from tests.services import tiny_service

    with pytest.raises(InvalidOption, match=r"1\.\.3"):
        parse_request({"data": b"x", "topk": "4"}, tiny_service().served)


def test_every_option_is_declared_once_and_means_one_thing():
    options = all_options()
    assert set(options) == {
        "data", "mode", "topk", "layers", "channels", "raw", "format", "normalize",
        "method", "target", "layer", "channel", "samples", "noise", "ig_steps", "baseline",
        "y", "x", "param", "optimizer", "lr", "size", "seed", "init", "init_weight", "l1", "l2", "tv", "blur_every",
        "transforms", "job", "cancel", "precision", "steps", "time_jitter", "tv_time", "time_cycles", "frames", "start",
        "clip",
        "t", "class_score", "robustness", "copies", "direction", "images", "diversity", "diversity_layer",
        "window", "stride", "faithfulness", "faithfulness_steps", "aug_smooth", "eigen_smooth", "colormap", "opacity",
    }  # fmt: skip
    for name, users in options.items():
        kinds = {(o.kind, o.lo, o.hi, o.choices, o.help) for _, o in users}
        assert len(kinds) == 1, f"option {name!r} is declared differently by {[m for m, _ in users]}"
    for mode in MODES.values():
        assert len({o.name for o in mode.options}) == len(mode.options), mode.name
        assert mode.summary and all(o.help for o in mode.options)


def test_a_shared_option_given_once_applies_to_every_mode_that_reads_it(table):
    req = parse(table, data=b"x", mode="gradcam,deconv,invert", layer="features.8")
    assert {req.values[m]["layer"] for m in ("gradcam", "deconv", "invert")} == {"features.8"}
    req = parse(table, data=b"x", mode="actmax,invert", channel="1", tv="0.5")
    assert req.values["actmax"]["tv"] == req.values["invert"]["tv"] == 0.5
    defaults = parse(table, data=b"x", mode="actmax,invert", channel="1")
    assert defaults.values["actmax"]["tv"] == 0.0 and defaults.values["invert"]["tv"] == 0.05
    both = parse(table, data=b"x", mode="saliency,actmax", channel="1", steps="256", ig_steps="64")
    assert both.values["actmax"]["steps"] == 256 and both.values["saliency"]["ig_steps"] == 64


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


@pytest.mark.parametrize(
    "fields, message",
    [
        # curl users write -F file=@cat.jpg: the input's name, not a list of every option
        ({"file": b"x"}, "unknown option 'file'; did you mean 'data'? (the input is field 'data': -F data=@cat.jpg)"),
        ({"image": b"x"}, "unknown option 'image'; did you mean 'data' or 'images'? (the input is field 'data'"),
        ({"data": b"x", "Mode": "layers"}, "unknown option 'Mode'; did you mean 'mode' or 'method'?"),
        ({"data": b"x", "chanel": "3"}, "unknown option 'chanel'; did you mean 'channel', 'channels' or 'cancel'?"),
        ({"data": b"x", "opactiy": "1"}, "unknown option 'opactiy'; did you mean 'opacity'?"),
        ({"data": b"x", "token": "abc"}, "unknown option 'token': the key goes in a header, -H \"Authorization:"),
        ({"data": b"x", "zzz": "1", "layr": "2"}, "unknown option 'layr' (and 1 more: zzz); did you mean 'layer',"),
        ({"data": b"x", "qqqq": "1"}, "unknown option 'qqqq'; -F mode=describe lists every option with the modes"),
        ({"data": b"x", "mode": "feature_maps"}, "unknown mode 'feature_maps' (did you mean 'featuremaps'?); modes:"),
        (
            {"data": b"x", "mode": "smoothgrad"},
            "unknown mode 'smoothgrad': smoothgrad is a method of mode saliency; send mode=saliency and method=smooth",
        ),
        ({"data": b"x", "mode": "GradCAM++"}, "unknown mode 'GradCAM++': gradcam++ is a method of mode gradcam; send"),
    ],
)
def test_unknown_names_get_the_nearest_declared_ones(table, fields, message):
    with pytest.raises(InvalidOption) as err:
        parse_request(fields, table)
    assert str(err.value).startswith(message)
    assert "frames" not in str(err.value)  # never the list of every option


def test_a_long_unknown_name_is_cut_and_cheap(table):
    with pytest.raises(InvalidOption, match=r"^unknown option 'y{77}\.\.\.'; -F mode=describe"):
        parse_request({"data": b"x", "y" * 100_000: "1"}, table)


@pytest.mark.parametrize(
    "item",
    [
        {},  # curl -d '{"mode": "layers"}': no '=' in it, so TorchServe's form decoder found no field
        {'{"mode": "layers", "data": "ab c/d': bytearray(b'="}')},  # one with '=' (base64 padding): cut apart
        {'[{"data": "x"}]': bytearray(b"")},
    ],
)
def test_a_json_body_sent_as_a_form_is_refused_with_the_fix(item):
    with pytest.raises(InvalidInput, match="-H 'Content-Type: application/json'"):
        fields_of(item)


def test_query_parameters_beside_a_body_are_fields():
    """TorchServe's /models/{model}/invoke?mode=layers passes the query beside the body (its /predictions drops it)."""
    assert fields_of({"mode": bytearray(b"gradcam"), "body": bytearray(b"\xff\xd8jpeg")}) == {
        "data": b"\xff\xd8jpeg",
        "mode": bytearray(b"gradcam"),
    }
    assert fields_of({"topk": b"3", "body": bytearray(b'{"mode": "layers"}')}) == {"mode": "layers", "topk": b"3"}
    with pytest.raises(InvalidOption, match="option 'mode' came twice: in the query string and in the body"):
        fields_of({"mode": b"layers", "body": bytearray(b'{"mode": "classify"}')})


def test_fields_of_refuses_bad_json_and_non_objects():
    with pytest.raises(InvalidInput, match="looks like JSON but does not parse"):
        fields_of({"body": bytearray(b"{nope")})
    with pytest.raises(InvalidInput, match="got JSON list"):
        fields_of({"body": json.loads("[1, 2]")})


def test_readme_options_table_is_generated_from_the_declarations():
    """docs/usage.md's options table (the README links to it)."""
    from scripts.options_table import END, START, table

    readme = (__import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "usage.md").read_text()
    assert START in readme and END in readme
    assert readme.split(START, 1)[1].split(END, 1)[0] == "\n" + table(), "run scripts/options_table.py --write"


def test_actmax_sums_of_hyphenated_labels(table):
    from cnnviz import Target

    sloth, goldfish = Target("", 364), Target("", 1)
    for text, want in [("three-toed sloth", sloth), ("three-toed sloth-goldfish", sloth - goldfish),
                       ("-goldfish+2*three-toed sloth", -goldfish + 2 * sloth)]:  # fmt: skip
        assert parse(table, mode="actmax", channel=text).values["actmax"]["targets"] == (want,)


def test_base64_in_a_form_text_field_that_arrives_as_bytes(table):
    img = b"\xff\xd8\xff\xe0 a jpeg"
    text = base64.b64encode(img)
    assert parse(table, data=text).data == img and parse(table, data=bytearray(text + b"\n")).data == img
    assert parse(table, data=b"data:image/jpeg;base64," + text).data == img
    assert parse(table, data=img).data == img  # binary stays as it came
    assert parse(table, data=b"abc").data == b"abc"  # not base64: the bytes as they came
    with pytest.raises(InvalidInput, match="not valid base64"):
        parse(table, data="abc")  # text (JSON) must be base64
