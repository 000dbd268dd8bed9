import urllib.error

import pytest
import torch

import cnnviz
from cnnviz import (
    InvalidOption,
    WeightsUnavailable,
    build_model,
    imagenet_state_dict,
    imagenet_weights,
    load_weights,
    random_state_dict,
    read_state_dict,
)


def test_public_api_is_exactly_all():
    import inspect

    public = {n for n in dir(cnnviz) if not n.startswith("_") and not inspect.ismodule(getattr(cnnviz, n))}
    assert public == set(cnnviz.__all__)


def test_core_never_imports_torchserve():
    import pathlib

    for path in pathlib.Path(cnnviz.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "import ts" not in text and "from ts" not in text, path


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(InvalidOption, match=r"unknown architecture 'lenet' \(did you mean .*\); valid: alexnet, conv"):
        build_model("lenet")


def test_every_torchvision_cnn_is_served_and_transformers_are_refused_with_the_reason():
    import torchvision

    tvm = torchvision.models
    listed = set(tvm.list_models(module=tvm)) | set(tvm.list_models(module=tvm.video))
    assert set(cnnviz.ARCHITECTURES) | set(cnnviz.TRANSFORMERS) == listed
    assert cnnviz.VIDEO_ARCHITECTURES == ("mc3_18", "r2plus1d_18", "r3d_18", "s3d")
    assert {"densenet121", "inception_v3", "efficientnet_v2_s", "convnext_tiny", "regnet_y_400mf"} <= set(
        cnnviz.ARCHITECTURES
    )
    assert {"vit_b_16", "swin_t", "maxvit_t", "mvit_v2_s", "swin3d_t"} <= set(cnnviz.TRANSFORMERS)
    with pytest.raises(InvalidOption, match=r"vit_b_16 is a vision transformer: .*token sequences"):
        build_model("vit_b_16")


def test_inception_spec_comes_from_its_weights_metadata():
    spec = cnnviz.torchvision_spec("inception_v3")
    assert spec.input_shape == (3, 299, 299) and spec.preprocess.resize == 342 and spec.preprocess.crop == (299, 299)
    assert spec.builder == {"transform_input": True, "aux_logits": False, "init_weights": False}
    assert spec.min_side == 75 and spec.weights == "IMAGENET1K_V1" and len(spec.labels) == 1000
    model = build_model("inception_v3")
    assert model.transform_input and model.AuxLogits is None
    b1 = cnnviz.torchvision_spec("efficientnet_b1", "IMAGENET1K_V2")
    assert b1.preprocess.interpolation == "bilinear" and b1.preprocess.resize == 255 and b1.weights == "IMAGENET1K_V2"
    with pytest.raises(InvalidOption, match="alexnet has no weights 'IMAGENET1K_V9'; it has: IMAGENET1K_V1"):
        cnnviz.torchvision_spec("alexnet", "IMAGENET1K_V9")


def test_video_spec_comes_from_its_weights_metadata():
    spec = cnnviz.torchvision_spec("r3d_18")
    assert spec.modality == "video" and spec.input_shape == (3, 16, 112, 112) and len(spec.labels) == 400
    pre = spec.preprocess
    assert pre.resize == (128, 171) and pre.crop == (112, 112) and (pre.frames, pre.fps) == (16, 15.0)
    assert pre.mean == (0.43216, 0.394666, 0.37645) and spec.weights == "KINETICS400_V1"
    assert cnnviz.torchvision_spec("s3d").preprocess.frames == 128  # torchvision evaluated S3D on 128-frame clips
    table = cnnviz.LayerTable(build_model("r3d_18"), spec.input_shape)
    assert spec.with_defaults(table).cam_layer == "layer4" and table["layer4"].output_shape == (512, 2, 7, 7)
    assert cnnviz.ModelSpec.from_dict(spec.to_dict()) == spec


def test_auxiliary_classifier_keys_of_pretrained_weights_are_skipped():
    import torchvision

    with_aux = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False).state_dict()
    assert any(k.startswith("aux1.") for k in with_aux)
    model = load_weights(build_model("googlenet"), with_aux)
    assert torch.equal(model.fc.weight, with_aux["fc.weight"])
    with pytest.raises(ValueError, match="unexpected"):
        load_weights(build_model("resnet18"), {**random_state_dict("resnet18"), "aux1.x": torch.zeros(1)})


def test_random_weights_are_seeded():
    a, b, c = random_state_dict("resnet18", 0), random_state_dict("resnet18", 0), random_state_dict("resnet18", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_read_state_dict_accepts_plain_and_wrapped(tmp_path):
    state = {"w": torch.ones(2)}
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pt")
    assert torch.equal(read_state_dict(tmp_path / "plain.pt")["w"], state["w"])
    assert torch.equal(read_state_dict(tmp_path / "ckpt.pt")["w"], state["w"])
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a state dict"):
        read_state_dict(tmp_path / "list.pt")
    (tmp_path / "garbage.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a state dict saved with torch.save"):
        read_state_dict(tmp_path / "garbage.pt")


def test_load_weights_names_missing_and_unexpected_keys():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"missing \['bias'\].*unexpected \['extra'\]"):
        load_weights(model, {"weight": torch.zeros(2, 2), "extra": torch.zeros(1)})


def test_imagenet_weights_come_from_the_torch_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = imagenet_weights("resnet18")
    cached = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    state = random_state_dict("resnet18", seed=3)
    torch.save(state, cached)
    got = imagenet_state_dict("resnet18")
    assert torch.equal(got["fc.weight"], state["fc.weight"])


def test_unavailable_weights_name_both_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailable) as err:
        imagenet_state_dict("alexnet")
    text = str(err.value)
    assert "--weights FILE" in text and "--random-weights" in text and "alexnet-owt-7be5be79.pth" in text
    assert str(tmp_path / "hub" / "checkpoints") in text
