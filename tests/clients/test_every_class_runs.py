"""clients/every_class.py without a server: its batches, manifest and resumption against a fake model endpoint."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
import requests
from PIL import Image

from clients import every_class
from clients.every_class import EveryClass, Manifest, Progress, channel_list, parser
from tests.images import encode

PNG = encode(Image.new("RGB", (4, 4), (200, 30, 30)), "PNG")
PNG_B64 = base64.b64encode(PNG).decode()


def reply(status: int, body: dict, headers: dict | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code, r._content = status, json.dumps(body).encode()
    r.headers.update(headers or {})
    return r


def classes_of(spec: str) -> list[int]:
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


class FakeModel:
    """A model endpoint with ``n`` classes: a job answers 202 (a progress state) at its first poll and its answer at
    the next one. ``early``:
    classes whose results stopped early; ``most``: the most targets a job takes before 422; ``busy``: how many
    submissions are answered 429 first; ``lose``: how many jobs are lost (410) at their first poll."""

    def __init__(self, n=6, early=(), most=64, busy=0, lose=0, estimate=1.0) -> None:
        self.n, self.early, self.most, self.busy, self.lose, self.estimate = n, set(early), most, busy, lose, estimate
        self.jobs: dict[str, list[int]] = {}
        self.polls: dict[str, int] = {}  # polls of each job so far
        self.submitted: list[dict] = []  # every submission's fields, refused ones too
        self.interrupt_at_poll = None  # a job ID whose poll raises KeyboardInterrupt (Ctrl-C while it runs)
        self.unreachable = 0  # submissions that raise ConnectionError first

    def describe(self) -> dict:
        return {"model": "fake_viz", "arch": "fake", "weights": "w1", "describe": {"num_classes": self.n}}

    def submit(self, fields: dict) -> requests.Response:
        if self.unreachable:
            self.unreachable -= 1
            raise requests.ConnectionError("refused")
        self.submitted.append(fields)
        classes = classes_of(fields["channel"])
        if len(classes) > self.most:
            return reply(422, {"code": 422, "type": "OverBudget", "message": "too much", "max_steps": 3})
        if self.busy:
            self.busy -= 1
            return reply(429, {"code": 429, "type": "TooManyJobs", "retry_after_s": 6.6}, {"Retry-After": "7"})
        job = f"job{len(self.jobs)}"
        self.jobs[job] = classes
        return reply(202, {"job": job, "state": "queued", "estimate_s": self.estimate * len(classes),
                           "budget": {"compute_s": 4.0, "wall_s": 300}})  # fmt: skip

    def poll(self, job: str) -> requests.Response:
        if job == self.interrupt_at_poll:
            self.interrupt_at_poll = None
            raise KeyboardInterrupt
        if job not in self.jobs:
            return reply(404, {"code": 404, "type": "UnknownJob", "message": "no such job"})
        if self.lose:
            self.lose -= 1
            del self.jobs[job]
            return reply(410, {"code": 410, "type": "JobLost", "message": "lost"})
        self.polls[job] = self.polls.get(job, 0) + 1
        if self.polls[job] == 1:
            return reply(202, {"job": job, "step": 1, "steps": 2, "state": "running", "host": "h", "pid": 7})
        entries = [{"layer": "classes", "channel": c, "label": f"class {c}", "start": -5.0, "end": -0.5 + c / 100,
                    "steps": 6 if c in self.early else 8, "seconds": 0.25, "stopped_early": c in self.early,
                    "image": PNG_B64} for c in self.jobs[job]]  # fmt: skip
        return reply(200, {"model": "fake_viz", "actmax": entries})

    def sizes(self) -> list[int]:
        return [len(classes_of(f["channel"])) for f in self.submitted]


def run(model: FakeModel, out, *argv: str, extra: dict | None = None) -> tuple[int, list[float], str]:
    """One run of the command; its exit code, the sleeps it asked for, and what it wrote on stderr."""
    args = parser().parse_args(["--out", str(out), "--steps", "8", *argv])
    slept: list[float] = []
    stream = io.StringIO()
    code = EveryClass(args, model, extra, stream=stream, sleep=slept.append, pace=lambda: None).run()
    return code, slept, stream.getvalue()


def manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_channel_list_writes_runs_as_ranges():
    assert channel_list([0, 1, 2, 3, 5, 7, 8]) == "0-3,5,7-8"
    assert channel_list([4]) == "4" and classes_of(channel_list([0, 2, 3, 9])) == [0, 2, 3, 9]


def test_every_class_is_saved_with_its_entry_and_shown_in_the_gallery(tmp_path, capsys):
    model = FakeModel(n=10)
    assert run(model, tmp_path, "--batch", "4", extra={"size": "32"})[0] == 0
    assert model.sizes() == [4, 4, 2]
    assert all(f["mode"] == "actmax" and f["steps"] == "8" and f["size"] == "32" for f in model.submitted)
    m = manifest(tmp_path)
    assert m["settings"] == {"model": "fake_viz", "arch": "fake", "weights": "w1", "num_classes": 10, "steps": 8,
                             "size": "32"}  # fmt: skip
    assert [e["class"] for e in m["classes"]] == list(range(10)) and m["done"] == 10 and m["pending"] == []
    first = m["classes"][0]
    assert first == {"class": 0, "label": "class 0", "start": -5.0, "end": -0.5, "steps": 8, "seconds": 0.25,
                     "stopped_early": False, "file": "000_class_0.png", "job": "job0", "batch_size": 4,
                     "worker": "h:7"}  # fmt: skip
    for e in m["classes"]:
        with Image.open(tmp_path / e["file"]) as picture:
            assert picture.size == (4, 4)
    page = (tmp_path / "index.html").read_text()
    assert page.count("<img") == 10 and "stopped early" not in page
    assert m["runs"][0]["ended"] == "done" and m["runs"][0]["classes"] == 10 and m["runs"][0]["batches"] == 3
    assert "10/10 classes of fake_viz" in capsys.readouterr().out


def test_a_run_stopped_after_a_batch_is_resumed_without_redoing_it(tmp_path, capsys):
    model = FakeModel(n=6)
    assert run(model, tmp_path, "--batch", "4", "--max-batches", "1")[0] == 0
    first = manifest(tmp_path)
    assert [e["class"] for e in first["classes"]] == [0, 1, 2, 3] and (tmp_path / "index.html").exists()
    assert "2 classes to go" in capsys.readouterr().out
    assert run(model, tmp_path, "--batch", "4")[0] == 0
    assert [f["channel"] for f in model.submitted] == ["0-3", "4-5"]  # the first batch was not submitted again
    second = manifest(tmp_path)
    assert second["classes"][:4] == first["classes"] and {e["job"] for e in second["classes"][4:]} == {"job1"}
    assert [r["classes"] for r in second["runs"]] == [4, 2]
    assert run(model, tmp_path, "--batch", "4")[0] == 0 and len(model.submitted) == 2  # nothing left: no job
    assert "nothing left to do" in capsys.readouterr().out


def test_after_ctrl_c_the_job_in_flight_is_followed_not_submitted_again(tmp_path, capsys):
    model = FakeModel(n=6)
    model.interrupt_at_poll = "job1"
    assert run(model, tmp_path, "--batch", "3")[0] == 130
    m = manifest(tmp_path)
    assert [p["job"] for p in m["pending"]] == ["job1"] and m["pending"][0]["classes"] == [3, 4, 5]
    assert m["done"] == 3
    assert m["runs"][0]["ended"] == "interrupted" and "job job1 is left to finish" in capsys.readouterr().out
    assert run(model, tmp_path, "--batch", "3")[0] == 0
    assert len(model.submitted) == 2  # job1 was polled to its answer, not submitted again
    m = manifest(tmp_path)
    assert m["done"] == 6 and m["pending"] == [] and {e["job"] for e in m["classes"][3:]} == {"job1"}


@pytest.mark.parametrize("how", ["lost", "expired"])
def test_a_lost_or_expired_job_is_submitted_again(tmp_path, how):
    model = FakeModel(n=4)
    if how == "lost":
        model.lose = 1  # 410 JobLost at its first poll
    else:
        model.interrupt_at_poll = "job0"
        assert run(model, tmp_path, "--batch", "4")[0] == 130
        model.jobs.clear()  # the server forgot it (a restart before it ended, or its answer expired): 404
    assert run(model, tmp_path, "--batch", "4")[0] == 0
    assert [f["channel"] for f in model.submitted] == ["0-3", "0-3"]
    assert manifest(tmp_path)["done"] == 4


def test_other_settings_are_refused_and_fresh_starts_over(tmp_path):
    model = FakeModel(n=4)
    run(model, tmp_path, "--batch", "2", "--max-batches", "1")
    with pytest.raises(SystemExit, match=r"other settings \(steps 8 -> 16; size \(default\) -> 64\).*--fresh"):
        run(model, tmp_path, "--steps", "16", extra={"size": "64"})
    model.n = 5  # another model behind the same name
    with pytest.raises(SystemExit, match=r"num_classes 4 -> 5"):
        run(model, tmp_path)
    assert (tmp_path / "000_class_0.png").exists() and manifest(tmp_path)["done"] == 2  # left as they were
    assert run(model, tmp_path, "--steps", "16", "--fresh", "--max-batches", "1", "--batch", "1")[0] == 0
    m = manifest(tmp_path)
    assert m["settings"]["steps"] == 16 and m["done"] == 1 and len(m["runs"]) == 1
    assert not (tmp_path / "001_class_1.png").exists()  # the old pictures went with the old manifest


def test_over_budget_halves_the_batch_and_one_class_over_it_stops_with_advice(tmp_path):
    model = FakeModel(n=6, most=2)
    assert run(model, tmp_path, "--batch", "6")[0] == 0
    assert model.sizes() == [6, 3, 1, 1, 1, 1, 1, 1]  # 6 and 3 refused (422), then batches that fit
    assert manifest(tmp_path)["done"] == 6
    with pytest.raises(SystemExit, match="not even one class fits"):
        run(FakeModel(n=2, most=0), tmp_path / "none")
    assert not (tmp_path / "none" / "manifest.json").exists()  # a refused start leaves no manifest to mismatch


def test_a_busy_server_is_waited_for_as_retry_after_says(tmp_path):
    model = FakeModel(n=2, busy=2)
    code, slept, _ = run(model, tmp_path, "--batch", "2")
    assert code == 0 and slept == [7.0, 7.0] and len(model.jobs) == 1


def test_an_unreachable_server_is_tried_again_then_given_up_with_the_way_on(tmp_path):
    model = FakeModel(n=2)
    model.unreachable = 2
    code, slept, _ = run(model, tmp_path)
    assert code == 0 and slept == [5, 5]
    model = FakeModel(n=2)
    model.unreachable = 1000
    with pytest.raises(SystemExit, match="run the same command again"):
        run(model, tmp_path / "down", "--wait", "0")


def test_stopped_early_results_are_marked_make_batches_smaller_and_can_be_redone(tmp_path, capsys):
    model = FakeModel(n=8, early={1, 2})
    code, _, err = run(model, tmp_path, "--batch", "4")
    assert code == 0 and model.sizes() == [4, 2, 2]  # sized from the 6 of 8 steps the first batch managed
    assert "2 of 4 classes stopped early after 6 of 8 steps (their job's budget ran out; marked): batches of 2" in err
    m = manifest(tmp_path)
    assert m["stopped_early"] == 2 and [e["stopped_early"] for e in m["classes"][:3]] == [False, True, True]
    page = (tmp_path / "index.html").read_text()
    assert page.count('class="early"') == 2 and "2 stopped early (their job" in page
    assert re.search(r"1 class 1 \(-0\.49\)<br><span class=\"early\">stopped early after 6 steps ", page)
    assert "2 classes stopped early" in capsys.readouterr().out
    model.early = set()
    assert run(model, tmp_path, "--batch", "4", "--redo-early")[0] == 0
    assert model.submitted[-1]["channel"] == "1-2"
    m = manifest(tmp_path)
    assert m["stopped_early"] == 0 and m["done"] == 8 and "stopped early" not in (tmp_path / "index.html").read_text()


def test_a_batch_estimated_over_the_budget_makes_the_next_ones_fit(tmp_path):
    model = FakeModel(n=8, estimate=2.0)  # 2 s a class against a 4 s budget: 2 classes a job fit
    code, _, err = run(model, tmp_path, "--batch", "4")
    assert code == 0 and model.sizes() == [4, 2, 2] and "estimated at 8 s of compute, over the job budget of 4 s" in err


def test_the_batch_size_reached_is_where_the_run_that_goes_on_starts(tmp_path):
    model = FakeModel(n=8, estimate=2.0)
    assert run(model, tmp_path, "--batch", "4", "--max-batches", "1")[0] == 0
    assert manifest(tmp_path)["batch"] == 2
    code, _, err = run(model, tmp_path, "--max-batches", "1")  # no --batch: the size reached
    assert code == 0 and "batches of 2, as the last run reached" in err
    assert run(model, tmp_path, "--batch", "1")[0] == 0  # --batch sets another
    assert model.sizes() == [4, 2, 1, 1] and manifest(tmp_path)["batch"] == 1


def test_reserved_fields_are_refused_on_the_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        every_class.main(["--out", str(tmp_path), "-o", "layer=features.0"])
    assert "-o layer: set by this command" in capsys.readouterr().err


def test_the_progress_line_counts_classes_and_projects_from_measured_time():
    now = [0.0]
    progress = Progress(total=100, done=40, to_do=60, stream=io.StringIO(), clock=lambda: now[0])
    assert progress.line().endswith("40/100 classes  0s elapsed, ETA ?")
    now[0] = 30.0
    progress.step(10, {"step": 50, "steps": 100})  # half of a batch of 10: 5 classes' worth in 30 s
    assert "40/100 classes  batch of 10: step 50/100  30s elapsed, ETA 5m30s" in progress.line()
    now[0] = 60.0
    progress.add(10)
    assert progress.line().endswith("50/100 classes  1m00s elapsed, ETA 5m00s")


def test_a_manifest_entry_names_its_picture_by_index_and_label(tmp_path):
    m = Manifest(tmp_path, {"num_classes": 1000})
    e = m.record({"channel": 7, "label": "yellow lady's slipper", "start": 0, "end": 1, "steps": 2, "seconds": 3,
                  "stopped_early": 0, "image": PNG_B64}, "j", 1)  # fmt: skip
    assert e["file"] == "007_yellow_lady_s_slipper.png" and e["stopped_early"] is False
    assert (tmp_path / e["file"]).read_bytes() == PNG


def test_several_jobs_in_flight_are_polled_in_turn_and_a_429_holds_submissions_without_a_sleep(tmp_path):
    model = FakeModel(n=10)
    flying = []
    submit = model.submit

    def counted_submit(fields):
        r = submit(fields)
        flying.append(len(model.jobs) - sum(1 for j in model.jobs if model.polls.get(j, 0) >= 2))
        return r

    model.submit = counted_submit
    code, slept, err = run(model, tmp_path, "--batch", "2", "--jobs", "3")
    assert code == 0 and slept == [] and model.sizes() == [2, 2, 2, 2, 2]
    assert max(flying) == 3  # three jobs in flight at once, never more
    m = manifest(tmp_path)
    assert m["done"] == 10 and m["pending"] == [] and len({e["job"] for e in m["classes"]}) == 5

    model = FakeModel(n=6)
    calls = []

    def busy_second(fields):
        calls.append(fields["channel"])
        if len(calls) == 2:  # the second submission, while the first job is in flight
            return reply(429, {"code": 429, "type": "TooManyJobs"}, {"Retry-After": "7"})
        return FakeModel.submit(model, fields)

    model.submit = busy_second
    now = [0.0]
    args = parser().parse_args(["--out", str(tmp_path / "busy"), "--steps", "8", "--batch", "2", "--jobs", "2"])

    def pace():
        now[0] += 1.0

    slept: list[float] = []
    code = EveryClass(args, model, stream=io.StringIO(), clock=lambda: now[0], sleep=slept.append, pace=pace).run()
    # the first job was followed while submissions waited (it ended after 2 s: the rest of the 7 s was slept)
    assert code == 0 and slept == [5.0]
    assert calls == ["0-1", "2-3", "2-3", "4-5"] and manifest(tmp_path / "busy")["done"] == 6


def test_a_manifest_of_one_job_at_a_time_is_followed(tmp_path):
    model = FakeModel(n=4)
    model.interrupt_at_poll = "job0"
    assert run(model, tmp_path, "--batch", "4")[0] == 130
    m = manifest(tmp_path)
    m["pending"] = m["pending"][0]  # as the client wrote it before several jobs could be in flight
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert run(model, tmp_path, "--batch", "4")[0] == 0 and len(model.submitted) == 1
    assert manifest(tmp_path)["done"] == 4


def test_the_progress_line_sums_the_jobs_in_flight():
    progress = Progress(total=100, done=0, to_do=100, stream=io.StringIO(), clock=lambda: 0.0)
    progress.step(10, {"step": 50, "steps": 100}, "a")
    progress.step(10, {"step": 25, "steps": 100}, "b")
    assert "2 jobs: steps 50/100, 25/100" in progress.line() and progress.partial == 7.5
    progress.add(10, "a")
    assert progress.partial == 2.5 and "batch of 10: step 25/100" in progress.line()
    progress.drop("b")
    assert progress.partial == 0 and progress.line().startswith("[") and "batch" not in progress.line()


class Replicas:
    """``requests.post`` of every_class, answered by fake servers at ``urls``: each knows the jobs of its store
    (``stores``: URL -> a dict shared by the URLs that share one); ``down``: URLs that cannot be reached."""

    def __init__(self, urls, stores, keys=None):
        self.stores, self.keys, self.down, self.calls = stores, keys or {}, set(), []
        self.urls = urls

    def post(self, url, data=None, headers=None, timeout=None, files=None):
        base = url.rsplit("/predictions/", 1)[0]
        self.calls.append((base, dict(data), headers.get("Authorization")))
        if base in self.down:
            raise requests.ConnectionError(f"{base} refused")
        if base in self.keys and headers.get("Authorization") != f"Bearer {self.keys[base]}":
            return reply(400, {"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed"})
        jobs = self.stores[base]
        if data.get("mode") == "describe":
            return reply(200, {"model": "fake_viz", "arch": "fake", "weights": "w1", "describe": {"num_classes": 2}})
        if "job" in data:
            if data["job"] not in jobs:
                return reply(404, {"code": 404, "type": "UnknownJob", "message": "no such job"})
            entries = [{"layer": "classes", "channel": c, "label": f"c{c}", "start": 0, "end": 1, "steps": 8,
                        "seconds": 0.1, "stopped_early": False, "image": PNG_B64}
                       for c in jobs[data["job"]]]  # fmt: skip
            return reply(200, {"actmax": entries})
        job = f"job{sum(len(s) for s in {id(s): s for s in self.stores.values()}.values())}"
        jobs[job] = classes_of(data["channel"])
        return reply(202, {"job": job, "state": "queued", "budget": {"compute_s": 90}})


def replicas_run(monkeypatch, fake, out, *argv):
    monkeypatch.setattr(every_class.requests, "post", fake.post)
    monkeypatch.delenv("VIZ_TOKEN", raising=False)
    args = parser().parse_args(["--out", str(out), "--steps", "8", "--model", "fake_viz", *argv])
    every_class.servers(parser(), args)
    return EveryClass(args, every_class.Remote(args), stream=io.StringIO(), sleep=lambda s: None,
                      pace=lambda: None).run()  # fmt: skip


def test_servers_take_submissions_and_polls_in_turn_each_with_its_own_key(tmp_path, monkeypatch):
    shared: dict = {}
    fake = Replicas(["http://a:1", "http://b:2"], {"http://a:1": shared, "http://b:2": shared},
                    keys={"http://a:1": "ka", "http://b:2": "kb"})  # fmt: skip
    assert replicas_run(monkeypatch, fake, tmp_path, "--servers", "http://a:1,http://b:2/", "--token", "ka,kb",
                        "--batch", "1") == 0  # fmt: skip
    assert manifest(tmp_path)["done"] == 2
    work = [(base, d) for base, d, _ in fake.calls if d.get("mode") != "describe"]
    assert {base for base, d in work if "channel" in d} == {"http://a:1", "http://b:2"}  # submissions in turn
    assert {base for base, d in work if "job" in d} == {"http://a:1", "http://b:2"}  # polls in turn
    assert all(auth == f"Bearer k{base[7]}" for base, _, auth in fake.calls)  # each server its own key

    fake.down, fake.calls = {"http://a:1"}, []  # one replica gone: the other answers everything
    assert replicas_run(monkeypatch, fake, tmp_path / "one", "--servers", "http://a:1,http://b:2", "--token",
                        "ka,kb", "--batch", "1", "--wait", "0") == 0  # fmt: skip
    assert manifest(tmp_path / "one")["done"] == 2
    assert {base for base, d, _ in fake.calls if "job" in d and base not in fake.down} == {"http://b:2"}

    fake.stores["http://b:2"] = {}  # now also another model's server: refused before any job
    other = {"model": "other", "arch": "x", "weights": "w", "describe": {"num_classes": 2}}
    monkeypatch.setattr(
        fake, "post", lambda url, **kw: reply(200, other) if "b:2" in url else Replicas.post(fake, url, **kw)
    )
    fake.down = set()
    refused = (r"http://b:2 serves other \(x, weights w, 2 classes\), http://a:1 serves fake_viz \(fake, weights w1, "
               r"2 classes\): --servers must be replicas")  # fmt: skip
    with pytest.raises(SystemExit, match=refused):
        replicas_run(monkeypatch, fake, tmp_path / "two", "--servers", "http://a:1,http://b:2", "--token", "ka,kb")


def test_servers_that_do_not_share_a_store_are_told_apart(tmp_path, monkeypatch):
    fake = Replicas(["http://a:1", "http://b:2"], {"http://a:1": {}, "http://b:2": {}})
    with pytest.raises(SystemExit, match=r"http://b:2 does not know job job0, which http://a:1 took: .*share one job "
                                         r"store \(VIZ_JOB_STORE"):  # fmt: skip
        replicas_run(monkeypatch, fake, tmp_path, "--servers", "http://a:1,http://b:2", "--token", "k", "--batch", "2")
    assert manifest(tmp_path)["pending"][0]["job"] == "job0"  # left to follow once the servers are set right


def test_servers_option_errors(tmp_path, capsys):
    for argv, message in (
        (["--url", "http://a:1", "--servers", "http://b:2"], "--url or --servers, not both"),
        (["--servers", "http://a:1,ftp://b"], "--servers takes distinct http(s) URLs"),
        (["--servers", "http://a:1,http://a:1"], "--servers takes distinct http(s) URLs"),
        (["--servers", "http://a:1,http://b:2", "--token", "x,y,z"], "3 tokens for 2 servers"),
        (["--jobs", "0"], "--jobs takes 1 to 64"),
    ):
        with pytest.raises(SystemExit):
            every_class.main(["--out", str(tmp_path), *argv])
        assert message in capsys.readouterr().err


def test_a_poll_answered_507_or_503_is_polled_again_and_a_503_submission_waited_for(tmp_path):
    model = FakeModel(n=2)
    poll, submit = model.poll, model.submit
    answers = iter([507, 503])  # TorchServe's "Worker died.", then the store unreachable

    def flaky_poll(job):
        code = next(answers, None)
        return reply(code, {"code": code, "message": "Worker died."}) if code else poll(job)

    down = iter([503])

    def flaky_submit(fields):
        code = next(down, None)
        return reply(503, {"code": 503, "type": "StoreDown"}, {"Retry-After": "5"}) if code else submit(fields)

    model.poll, model.submit = flaky_poll, flaky_submit
    code, slept, err = run(model, tmp_path, "--batch", "2")
    assert code == 0 and slept == [5.0] and manifest(tmp_path)["done"] == 2
    assert "cannot take jobs now (503): waiting 5 s" in err

    model = FakeModel(n=2)
    model.poll = lambda job: reply(507, {"code": 507, "type": "InternalServerException", "message": "Worker died."})
    now = [0.0]
    args = parser().parse_args(["--out", str(tmp_path / "dead"), "--steps", "8", "--wait", "30"])

    def pace():
        now[0] += 10.0

    with pytest.raises(SystemExit, match=r"job job0: HTTP 507: Worker died. for 30 s; run the same command again"):
        EveryClass(args, model, stream=io.StringIO(), clock=lambda: now[0], pace=pace).run()
    assert manifest(tmp_path / "dead")["pending"][0]["job"] == "job0"  # followed when run again


def test_a_poll_answered_507_by_one_server_is_asked_of_the_next(tmp_path, monkeypatch):
    shared: dict = {}
    fake = Replicas(["http://a:1", "http://b:2"], {"http://a:1": shared, "http://b:2": shared})
    post = fake.post

    def dead_a(url, **kw):
        if url.startswith("http://a:1") and "job" in (kw.get("data") or {}):
            fake.calls.append(("http://a:1", dict(kw["data"]), None))
            return reply(507, {"code": 507, "message": "Worker died."})
        return post(url, **kw)

    fake.post = dead_a
    assert replicas_run(monkeypatch, fake, tmp_path, "--servers", "http://a:1,http://b:2", "--token", "k",
                        "--batch", "1") == 0  # fmt: skip
    polls = [(base, d["job"]) for base, d, _ in fake.calls if "job" in d]
    [(_, job)] = [p for p in polls if p[0] == "http://a:1"]
    assert polls[polls.index(("http://a:1", job)) + 1] == ("http://b:2", job)  # asked of the next one at once
    assert manifest(tmp_path)["done"] == 2
