"""actmax and invert through the service: targets, caps, the time budget; as jobs: 202, polls, the same answer,
the estimate and its refusal."""

import io
import json
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from cnnviz import Direction, Diversity, Target, build_model, torchvision_spec
from tests.images import shape_png
from tests.services import shapes_service
from vizserve import MODES, JobSettings, Limits, ServerConfig, VizService, parse_request, render
from vizserve.loading import job_scheduler

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
        picture = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(e["image"]))))
        # 128 px enlarged 2x, under a title that names the class: the band drawn for that text, pixel for pixel
        band = render._title_band(f"preferred image of class {e['label']} ({e['channel']})", 256)
        assert picture.shape == (band.shape[0] + 256, 256, 3) and np.array_equal(picture[: band.shape[0]], band)
    assert band.shape[0] == render.TITLE_H + render.TITLE_LINE  # 'horizontal stripes' takes a second line


def test_titles_of_preferred_images_name_their_target():
    from vizserve.modes.actmax import Actmax

    cls = {"objective": "tabby", "layer": "classes", "channel": 281, "label": "tabby"}
    unit = {"objective": "features.3:1 at y=4 x=9", "layer": "features.3", "channel": 1, "y": 4, "x": 9}
    summed = {"objective": "circle - square", "sample": 1}
    assert Actmax.title(cls, video=False) == "preferred image of class tabby (281)"
    assert Actmax.title(unit, video=False) == "preferred image of features.3 channel 1 unit y=4 x=9"
    assert Actmax.title({**unit, "t": 2}, video=True) == "preferred video of features.3 channel 1 unit y=4 x=9 t=2"
    assert Actmax.title(summed, video=False) == "preferred image of circle - square, sample 1"


def test_channels_and_a_unit_of_a_layer(svc):
    [reply] = svc.handle([{"mode": "actmax", "layer": "features.3", "channel": "1,5", "y": "4", "x": "9",
                           "steps": "4", "format": "png"}])  # fmt: skip
    assert reply.content_type == "image/png" and reply.body.startswith(PNG)


def test_invert_reports_the_match_error(svc):
    [reply] = svc.handle([{"data": png_of_shape(), "mode": "invert", "layer": "features.3", "steps": "48"}])
    entry = json.loads(reply.body)["invert"]
    assert entry["layer"] == "features.3" and entry["error"] < entry["start_error"]


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
        ({"mode": "actmax", "channel": "1", "blur_every": "4"}, r"'blur_every' blurs pixel parameters \(param=pixel\)"),
        ({"mode": "actmax", "channel": "1", "seed": "-3"}, r"'seed' must be a whole number"),
        ({"mode": "actmax", "channel": "1", "param": "cppn"}, "'param' must be one of fft, pixel"),
        ({"mode": "actmax", "channel": "1", "optimizer": "lbfgs"}, "'optimizer' must be one of adam, sgd"),
        ({"mode": "actmax", "channel": "1", "init": "image"}, "init=image starts from the uploaded image"),
        ({"mode": "actmax", "channel": "1", "stream": "true"}, "option 'stream' is gone"),
        ({"mode": "actmax", "channel": "3+"}, r"a term is missing .*, in '3\+'"),
        ({"mode": "actmax", "channel": "features.99:3"}, r"term 'features.99:3': unknown layer 'features.99'"),
        ({"mode": "actmax", "channel": "1+features.3:24"}, r"0\.\.23 \(a channel of layer features.3\), got '24'"),
        ({"mode": "actmax", "channel": "circle-sqare"}, r"target 'circle-sqare': must be a class .* 'sqare'; did you"),
        ({"mode": "actmax", "channel": "abc*3"}, r"weight 'abc' is not a number, in 'abc\*3'"),
        ({"mode": "actmax", "channel": "1e4*3"}, r"weight '1e4' must be above 0 and at most 1000"),
        ({"mode": "actmax", "channel": "0*circle"}, r"weight '0' must be above 0"),
        ({"mode": "actmax", "channel": "+".join(["1"] * 17)}, "has more than 16 terms; at most 16"),
        ({"mode": "actmax", "channel": "1+" * 2048 + "1"}, "is 4097 characters long; at most 4096"),
        ({"mode": "actmax", "channel": "0-5", "images": "11"}, r"ask for 66 images \(6 targets x 11\); at most 64"),
        ({"mode": "actmax", "channel": "1", "images": "65"}, r"'images' must be a whole number in 1\.\.64"),
        ({"mode": "actmax", "channel": "1", "images": "2", "init": "zeros"}, "init=zeros starts them alike"),
        ({"mode": "actmax", "channel": "1", "diversity": "1"}, "ask for several with option 'images'"),
        ({"mode": "actmax", "channel": "1", "diversity": "1001", "images": "2"}, r"'diversity' must be a number in"),
        ({"mode": "actmax", "channel": "1", "diversity_layer": "features.0"}, "give 'diversity' too"),
        (
            {"mode": "actmax", "channel": "1", "images": "2", "diversity": "1", "diversity_layer": "f.9"},
            "unknown layer",
        ),
        ({"mode": "actmax", "channel": "1", "direction": "image"}, "'channel' and 'direction' each say what"),
        ({"mode": "actmax", "direction": "1,2"}, "name it with option 'layer'"),
        ({"mode": "actmax", "layer": "features.3", "direction": "1,2"}, r"per channel of 'layer' \(24\).*got 2 items"),
        ({"mode": "actmax", "layer": "features.0", "direction": "1,x" + ",1" * 10}, r"item 1 \('x'\) must be a num"),
        ({"mode": "actmax", "layer": "features.0", "direction": ",".join(["0"] * 12)}, "all zeros"),
        ({"mode": "actmax", "layer": "features.3", "direction": "image"}, "direction=image reads the uploaded image"),
        ({"mode": "actmax", "layer": "features.3", "direction": "image", "y": "1"}, "a direction is taken over every"),
        ({"job": "abc"}, r"runs optimizations in the request \(no jobs\)"),
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


