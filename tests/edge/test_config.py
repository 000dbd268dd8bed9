"""The server configuration (vizserve.config): sections, types, and unknown keys refused by name."""

import json

import pytest

from vizserve import ConfigError, JobSettings, Limits, Reply, ServerConfig
from vizserve.reply import json_size
from vizserve.video import VideoLimits


def test_sections_are_read_with_their_types_and_the_rest_keeps_its_defaults():
    cfg = {
        "arch": "alexnet",
        "weights": "random",
        "limits": {"max_image_pixels": 1000, "fast_seconds": 2, "max_busy_seconds": 30},
        "jobs": {"max_jobs": 2, "dir": "/srv/jobs"},
        "video": {"max_frames": 8, "max_decode_seconds": 2},
        "spec": {"cam_layer": "features.10", "featuremap_layers": "features.0, features.3"},
    }
    c = ServerConfig.read(cfg, env={})
    assert c.arch == "alexnet" and c.weights == "random" and c.weights_file == "weights.pt"
    assert c.limits == Limits(max_image_pixels=1000, fast_seconds=2.0, max_busy_seconds=30)
    assert isinstance(c.limits.fast_seconds, float)
    assert c.jobs == JobSettings(max_jobs=2, dir="/srv/jobs")
    assert c.video == VideoLimits(max_frames=8, max_decode_seconds=2.0)
    assert c.spec.as_mapping() == {"cam_layer": "features.10", "featuremap_layers": ("features.0", "features.3")}
    assert ServerConfig.read(None, env={}) == ServerConfig()


def test_the_environment_gives_the_job_folder_and_store_unless_the_file_does():
    env = {"VIZ_JOB_DIR": "/tmp/a", "VIZ_JOB_STORE": "redis://127.0.0.1:6379/0"}
    assert ServerConfig.read({}, env=env).jobs == JobSettings(dir="/tmp/a", store="redis://127.0.0.1:6379/0")
    assert ServerConfig.read({"jobs": {"dir": "/srv"}}, env=env).jobs.dir == "/srv"


@pytest.mark.parametrize(
    ("cfg", "said"),
    [
        ({"max_jobs": 3}, "unknown key 'max_jobs'; it belongs to section 'jobs' (jobs.max_jobs)"),
        ({"limits": {"max_jobs": 3}}, "unknown key limits.max_jobs; it belongs to section 'jobs'"),
        ({"limits": {"max_image_pixel": 3}}, "unknown key limits.max_image_pixel; did you mean max_image_pixels"),
        ({"limts": {}}, "unknown key 'limts'; did you mean limits"),
        ({"limits": {"max_input_side": "big"}}, "max_input_side must be a whole number, got 'big'"),
        ({"limits": {"max_input_side": 1.5}}, "max_input_side must be a whole number"),
        ({"limits": {"fast_seconds": True}}, "fast_seconds must be a number"),
        ({"limits": [1, 2]}, "section 'limits' must be a mapping"),
        ({"arch": 3}, "arch must be text"),
        ({"limits": {"max_busy_seconds": 400}}, "cannot exceed jobs.wall_seconds"),
    ],
)
def test_a_wrong_key_or_value_is_refused_by_name(cfg, said):
    with pytest.raises(ConfigError) as info:
        ServerConfig.read(cfg, env={})
    assert said in str(info.value) and "model-config.yaml" in str(info.value)


def test_json_size_is_the_length_of_the_body_without_encoding_it():
    payload = {"model": "x", "n": 3, "f": 0.125, "none": None, "ok": True, "u": "é\"q",
               "items": [{"image": b"\x00" * 7, "raw": b"abc"}, [], {}], "t": (1, 2)}  # fmt: skip
    reply = Reply(200, payload)
    assert reply.size == json_size(payload) == len(reply.body) == len(json.dumps(json.loads(reply.body)))
    assert reply.jsonable()["items"][0]["raw"] == "YWJj"
    assert Reply(200, b'{"a": 1}').jsonable() == {"a": 1}
