"""A result that stopped early says so where the clients show it: the class gallery and viz_client's summary."""

from __future__ import annotations

import base64
from argparse import Namespace

from PIL import Image

from clients import gallery, viz_client
from tests.images import encode

PNG_B64 = base64.b64encode(encode(Image.new("RGB", (4, 4)), "PNG")).decode()


def answer() -> dict:
    entry = {"layer": "classes", "label": "circle", "channel": 0, "start": -3.0, "end": -0.2, "steps": 64,
             "seconds": 2.0, "stopped_early": False, "image": PNG_B64}  # fmt: skip
    early = dict(entry, label="cross", channel=3, steps=17, seconds=3.0, stopped_early=True)
    return {"model": "shapes_viz", "arch": "shapes", "weights": "w", "device": "cpu", "actmax": [entry, early]}


def test_the_class_gallery_marks_a_result_that_stopped_early(tmp_path, monkeypatch):
    monkeypatch.setattr(gallery, "call", lambda args, fields: answer())
    page = gallery.optimized(Namespace(channel="0,3", steps=64), tmp_path, None)
    assert page.count('<span class="early">stopped early after 17 steps (budget ran out)</span>') == 1
    assert "(1 of 2 stopped early" in page and page.count("<img") == 2


def test_the_client_prints_a_result_that_stopped_early_as_such(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(viz_client, "call", lambda *a, **k: answer())
    viz_client.call_and_save(Namespace(poll=1.0, out=str(tmp_path)), {"mode": "actmax"}, None)
    out = capsys.readouterr().out
    assert "_circle.png  (after 64 steps, 2.0 s)" in out
    assert "_cross.png  (STOPPED EARLY after 17 steps (budget ran out), 3.0 s)" in out


class FakeResponse:
    def __init__(self, status, body):
        self.status_code, self.body = status, body

    def json(self):
        return self.body


def test_ctrl_c_cancels_the_job_and_saves_what_it_made(tmp_path, monkeypatch, capsys):
    """The first Ctrl-C while a job runs sends field cancel with its ID, then polls on to the answer, whose early
    results are marked as cancelled (not as a budget that ran out)."""
    sent = []
    running = {"job": "J" * 22, "state": "running", "step": 5, "steps": 64, "mode": "actmax", "elapsed_s": 1.0,
               "budget": {"compute_s": 90}}  # fmt: skip
    cancelling = dict(running, cancel="requested")
    replies = iter([FakeResponse(202, running), KeyboardInterrupt(), FakeResponse(202, cancelling),
                    FakeResponse(200, answer())])  # fmt: skip

    def post(url, data=None, files=None, headers=None, timeout=None):
        sent.append(dict(data))
        reply = next(replies)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    monkeypatch.setattr(viz_client.requests, "post", post)
    monkeypatch.setattr(viz_client, "auth", lambda args: {})
    monkeypatch.setattr(viz_client.time, "sleep", lambda s: None)
    args = Namespace(poll=1.0, out=str(tmp_path), url="http://127.0.0.1:1", model="shapes_viz")
    viz_client.call_and_save(args, {"mode": "actmax", "channel": "0,3"}, None)
    assert sent == [{"mode": "actmax", "channel": "0,3"}, {"job": "J" * 22}, {"job": "J" * 22, "cancel": "true"},
                    {"job": "J" * 22}]  # fmt: skip
    out = capsys.readouterr().out
    assert "cancelling job JJJ" in out and "_cross.png  (STOPPED EARLY after 17 steps (cancelled), 3.0 s)" in out