T3, T7 = Target("features.3", 3), Target("features.3", 7)


@pytest.mark.parametrize(
    "fields, targets",
    [
        ({"channel": "features.3:3+features.3:7"}, [T3 + T7]),
        ({"channel": "-features.8:12"}, [-Target("features.8", 12)]),
        ({"layer": "features.3", "channel": "3+7"}, [T3 + T7]),
        ({"layer": "features.3", "channel": "0.5*3-7"}, [0.5 * T3 - T7]),
        ({"layer": "features.3", "channel": "3-7"}, [Target("features.3", c) for c in range(3, 8)]),  # a range
        ({"layer": "features.3", "channel": "-7+3, 3 - 1*7"}, [-T7 + T3, T3 - T7]),
        ({"channel": "circle-square"}, [Target("", 0) - Target("", 1)]),
        ({"channel": "1e-3*5,horizontal stripes-2*circle"}, [1e-3 * Target("", 5), Target("", 4) - 2 * Target("", 0)]),
        ({"layer": "features.3", "channel": "1+features.6:2", "y": "4", "x": "9"},
         [Target("features.3", 1, 4, 9) + Target("features.6", 2)]),
        ({"layer": "features.3", "channel": "1,2", "images": "2", "diversity": "0.5"},
         [Target("features.3", c) + 0.5 * Diversity("features.3") for c in (1, 1, 2, 2)]),
        ({"channel": "features.6:1-circle", "images": "2", "diversity": "2", "diversity_layer": "features.0"},
         [Target("features.6", 1) - Target("", 0) + 2 * Diversity("features.0")] * 2),
        ({"channel": "circle", "images": "3", "diversity": "1"}, [Target("", 0) + Diversity("features.8")] * 3),
        ({"layer": "features.0", "direction": "1,-2" + ",0" * 10, "images": "2"},
         [Direction("features.0", (1.0, -2.0) + (0.0,) * 10)] * 2),
    ],
)  # fmt: skip
def test_channel_expressions_parse_to_their_terms(svc, fields, targets):
    values = parse_request({"mode": "actmax", **fields}, svc.served).values["actmax"]
    assert list(values["targets"]) == targets
    assert MODES["actmax"].targets(values) == len(targets)  # the cost estimate counts every image


