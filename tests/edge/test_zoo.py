"""Any torchvision CNN by name: a representative set at their true input sizes, with seeded random weights.

Each is served from its spec (``torchvision_spec``) and compared with torchvision's own model, built through its
weights API (``get_model(arch, weights=...)``, whose state-dict download is replaced by the same random weights)
and fed torchvision's own transform (``weights.transforms()``).
"""

import io
import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from cnnviz import imagenet_weights, load_weights, torchvision_spec
from tests.images import jpeg, raw_array
from vizserve import VizService, image_transform
from vizserve.loading import model_for

#: arch -> (input side, default CAM layer)
ZOO = {
    "densenet121": (224, "features"),
    "inception_v3": (299, "Mixed_7c"),
    "efficientnet_b0": (224, "features"),
    "mobilenet_v3_large": (224, "features"),
    "convnext_tiny": (224, "features"),
    "squeezenet1_1": (224, "features"),
    "googlenet": (224, "inception5b"),
}
PHOTO = jpeg(400, 300, seed=3)


def torchvision_model(arch, monkeypatch):
    """torchvision's own pretrained path, with the download replaced by seeded random weights (aux heads too)."""
    entry = imagenet_weights(arch)
    kwargs = {"aux_logits": True, "init_weights": False} if arch in ("inception_v3", "googlenet") else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = torchvision.models.get_model(arch, weights=None, **kwargs).state_dict()
    monkeypatch.setattr(type(entry), "get_state_dict", lambda self, *a, **k: state)
    return torchvision.models.get_model(arch, weights=entry).eval(), entry, state


@pytest.mark.parametrize("arch", list(ZOO))
def test_served_like_torchvision_serves_it(arch, monkeypatch):
    side, cam_layer = ZOO[arch]
    reference, entry, state = torchvision_model(arch, monkeypatch)
    spec = torchvision_spec(arch, weights="random")
    svc = VizService(load_weights(model_for(spec, None), state), spec, device=torch.device("cpu"), name=f"{arch}_viz")
    assert svc.spec.input_shape == (3, side, side) and svc.spec.cam_layer == cam_layer

    x = entry.transforms()(Image.open(io.BytesIO(PHOTO)).convert("RGB"))
    assert torch.equal(image_transform(spec.preprocess)(Image.open(io.BytesIO(PHOTO)).convert("RGB")), x)
    layer = svc.spec.featuremap_layers[-1]
    seen = {}
    handle = dict(reference.named_modules())[layer].register_forward_hook(lambda m, a, o: seen.update(out=o.clone()))
    try:
        with torch.inference_mode():
            expected = reference(x[None]).softmax(-1)[0]
    finally:
        handle.remove()

    [reply] = svc.handle([{"data": PHOTO, "mode": "featuremaps,gradcam", "layers": layer, "channels": "4",
                           "raw": "true", "topk": "1000"}])  # fmt: skip
    assert reply.status == 200, reply.body[:300]
    out = json.loads(reply.body)
    got = torch.zeros(1000)
    for p in out["predictions"]:
        got[p["index"]] = p["score"]
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-4)
    fmap = raw_array(out["featuremaps"][0]["raw"])
    assert np.allclose(fmap, seen["out"][0].numpy(), atol=1e-5, rtol=1e-4)
    cam = raw_array(out["gradcam"]["raw"])
    assert out["gradcam"]["layer"] == cam_layer and cam.shape == (side, side) and np.isfinite(cam).all()
