"""Preferred images of the shapes model, judged by models trained apart from it: a picture that only its own model
reads as its class is adversarial, not an explanation (issue 12).

Which CPU this depends on, and how it holds on every one (issue 24). The judges are trained here, on this machine's
CPU, and training numerics differ between CPUs (vector widths, kernels), so after 1000 steps the judge of a seed is
another network on another CPU. Measured on a machine without AMX (AMD EPYC, AVX512-BF16), over 6 image seeds of
the 6 classes (36 images) with the defaults, in float32 and bfloat16 alike, seven judges read from 15 to 34 of the
36: the judge, not the precision, decides (the images of both precisions were read alike by each judge, within 3).
One judge per architecture, as this test had, reads 4 to 6 of 6 on one machine and 2 to 4 on another. So the images
are judged by two judges of each architecture, their probabilities averaged (the pairs of those seven judges read
25 to 34 of 36, same architecture, and 18 to 24, the other), over all 36 images, against bars met by every pair
measured: half of the images for the same architecture, a third for the other (chance is a sixth). The precision
the images were made in (``precision=auto``: bfloat16 where the CPU or GPU computes it natively) is stated in each
assertion's message, with whether this CPU has AMX.
"""

import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
import torch

from examples.shapes.judge import JudgeNet
from examples.shapes.model import ShapesNet
from examples.shapes.shapes_data import CLASSES, normalize
from examples.shapes.train import accuracy
from tests.images import raw_array
from tests.services import shapes_model, shapes_service
from vizserve import Limits

#: (architecture, seed, steps, learning rate): train.py's recipe for ShapesNet, JudgeNet's own.
JUDGES = {"same": [("shapes", 1, 1000, 5e-3), ("shapes", 3, 1000, 5e-3)],
          "other": [("judge", 2, 250, 1e-2), ("judge", 7, 250, 1e-2)]}  # fmt: skip
IMAGE_SEEDS = range(6)


def _train(arch: str, seed: int, steps: int, lr: float) -> dict[str, torch.Tensor]:
    """One judge, in a process of its own on one thread (two train at once on two cores)."""
    torch.set_num_threads(1)
    from examples.shapes.train import train

    return train(seed=seed, steps=steps, lr=lr, arch=arch).state_dict()


@pytest.fixture(scope="module")
def judges() -> dict[str, list[torch.nn.Module]]:
    """Two judges per architecture, trained apart from the served model (its weights are seed 0's): about a minute
    and a half on 2 cores."""
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        made = {group: [pool.submit(_train, *j) for j in js] for group, js in JUDGES.items()}
        out = {}
        for group, futures in made.items():
            out[group] = []
            for (arch, *_), future in zip(JUDGES[group], futures, strict=True):
                model = ShapesNet() if arch == "shapes" else JudgeNet()
                model.load_state_dict(future.result())
                out[group].append(model.eval())
    return out


def where() -> str:
    """The precision the images are made in here, and this CPU's matrix units, for the messages."""
    svc = shapes_service()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = "AMX" if "amx_bf16" in flags else "AVX512-BF16 without AMX" if "avx512_bf16" in flags else "no bf16 units"
    return f"precision {'bfloat16' if svc.served.bf16 else 'float32'} (auto), CPU: {cpu}"


def test_every_judge_reaches_95_percent(judges):
    """train.py's recipe with other seeds, and the other architecture: each judge is a good reader of shapes."""
    assert all(isinstance(m, ShapesNet) for m in judges["same"]) and all(
        isinstance(m, JudgeNet) for m in judges["other"]
    )
    for group in judges.values():
        for model in group:
            assert accuracy(model) > 0.95


def preferred(fields: dict) -> tuple[torch.Tensor, list[dict]]:
    """``[K, 3, H, W]`` in [0, 1] and the entries, as the service answers with its defaults plus ``fields``."""
    service = shapes_service(Limits(max_busy_seconds=600))  # judged on the whole run, not on this machine's load
    [reply] = service.handle([{"mode": "actmax", "raw": "true", **fields}])
    assert reply.status == 200, reply.body[:300]
    entries = json.loads(reply.body)["actmax"]
    return torch.stack([torch.from_numpy(raw_array(e["raw"])) for e in entries]), entries


@pytest.fixture(scope="module")
def class_images() -> torch.Tensor:
    """The six class images of each image seed: ``[36, 3, 64, 64]``, classes in order within each seed."""
    out = []
    for seed in IMAGE_SEEDS:
        images, entries = preferred({"channel": "0-5", "seed": str(seed)})
        assert [e["label"] for e in entries] == list(CLASSES) and all(e["steps"] == 128 for e in entries)
        out.append(images)
    return torch.cat(out)


def read_as_their_class(models, images) -> torch.Tensor:
    """Each image's probability of its own class, averaged over ``models`` ``[N]``."""
    target = torch.arange(len(CLASSES)).repeat(len(images) // len(CLASSES))
    with torch.no_grad():
        probs = torch.stack([m(normalize(images)).softmax(1) for m in models]).mean(0)
    return probs[torch.arange(len(images)), target]


def test_default_class_images_are_read_as_their_class_by_judges_trained_apart(class_images, judges):
    """The served model reads all 36 with p >= 0.9; the same architecture's two judges, averaged, read at least
    half of them (p >= 0.5), the other architecture's at least a third: far above chance (a sixth), and met by
    every pair of the seven judges measured on this machine (see the module's docstring)."""
    own = read_as_their_class([shapes_model()], class_images)
    same = read_as_their_class(judges["same"], class_images)
    other = read_as_their_class(judges["other"], class_images)
    n = len(class_images)
    context = f"{where()}; read by the same architecture {int((same >= 0.5).sum())}/{n}, the other " \
              f"{int((other >= 0.5).sum())}/{n}"  # fmt: skip
    assert (own >= 0.9).all(), (context, own)
    assert (same >= 0.5).sum() >= n / 2, (context, same)
    assert (other >= 0.5).sum() >= n / 3, (context, other)


def test_channel_images_of_the_last_convolution_excite_their_channel_far_above_noise():
    """Each of the 32 channels of features.8 (the last convolution): its mean on its preferred image is at least
    10 standard deviations above its mean over 256 uniform-noise images, in the better of two image seeds (an
    optimization may miss on one: channel 3 reached 3.9 on one seed here and 11.8 on the other in float32, 7.2 and
    13.4 in bfloat16; every other channel 15 or more), and the median channel at least 15 on each seed."""
    model = shapes_model()
    last = model.features[:9]  # up to and with features.8, before its ReLU
    noise = torch.rand(256, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        on_noise = last(normalize(noise)).mean((2, 3))  # [256, 32]
    zs = []
    for seed in (0, 1):
        images, _ = preferred({"layer": "features.8", "channel": "0-31", "seed": str(seed)})
        with torch.no_grad():
            on_own = last(normalize(images)).mean((2, 3)).diagonal()  # [32]
        zs.append((on_own - on_noise.mean(0)) / on_noise.std(0).clamp_min(1e-6))
    z = torch.stack(zs)  # [2, 32]
    assert (z.max(0).values >= 10).all(), (where(), z)
    assert (z.median(1).values >= 15).all(), (where(), z)