def test_a_sum_of_classes_and_a_direction_from_the_image_as_requests(svc):
    [reply] = svc.handle([{"mode": "actmax", "channel": "circle-square,features.3:1", "steps": "8"}])
    assert reply.status == 200, reply.body
    entries = json.loads(reply.body)["actmax"]
    assert [e["objective"] for e in entries] == ["circle - square", "features.3:1"]
    assert "label" not in entries[0] and (entries[1]["layer"], entries[1]["channel"]) == ("features.3", 1)
    assert all(e["steps"] == 8 and e["end"] > e["start"] for e in entries)
    [reply] = svc.handle([{"data": png_of_shape(), "mode": "actmax", "layer": "features.3", "direction": "image",
                           "images": "2", "diversity": "1", "steps": "2"}])  # fmt: skip
    assert reply.status == 200, reply.body
    entries = json.loads(reply.body)["actmax"]
    assert [(e["objective"], e["layer"], e["sample"]) for e in entries] == [
        ("direction(features.3, image) + diversity(features.3)", "features.3", s) for s in (0, 1)
    ]
    assert all(-2 <= e["start"] <= 1 for e in entries)  # a cosine, minus one at most for the diversity


def test_precision_auto_resolves_to_what_the_device_does_well(svc):
    from vizserve.served import bf16_is_fast

    req = parse_request({"mode": "actmax", "channel": "1"}, svc.served)
    assert req.values["actmax"]["precision"] == "auto"
    assert isinstance(bf16_is_fast(torch.device("cpu")), bool)
    [reply] = svc.handle([{"mode": "actmax", "channel": "1", "steps": "2", "precision": "float32"}])
    assert reply.status == 200


# -- as jobs ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory):
    svc = make()
    config = ServerConfig(limits=svc.limits, jobs=JobSettings(dir=str(tmp_path_factory.mktemp("jobs"))))
    svc.jobs = job_scheduler("shapes_viz", config, thread=False)
    svc.cost.calibrate()
    return svc


@pytest.fixture
def jobs_svc(scheduled):
    """The service with a job scheduler whose jobs the test steps itself (run_once); what a test leaves queued or
    running is run to its end after it, so that every test starts with an empty queue."""
    yield scheduled
    finish_jobs(scheduled)


def finish_jobs(svc):
    while svc.jobs.run_once():
        pass


def test_an_optimization_is_a_job_whose_answer_equals_the_synchronous_one(svc, jobs_svc):
    fields = {"mode": "actmax", "channel": "circle,3-4", "steps": "8", "raw": "true"}
    [accepted] = jobs_svc.handle([fields])
    assert accepted.status == 202, accepted.body
    job = json.loads(accepted.body)
    assert job["state"] == "queued" and job["mode"] == "actmax" and job["steps"] == 24 - 16  # 8 steps, one batch
    assert job["estimate_s"] > 0 and job["budget"]["compute_s"] == 90 and job["model"] == "shapes_viz"
    [running] = jobs_svc.handle([{"job": job["job"]}])
    assert running.status == 202 and json.loads(running.body)["state"] == "queued"
    finish_jobs(jobs_svc)
    [done] = jobs_svc.handle([{"job": job["job"]}])
    [direct] = svc.handle([fields])
    assert done.status == 200
    got, want = json.loads(done.body), json.loads(direct.body)
    for entry in got["actmax"] + want["actmax"]:
        entry.pop("seconds")
    assert got == want  # same seed, same steps: the same images, bit for bit


def test_a_cancelled_job_answers_what_it_has_at_once(jobs_svc):
    [accepted] = jobs_svc.handle([{"mode": "actmax", "channel": "circle,3", "steps": "400"}])
    job = json.loads(accepted.body)["job"]
    for _ in range(4):  # set-up and 3 steps
        jobs_svc.jobs.run_once()
    [bad] = jobs_svc.handle([{"job": job, "cancel": "maybe"}])
    assert bad.status == 400 and "option 'cancel' must be true or false" in json.loads(bad.body)["message"]
    [kept] = jobs_svc.handle([{"job": job, "cancel": "false"}])  # a poll
    assert kept.status == 202 and "cancel" not in json.loads(kept.body)
    [asked] = jobs_svc.handle([{"job": job, "cancel": "true"}])
    assert asked.status == 202 and json.loads(asked.body)["cancel"] == "requested" and asked.modes == ("job",)
    assert jobs_svc.jobs.run_once() and not jobs_svc.jobs.run_once()  # one unit ended it
    [done] = jobs_svc.handle([{"job": job}])
    entries = json.loads(done.body)["actmax"]
    assert done.status == 200 and [(e["steps"], e["stopped_early"]) for e in entries] == [(3, True)] * 2
    assert all(e["end"] != e["start"] for e in entries) and entries[0]["image"]


