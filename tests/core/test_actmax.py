import pytest
import torch

from cnnviz import build_model, random_state_dict
from cnnviz.actmax import Settings, Target, actmax, invert
from examples.shapes.model import ShapesNet
from examples.shapes.shapes_data import MEAN, STD, make_shapes, normalize

SHAPES = Settings(size=64, mean=MEAN, std=STD)


@pytest.fixture(scope="module")
def alexnet():
    model = build_model("alexnet")
    model.load_state_dict(random_state_dict("alexnet", seed=0))
    return model.eval()


@pytest.fixture(scope="module")
def shapes():
    model = ShapesNet()
    model.load_state_dict(torch.load("examples/shapes/weights.pt", weights_only=True))
    return model.eval()


@pytest.mark.parametrize("param", ["fft", "pixel"])
def test_objective_rises_tenfold_on_random_alexnet(alexnet, param):
    targets = [Target("features.10", c) for c in range(8)]
    result = actmax(alexnet, targets, Settings(size=96, steps=100, lr=0.1, param=param, transforms=False))
    assert result.images.shape == (8, 3, 96, 96)
    assert (result.images >= 0).all() and (result.images <= 1).all()
    assert (result.end >= 10 * result.start.abs()).all(), (result.start, result.end)
    assert result.steps == 100 and not result.stopped_early


def test_class_images_of_the_shapes_model_are_recognized(shapes):
    result = actmax(shapes, [Target("", c) for c in range(6)], Settings(size=64, steps=128, mean=MEAN, std=STD))
    with torch.no_grad():
        probs = shapes(normalize(result.images)).softmax(-1)
    assert probs.diagonal().min() >= 0.9, probs.diagonal()


def test_a_fixed_seed_repeats(alexnet):
    targets = [Target("features.8", 3), Target("features.8", 4)]
    a, b = (actmax(alexnet, targets, Settings(size=64, steps=5, seed=7)) for _ in range(2))
    c = actmax(alexnet, targets, Settings(size=64, steps=5, seed=8))
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_units_and_linear_layers(alexnet):
    result = actmax(alexnet, [Target("features.10", 2, 6, 6), Target("classifier.4", 9)], Settings(size=96, steps=3))
    assert result.start.shape == (2,) and result.steps == 3


def test_budget_stops_early_with_what_there_is(shapes):
    result = actmax(shapes, [Target("", 0)], Settings(size=64, steps=100, budget_s=0.0, mean=MEAN, std=STD))
    assert result.stopped_early and result.steps == 0 and result.images.shape == (1, 3, 64, 64)


def test_model_left_as_it_was(shapes):
    shapes.train()
    try:
        actmax(shapes, [Target("features.3", 1), Target("", 2)], Settings(size=64, steps=3, mean=MEAN, std=STD))
        assert shapes.training
        assert all(p.requires_grad and p.grad is None for p in shapes.parameters())
        assert all(not m._forward_hooks for m in shapes.modules())
    finally:
        shapes.eval()


def test_progress_is_called_every_step(shapes):
    seen = []
    actmax(shapes, [Target("", 1)], Settings(size=64, steps=4, mean=MEAN, std=STD),
           progress=lambda step, values, images: seen.append((step, values.shape, images().shape)))  # fmt: skip
    assert seen == [(s, (1,), (1, 3, 64, 64)) for s in range(1, 5)]


def test_init_image_with_weight_stays_near_it(shapes):
    images, _, _ = make_shapes(1, 5)
    cfg = Settings(size=64, steps=30, init=images[0], init_weight=50.0, param="pixel", mean=MEAN, std=STD)
    result = actmax(shapes, [Target("", 2)], cfg)
    assert (result.images[0] - images[0]).abs().mean() < 0.1


def test_inversion_matches_the_layer(shapes):
    images, _, _ = make_shapes(1, 4)
    result = invert(shapes, normalize(images)[0], "features.3", Settings(size=64, steps=64, transforms=False,
                                                                          tv=0.05, mean=MEAN, std=STD))  # fmt: skip
    start_error, error = -result.start.item(), -result.end.item()
    assert start_error > 0.5 and error < 0.2


