"""The full load run: concurrent clients with mixed modes against a private TorchServe on loopback, bounded in
count and time. Reports requests, concurrency, p50/p99 latency, status counts and the worker's resident memory
after the first 100 and after all requests (drift).

Run: .venv/bin/python bench/load.py [--requests 1000] [--clients 4] [--max-seconds 900]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from scripts.load import MIX, run_load  # noqa: E402
from scripts.local_torchserve import seeded_alexnet_server  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--max-seconds", type=float, default=900)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "load.json"))
    args = p.parse_args()
    image = (ROOT / "docs" / "grace_hopper.jpg").read_bytes()
    with seeded_alexnet_server("bench_load_") as server:
        result = run_load(server, "alexnet_viz", image, total=args.requests, clients=args.clients,
                          max_seconds=args.max_seconds, rss_after=(100, args.requests))  # fmt: skip
    summary = result.summary()
    early, late = summary["rss_mb"].get(100), summary["rss_mb"].get(args.requests)
    summary.update({
        "clients": args.clients,
        "mix": [fields for fields, _ in MIX],
        "server_errors": result.server_errors,
        "rss_drift": round(late / early - 1, 4) if early and late else None,
    })  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