def test_a_job_keeps_format_png_and_the_fast_modes_of_its_request(jobs_svc):
    [png] = jobs_svc.handle([{"mode": "actmax", "channel": "1", "steps": "2", "format": "png"}])
    [inv] = jobs_svc.handle([{"data": png_of_shape(), "mode": "invert", "layer": "features.3", "steps": "4"}])
    assert png.status == inv.status == 202
    finish_jobs(jobs_svc)
    [a] = jobs_svc.handle([{"job": json.loads(png.body)["job"]}])
    assert a.status == 200 and a.content_type == "image/png" and a.body.startswith(PNG)
    [b] = jobs_svc.handle([{"job": bytearray(json.loads(inv.body)["job"].encode())}])  # a form field is bytes
    out = json.loads(b.body)
    assert b.status == 200 and len(out["predictions"]) == 5 and out["invert"]["steps"] == 4


def test_fast_modes_are_answered_beside_a_running_job(jobs_svc):
    [accepted] = jobs_svc.handle([{"mode": "actmax", "channel": "0", "steps": "50"}])
    jobs_svc.jobs.run_once()
    jobs_svc.jobs.run_once()
    [fast] = jobs_svc.handle([{"data": png_of_shape(), "mode": "classify,gradcam"}])
    assert fast.status == 200 and json.loads(fast.body)["gradcam"]["layer"]
    model = jobs_svc.model
    assert all(not m._forward_hooks for m in model.modules())  # the job's hooks are on its own copy
    [progress] = jobs_svc.handle([{"job": json.loads(accepted.body)["job"]}])
    state = json.loads(progress.body)
    assert progress.status == 202 and state["state"] == "running" and state["step"] >= 1
    assert "preview" in state and state["running"] == "actmax" and len(state["objective"]) == 1
    finish_jobs(jobs_svc)


def test_a_full_queue_is_429_with_a_retry_time(jobs_svc):
    many = [{"mode": "actmax", "channel": "0", "steps": "2"}] * jobs_svc.jobs.limits.max_queued  # none taken yet
    ids = [json.loads(r.body)["job"] for r in jobs_svc.handle(many)]
    [busy] = jobs_svc.handle([{"mode": "actmax", "channel": "0", "steps": "2"}])
    assert busy.status == 429 and busy.phrase == "Too Many Requests"
    out = json.loads(busy.body)
    assert out["type"] == "TooManyJobs" and out["retry_after_s"] >= 1 and "max_queued" in out["message"]
    assert dict(busy.headers)["Retry-After"] == str(round(out["retry_after_s"]))
    finish_jobs(jobs_svc)
    assert all(r.status == 200 for r in jobs_svc.handle([{"job": i} for i in ids]))


def test_an_optimization_far_over_the_budget_is_refused_with_the_estimate(jobs_svc):
    fields = {"mode": "actmax", "layer": "features.3", "channel": "0-23", "size": "512", "steps": "2048"}
    [refused] = jobs_svc.handle([fields])
    out = json.loads(refused.body)
    assert refused.status == 422 and out["type"] == "OverBudget", out
    assert out["estimate_s"] > 3 * 90 and out["limit_s"] == 270 and out["budget_s"] == 90
    assert "fewer steps" in out["message"] and "max_busy_seconds" in out["message"]
    fit = dict(fields, steps=str(max(1, out["max_steps"])), size="256")
    [accepted] = jobs_svc.handle([fit])
    assert accepted.status == 202 and json.loads(accepted.body)["estimate_s"] <= 270
    job = json.loads(accepted.body)["job"]
    [cancel] = jobs_svc.handle([{"job": job, "cancel": "true"}])  # not run here: too long for a test
    assert cancel.status == 202
    finish_jobs(jobs_svc)
    [gone] = jobs_svc.handle([{"job": job}])  # cancelled before a step: its set-up's images, or nothing at all
    out = json.loads(gone.body)
    assert (gone.status == 409 and out["type"] == "Cancelled") or (
        gone.status == 200 and all(e["steps"] == 0 and e["stopped_early"] for e in out["actmax"])
    ), out