def test_bfloat16_autocast_optimizes_too(alexnet):
    targets = [Target("features.10", c) for c in range(4)]
    result = actmax(alexnet, targets, Settings(size=96, steps=30, lr=0.1, transforms=False, precision="bfloat16"))
    assert result.images.dtype == torch.float32 and result.end.dtype == torch.float32
    assert (result.end > result.start).all()


def test_bfloat16_steps_leave_the_models_float32_weights_as_they_were(alexnet):
    """The steps run on bfloat16 copies of the convolutions' and linear layers' weights, made once; afterwards the
    parameters hold their own float32 tensors again (same storage, same values)."""
    before = {n: (p.dtype, p.data_ptr(), p.detach().clone()) for n, p in alexnet.named_parameters()}
    seen = []
    actmax(alexnet, [Target("", 3)], Settings(size=64, steps=2, precision="bfloat16"),
           progress=lambda *_: seen.append(alexnet.classifier[6].weight.dtype))  # fmt: skip
    assert seen == [torch.float32, torch.float32]  # swapped back between steps, too
    for n, p in alexnet.named_parameters():
        dtype, ptr, value = before[n]
        assert p.dtype == dtype == torch.float32 and p.data_ptr() == ptr and torch.equal(p.detach(), value), n


def test_start_and_end_are_reported_in_float32_when_steps_run_in_bfloat16(shapes):
    """bfloat16 keeps 8 bits: a class log-probability of -1.79 would read -1.7890625 at start and end alike.
    The reported values are the float32 objective of the first and final images."""
    from cnnviz.actmax import Objective

    cfg = Settings(size=64, mean=MEAN, std=STD, steps=3, precision="bfloat16")
    result = actmax(shapes, [Target("", 0), Target("", 4)], cfg)
    x = (result.images - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    with torch.no_grad(), Objective(shapes, [Target("", 0), Target("", 4)]) as objective:
        exact = objective(x)
    torch.testing.assert_close(result.end, exact, rtol=1e-5, atol=1e-5)
    assert (result.end.to(torch.bfloat16).float() != result.end).any()  # more bits than bfloat16 holds
    assert (result.start.to(torch.bfloat16).float() != result.start).any()


@pytest.mark.parametrize(
    "precision,param,extra",
    [("float32", "fft", {"copies": 2}), ("bfloat16", "fft", {}), ("float32", "pixel", {"blur_every": 2, "tv": 0.1})],
)
def test_a_run_resumed_from_a_checkpoint_is_the_run_without_one(shapes, precision, param, extra):
    """N steps in one run equal k steps, a checkpoint (through bytes), a new Optimization restored from it, and the
    N - k steps left, bit for bit on the CPU: parameters, Adam's moments, the step and the transforms' generator."""
    from cnnviz.actmax import Objective, Optimization

    cfg = Settings(size=64, steps=6, seed=3, precision=precision, param=param, mean=MEAN, std=STD, **extra)
    targets = [Target("", 1), Target("", 4)]

    def new():
        return Optimization(shapes, len(targets), Objective(shapes, targets, cfg.classes), cfg)

    whole = new()
    while not whole.finished:
        whole.step()
    expected = whole.finish(False)

    first = new()
    for _ in range(4):
        first.step()
    data = first.checkpoint()
    first.close()
    second = new()
    second.restore(data)
    assert second.done == 4 and torch.equal(second.value, first.value) and torch.equal(second.start, expected.start)
    while not second.finished:
        second.step()
    got = second.finish(False)
    assert got.steps == 6 and torch.equal(got.images, expected.images) and torch.equal(got.end, expected.end)
    with pytest.raises(ValueError, match="another optimization"):  # another size: refused, not silently mixed
        other = Optimization(shapes, 2, Objective(shapes, targets, cfg.classes), Settings(size=32, mean=MEAN, std=STD))
        try:
            other.restore(data)
        finally:
            other.close()
