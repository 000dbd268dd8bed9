"""Wait until TorchServe answers /ping and every named model has a ready worker; then say how to call it."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def address(config: Path, key: str, default: str) -> str:
    m = re.search(rf"^\s*{key}\s*=\s*(\S+)", config.read_text(), re.MULTILINE)
    return m.group(1) if m else default


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("models", nargs="+")
    p.add_argument("--config", default=str(ROOT / "config.properties"))
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args()
    config = Path(args.config)
    inference = address(config, "inference_address", "http://127.0.0.1:8080")
    management = address(config, "management_address", "http://127.0.0.1:8081")
    deadline = time.monotonic() + args.timeout
    pending = set(args.models)
    while pending and time.monotonic() < deadline:
        time.sleep(1)
        try:
            keys = json.loads(Path("key_file.json").read_text())
            auth = {"Authorization": f"Bearer {keys['management']['key']}"}
            for name in list(pending):
                r = requests.get(f"{management}/models/{name}", headers=auth, timeout=5)
                if r.ok and any(w.get("status") == "READY" for w in r.json()[0].get("workers", [])):
                    pending.discard(name)
        except (OSError, ValueError, KeyError, requests.RequestException):
            continue
    if pending:
        print(f"serve.sh: not ready after {args.timeout:.0f} s: {', '.join(sorted(pending))}; see logs/model_log.log",
              file=sys.stderr)  # fmt: skip
        return 1
    first = args.models[0]
    print(
        f"TorchServe is up at {inference}, serving {', '.join(args.models)}.\n"
        f"  key=$(python3 -c \"import json; print(json.load(open('key_file.json'))['inference']['key'])\")\n"
        f'  curl -H "Authorization: Bearer $key" -F data=@docs/grace_hopper.jpg -F mode=featuremaps '
        f"{inference}/predictions/{first}\n"
        f"Stop it with ./serve.sh stop. Logs: logs/. Keys expire after 60 minutes (key_file.json)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