def test_a_job_where_not_one_step_fits_the_budget_is_refused(jobs_svc):
    cost = jobs_svc.cost.calibrate()
    fields = {"mode": "actmax", "layer": "features.3", "channel": "0-23", "size": "512", "steps": "1"}
    req = parse_request(fields, jobs_svc.served)
    one = jobs_svc.cost.optimization_estimate(req)["estimate_s"]
    tight = VizService(jobs_svc.model, jobs_svc.spec, device=torch.device("cpu"), name="shapes_viz",
                       limits=Limits(max_busy_seconds=max(1, int(one / 2))), jobs=jobs_svc.jobs)  # fmt: skip
    tight.cost.calibration = cost
    if one / 2 < 1:
        pytest.skip(f"one step of 24 images at 512 px takes {one} s here: below any whole-second budget")
    [refused] = tight.handle([fields])
    out = json.loads(refused.body)
    assert refused.status == 422 and out["max_steps"] == 0 and "not even one step fits" in out["message"]


def test_the_estimate_is_within_a_factor_of_the_measured_time(jobs_svc):
    cases = [
        # one copy a step, as calibrated: with copies the estimate counts each as a pass of its own, which on this
        # tiny model under load overestimated up to 6x (a batch of 6 costs about what 1 does here): known, left
        {"mode": "actmax", "channel": "0-5", "steps": "24", "copies": "1"},
        {"mode": "actmax", "layer": "features.3", "channel": "0-3", "size": "128", "steps": "12", "copies": "1"},
    ]
    jobs_svc.cost.calibration, jobs_svc.cost.scale = (
        None,
        1.0,
    )  # calibrated again now, in the machine's present state (shared)
    for fields in cases:
        req = parse_request(fields, jobs_svc.served)
        estimate = jobs_svc.cost.optimization_estimate(req)["exact_s"]  # estimate_s: rounded to 0.1 s
        runs = []
        for _ in range(3):  # the first run of a new batch shape also builds oneDNN's kernels: not counted
            t0 = time.perf_counter()
            [reply] = jobs_svc.handle([fields])
            finish_jobs(jobs_svc)
            [done] = jobs_svc.handle([{"job": json.loads(reply.body)["job"]}])
            runs.append(time.perf_counter() - t0)
            assert done.status == 200
        measured = min(runs[1:])  # other work on a shared machine only ever slows a run down
        assert measured / 3 <= max(estimate, 0.05) <= measured * 3, (
            fields,
            estimate,
            measured,
            jobs_svc.cost.calibration,
        )


def test_a_calibration_taken_under_load_is_corrected_by_the_next_job(jobs_svc):
    fields = {"mode": "actmax", "channel": "0-5", "steps": "24", "copies": "1"}
    req = parse_request(fields, jobs_svc.served)
    jobs_svc.cost.calibrate()
    good = dict(jobs_svc.cost.calibration)
    jobs_svc.cost.calibration, jobs_svc.cost.scale = (
        {k: v * 10 for k, v in good.items()},
        1.0,
    )  # as if calibrated while busy
    try:
        wrong = jobs_svc.cost.optimization_estimate(req)["exact_s"]
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            [accepted] = jobs_svc.handle([fields])
            finish_jobs(jobs_svc)
            runs.append(time.perf_counter() - t0)
            assert accepted.status == 202
        learned = jobs_svc.cost.optimization_estimate(req)["exact_s"]
        assert 0.05 <= jobs_svc.cost.scale < 0.5, jobs_svc.cost.scale  # about 1/10 of the calibration it was given
        assert learned < wrong / 3 and min(runs) / 3 <= learned <= min(runs) * 3, (wrong, learned, runs)
        jobs_svc.cost.learn({"first_step_s": 1.0, "scale": 1.0}, [1e-9] * 4)
        assert jobs_svc.cost.scale == 0.05  # bounded: one odd job cannot make estimates 0
        jobs_svc.cost.learn({"first_step_s": 1.0, "scale": 1.0}, [5.0] * 3)
        assert jobs_svc.cost.scale == 0.05  # under 4 steps: nothing learned
    finally:
        jobs_svc.cost.calibration, jobs_svc.cost.scale = good, 1.0
