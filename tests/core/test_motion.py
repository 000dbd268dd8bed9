"""The project's own video model, where right answers are known: the clips, accuracy, and Grad-CAM over time."""

import json

import pytest
import torch

from cnnviz import GradCAM
from examples.motion.model import MotionNet
from examples.motion.motion_data import CLASSES, FRAMES, SIZE, make_clips, normalize
from examples.motion.train import TEST_SEED, accuracy, train
from tests.images import raw_array
from tests.services import motion_service
from vizserve import Limits

WEIGHTS = "examples/motion/weights.pt"
# The pointing game's 15 px at 224 px (Zhang et al.), scaled to 64 px, as for the shapes model.
TOLERANCE = round(15 * SIZE / 224)


@pytest.fixture(scope="module")
def model():
    m = MotionNet()
    m.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return m.eval()


def centres(boxes):
    return (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2


def test_clips_move_as_their_labels_say():
    clips, labels, boxes = make_clips(240, 3)
    assert clips.shape == (240, 3, FRAMES, SIZE, SIZE) and 0 <= clips.min() and clips.max() <= 1
    assert set(labels.tolist()) == set(range(len(CLASSES)))
    assert ((boxes >= 0) & (boxes < SIZE)).all()  # wholly inside on every frame
    x, y = centres(boxes)
    dx, dy = x[:, -1] - x[:, 0], y[:, -1] - y[:, 0]
    name = [CLASSES[i] for i in labels]
    for i, c in enumerate(name):
        if c == "right":
            assert dx[i] >= 14 and dy[i].abs() <= 1
        elif c == "left":
            assert dx[i] <= -14 and dy[i].abs() <= 1
        elif c == "down":
            assert dy[i] >= 14 and dx[i].abs() <= 1
        elif c == "up":
            assert dy[i] <= -14 and dx[i].abs() <= 1
        else:  # still or rotating: the centre stays (a turning shape's box wobbles a little)
            assert dx[i].abs() <= 3 and dy[i].abs() <= 3
    still = labels == CLASSES.index("still")
    assert (boxes[still] == boxes[still][:, :1]).all()
    turning = labels == CLASSES.index("rotating")
    assert (boxes[turning] != boxes[turning][:, :1]).any(-1).any(-1).all()


def test_the_first_frame_does_not_tell_the_class():
    """Everything on the first frame is drawn alike for every class: a classifier of first frames is at chance."""
    clips, labels, boxes = make_clips(3000, 4)
    x, y = centres(boxes[:, 0])
    for c in range(len(CLASSES)):
        chosen = labels == c
        assert abs(x[chosen].mean() - x.mean()) < 1.5 and abs(y[chosen].mean() - y.mean()) < 1.5


def test_generation_is_deterministic_for_a_seed():
    a, b, c = make_clips(4, 9), make_clips(4, 9), make_clips(4, 10)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_committed_weights_classify_new_clips(model):
    assert accuracy(model, n=600, seed=TEST_SEED) > 0.95


def test_gradcam_over_time_points_at_the_moving_object_on_every_frame(model):
    """Per-frame pointing game: Grad-CAM of the true class over ``features`` (``[8, 16, 16]`` per clip, upsampled
    to the clip's ``[16, 64, 64]``); on each frame its maximum lies on the object's box of that frame."""
    clips, labels, boxes = make_clips(120, TEST_SEED + 1)
    result = GradCAM(model, "features")(normalize(clips), labels)
    assert result.cams.shape == (120, FRAMES, SIZE, SIZE)  # at the clip's resolution
    flat = result.cams.flatten(2).argmax(2)  # [N, T]
    y, x = flat // SIZE, flat % SIZE
    t = TOLERANCE
    inside = (x >= boxes[..., 0] - t) & (x <= boxes[..., 2] + t) & (y >= boxes[..., 1] - t) & (y <= boxes[..., 3] + t)
    assert inside.float().mean() >= 0.9


def test_training_is_deterministic_for_a_seed():
    a, b, c = train(seed=0, steps=3), train(seed=0, steps=3), train(seed=1, steps=3)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["classifier.weight"], sc["classifier.weight"])


@pytest.fixture(scope="module")
def judge():
    """Another MotionNet, trained here with another seed by the same recipe: a video that only the served model
    reads as its class is adversarial, not an explanation."""
    return train(seed=1, steps=800, log_every=0)


