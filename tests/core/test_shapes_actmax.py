"""Preferred images of the shapes model, judged by two models trained apart from it: a picture that only its own
model reads as its class is adversarial, not an explanation (issue 12)."""

import json

import pytest
import torch

from examples.shapes.model import ShapesNet
from examples.shapes.shapes_data import CLASSES, normalize
from examples.shapes.train import accuracy, train
from tests.images import raw_array
from tests.services import shapes_model, shapes_service
from vizserve import Limits


@pytest.fixture(scope="module")
def same_architecture():
    """ShapesNet by train.py's whole recipe with another seed (1; the served weights are seed 0): about a minute."""
    return train(seed=1)


@pytest.fixture(scope="module")
def other_architecture():
    """JudgeNet (examples/shapes/judge.py: wider, BatchNorm, max pooling at the end), seed 2, 250 steps."""
    return train(seed=2, steps=250, lr=1e-2, arch="judge")


def test_train_py_reaches_95_percent_with_another_seed(same_architecture):
    assert isinstance(same_architecture, ShapesNet) and accuracy(same_architecture) > 0.95


def test_the_other_architecture_reaches_95_percent(other_architecture):
    assert accuracy(other_architecture) > 0.95


def preferred(fields: dict) -> tuple[torch.Tensor, list[dict]]:
    """``[K, 3, H, W]`` in [0, 1] and the entries, as the service answers with its defaults plus ``fields``."""
    service = shapes_service(Limits(max_busy_seconds=600))  # judged on the whole run, not on this machine's load
    [reply] = service.handle([{"mode": "actmax", "raw": "true", **fields}])
    assert reply.status == 200, reply.body[:300]
    entries = json.loads(reply.body)["actmax"]
    return torch.stack([torch.from_numpy(raw_array(e["raw"])) for e in entries]), entries


@pytest.fixture(scope="module")
def class_images():
    images, entries = preferred({"channel": "0-5"})
    assert [e["label"] for e in entries] == list(CLASSES) and all(e["steps"] == 128 for e in entries)
    return images


def read_as_their_class(model, images) -> torch.Tensor:
    with torch.no_grad():
        return model(normalize(images)).softmax(1).diagonal()


def test_default_class_images_are_read_as_their_class_by_two_judges(class_images, same_architecture,
                                                                     other_architecture):  # fmt: skip
    """The issue's targets: p >= 0.5 for at least 5 of 6 classes by the same architecture, 3 of 6 by the other.
    Measured with these defaults: 6/6 and 5/6 (seeds 1 and 2 of the images: 6/6 and 4-5/6)."""
    own = read_as_their_class(shapes_model(), class_images)
    same, other = read_as_their_class(same_architecture, class_images), read_as_their_class(other_architecture,
                                                                                           class_images)  # fmt: skip
    assert (own >= 0.9).all(), own
    assert (same >= 0.5).sum() >= 5, same
    assert (other >= 0.5).sum() >= 3, other


def test_channel_images_of_the_last_convolution_excite_their_channel_far_above_noise():
    """Each of the 32 channels of features.8 (the last convolution): its mean on its preferred image is at least
    10 standard deviations above its mean over 256 uniform-noise images."""
    images, _ = preferred({"layer": "features.8", "channel": "0-31"})
    model = shapes_model()
    last = model.features[:9]  # up to and with features.8, before its ReLU
    noise = torch.rand(256, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        on_noise = last(normalize(noise)).mean((2, 3))  # [256, 32]
        on_own = last(normalize(images)).mean((2, 3)).diagonal()  # [32]
    z = (on_own - on_noise.mean(0)) / on_noise.std(0).clamp_min(1e-6)
    assert (z >= 10).all(), z
