"""Health of a running TorchServe (the Docker HEALTHCHECK, through docker/healthcheck.sh). Standard library only.

Healthy when both hold:
1. the inference API answers /ping. With the inference key from key_file.json it says {"status": "Healthy"}; once
   that key has expired (token_expiration_min) or been rotated, TorchServe answers 400 InvalidKeyException, which
   still shows the front end is up. The health check never makes a new inference key: clients hold that one, and a
   new key voids the old at once.
2. every model TorchServe serves has at least one READY worker, by the management API (/ping goes on saying
   "Healthy" while a model's only worker is dead and its replacement loads: it counts every worker not stopped,
   starting ones too, and sums them over all models). When the management
   key has expired, the check makes a new one with the API key (POST /token?type=management, which writes it to
   key_file.json and leaves the inference key alone) and asks again.

Prints one line of JSON (Docker keeps it in the container's health log); exit status 0 when healthy, else 1.
  python3 docker/healthcheck.py [--config FILE] [--keys FILE] [--timeout SECONDS]
Defaults: $VIZ_RUN_DIR/config.properties (the entry point's, VIZ_RUN_DIR default /tmp/viz), and key_file.json in
the repository root (TorchServe writes it in the folder it was started from).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Unhealthy(Exception):
    pass


def address(config: str, key: str, default: str) -> str:
    m = re.search(rf"^\s*{key}\s*=\s*(\S+)", config, re.MULTILINE)
    url = m.group(1) if m else default
    # An API bound to every interface is still asked on loopback.
    return re.sub(r"//(0\.0\.0\.0|\[::\])", "//127.0.0.1", url).rstrip("/")


def call(url: str, key: str, timeout: float, method: str = "GET") -> tuple[int, object]:
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except (OSError, ValueError) as e:
        raise Unhealthy(f"{url}: {e}") from e
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, body.decode(errors="replace")[:200]


def key_rejected(status: int, body: object) -> bool:
    return status == 400 and isinstance(body, dict) and body.get("type") == "InvalidKeyException"


def check(config: str, key_file: Path, timeout: float) -> dict:
    inference = address(config, "inference_address", "http://127.0.0.1:8080")
    management = address(config, "management_address", "http://127.0.0.1:8081")
    try:
        keys = json.loads(key_file.read_text())
    except (OSError, ValueError) as e:
        raise Unhealthy(f"no key file yet ({e})") from e
    report: dict = {}
    problems = []

    status, body = call(f"{inference}/ping", keys["inference"]["key"], timeout)
    if status == 200 and isinstance(body, dict):
        report["ping"] = body.get("status")
    elif key_rejected(status, body):
        report["ping"] = "answering (inference key expired or rotated)"
    else:
        report["ping"] = f"{status}: {body}"
        problems.append("/ping")

    mkey = keys["management"]["key"]
    status, body = call(f"{management}/models", mkey, timeout)
    if key_rejected(status, body):
        status, reply = call(f"{management}/token?type=management", keys["API"]["key"], timeout, method="POST")
        if status != 200:
            raise Unhealthy(f"management key rejected, and a new one was refused: {status} {reply}")
        mkey = json.loads(key_file.read_text())["management"]["key"]
        report["rotated"] = "management"
        status, body = call(f"{management}/models", mkey, timeout)
    if status != 200 or not isinstance(body, dict):
        raise Unhealthy(f"GET /models answered {status}: {body}")
    names = [m["modelName"] for m in body.get("models", [])]
    if not names:
        raise Unhealthy("TorchServe serves no model")

    models, dead = {}, []
    for name in names:
        status, body = call(f"{management}/models/{name}", mkey, timeout)
        if status != 200 or not isinstance(body, list) or not body:
            raise Unhealthy(f"GET /models/{name} answered {status}: {body}")
        workers = body[0].get("workers", [])
        models[name] = [f"{w.get('status')} {w.get('pid')}" for w in workers]
        if not any(w.get("status") == "READY" for w in workers):
            dead.append(name)
    report["models"] = models
    if dead:
        report["no_ready_worker"] = dead
        problems.append("no READY worker")
    report["problems"] = problems
    return report


def main() -> int:
    run_dir = Path(os.environ.get("VIZ_RUN_DIR", "/tmp/viz"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=run_dir / "config.properties")
    p.add_argument("--keys", type=Path, default=ROOT / "key_file.json")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per HTTP call")
    args = p.parse_args()
    try:
        config = args.config.read_text() if args.config.exists() else ""
        report = check(config, args.keys, args.timeout)
    except (Unhealthy, KeyError) as e:
        print(json.dumps({"status": "Unhealthy", "reason": str(e)}))
        return 1
    healthy = not report.pop("problems")
    print(json.dumps({"status": "Healthy" if healthy else "Unhealthy", **report}))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