def test_training_with_another_seed_reaches_95_percent(judge):
    """train.py's recipe at 800 of its 1,500 steps (about 2 minutes on 2 cores): 99.8% when measured."""
    assert accuracy(judge, n=600) > 0.95


def motion_of(video: torch.Tensor) -> tuple[float, float]:
    """``(dx, dy)`` in px per frame: how what changes in ``video`` ``[3, T, H, W]`` moves. Each frame's difference
    from the per-pixel median over time (the static background out) above half its largest value (the object,
    not the noise) gives a centroid, and the centroid's steps are averaged over the consecutive frames where the
    change is strongest (above its median).

    Departure from the issue's phase correlation: a preferred video's object fades in and out, and the phase
    correlation of consecutive frames then peaks at (0, 0) for every class (the appearing and fading are not
    shifted), although the object moves; it does find the motion of the generated clips, whose objects do not
    fade. The centroid of the change follows the object in both."""
    change = (video - video.median(dim=1, keepdim=True).values).abs().sum(0)  # [T, H, W]
    strength = change.flatten(1).amax(1)
    change = (change - 0.5 * strength.view(-1, 1, 1)).clamp_min(0)  # the object, not the noise
    h, w = change.shape[-2:]
    mass = change.flatten(1).sum(1).clamp_min(1e-12)
    x = (change * torch.arange(w).view(1, 1, w)).flatten(1).sum(1) / mass
    y = (change * torch.arange(h).view(1, h, 1)).flatten(1).sum(1) / mass
    strong = strength > strength.median()
    pairs = strong[1:] & strong[:-1]
    return (x[1:] - x[:-1])[pairs].median().item(), (y[1:] - y[:-1])[pairs].median().item()


EXPECTED = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def moves_as(dxy: tuple[float, float], label: str) -> bool:
    """At least a quarter of a pixel a frame in the label's direction, and more than across it."""
    (dx, dy), (ex, ey) = dxy, EXPECTED[label]
    along, across = dx * ex + dy * ey, abs(dx * ey) + abs(dy * ex)
    return along >= 0.25 and along > across


def test_the_motion_measure_finds_the_motion_of_generated_clips():
    clips, labels, _ = make_clips(60, 5)
    moving = [(c, CLASSES[k]) for c, k in zip(clips, labels.tolist(), strict=True) if CLASSES[k] in EXPECTED]
    found = [moves_as(motion_of(clip), label) for clip, label in moving]
    assert len(moving) > 20 and sum(found) >= 0.95 * len(found)


@pytest.fixture(scope="module")
def preferred():
    """The preferred video of every class, as the service makes them with its defaults for video models (margin
    objective, transforms twice lucent's size, 2 copies a step, time jitter 4, temporal low-pass at 0.5 cycle a clip),
    at 128 steps: ``[6, 3, T, H, W]``."""
    service = motion_service(Limits(max_busy_seconds=1200))  # judged on the whole run, not on this machine's load
    [reply] = service.handle([{"mode": "actmax", "channel": "0-5", "steps": "128", "raw": "true"}])
    assert reply.status == 200, reply.body[:300]
    entries = json.loads(reply.body)["actmax"]
    assert [e["label"] for e in entries] == list(CLASSES)
    return torch.stack([torch.from_numpy(raw_array(e["raw"])) for e in entries])


def test_preferred_videos_are_read_as_their_class_by_the_served_model_and_by_a_second_one(model, judge, preferred):
    """Every class, by the served model and by the judge (another seed), with p >= 0.9: an adversarial video would
    fool only its own model. Measured with the video defaults (time_cycles 0.5) over image seeds 0-7: the judge
    reads every class with p >= 0.99 in every seed (docs/models.md, "Video")."""
    with torch.no_grad():
        own = model(normalize(preferred)).softmax(1)
        other = judge(normalize(preferred)).softmax(1)
    assert (own.diagonal() >= 0.9).all(), own.diagonal()
    assert (other.diagonal() >= 0.9).all(), dict(zip(CLASSES, other.diagonal().tolist(), strict=True))


def test_the_preferred_videos_of_motions_move_that_way(preferred):
    """The preferred video of "right" moves right; of the four directions, at least three move their way."""
    assert moves_as(motion_of(preferred[CLASSES.index("right")]), "right")
    assert sum(moves_as(motion_of(preferred[CLASSES.index(label)]), label) for label in EXPECTED) >= 3
