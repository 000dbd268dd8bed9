"""clients/viz_keys.py: TorchServe's one answer to every key problem (400 InvalidKeyException) told apart from the
key sent and the key file."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from clients.viz_keys import is_key_refusal, key_problem

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def key_file(tmp_path, expires: str = "2026-01-01T13:00:00.123456789Z"):
    path = tmp_path / "key_file.json"
    path.write_text(json.dumps({"inference": {"key": "inf-1", "expiration time": expires},
                                "management": {"key": "mgmt-1", "expiration time": expires},
                                "API": {"key": "api-1"}}))  # fmt: skip
    return path


def test_only_torchserves_key_refusal_is_one():
    refusal = {"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed."}
    assert is_key_refusal(400, refusal)
    assert not is_key_refusal(400, {"code": 400, "type": "InvalidOption", "message": "Token"})
    assert not is_key_refusal(404, refusal) and not is_key_refusal(400, None) and not is_key_refusal(400, [1])


def test_each_key_problem_is_named_with_the_file(tmp_path):
    path = key_file(tmp_path)
    none = key_problem("", path, now=NOW)
    assert f"no key was sent; the inference key is in {path} (TorchServe writes key_file.json in the folder" in none
    wrong = key_problem("old-key", path, now=NOW)
    assert f"the key sent is not the inference key of {path}" in wrong and "earlier start" in wrong
    live = key_problem("inf-1", path, now=NOW)
    assert "not expired by the file: the server called is probably another TorchServe" in live
    gone = key_problem("inf-1", key_file(tmp_path, "2026-01-01T11:30:00Z"), "inference", "http://h:8081", now=NOW)
    assert f"the inference key of {path} expired at 2026-01-01 11:30:00 UTC (30 min ago;" in gone
    assert "Bearer $api\" 'http://h:8081/token?type=inference'" in gone and "api-1" not in gone
    mgmt = key_problem("mgmt-1", key_file(tmp_path, "2025-12-31T12:00:00Z"), "management", now=NOW)
    assert "the management key of" in mgmt and "/token?type=management" in mgmt
    for text in (none, wrong, live, gone, mgmt):
        assert "inf-1" not in text and "mgmt-1" not in text  # a message never carries a key


def test_a_missing_or_broken_key_file_says_so(tmp_path):
    missing = key_problem("", tmp_path / "key_file.json", now=NOW)
    assert "no key was sent, and the key file" in missing and "is missing" in missing
    (tmp_path / "key_file.json").write_text("{nope")
    assert "is unreadable (JSONDecodeError)" in key_problem("k", tmp_path / "key_file.json", now=NOW)
