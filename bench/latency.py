"""End-to-end latency: our classify and classify+featuremaps against TorchServe's stock image_classifier.

Same TorchServe, model (AlexNet), weights (seeded, from one file), batch settings, image and machine. Requests are
sequential and interleaved (stock, classify, featuremaps, in a shuffled order each round); we report medians and
ratios to the stock handler. Run: .venv/bin/python bench/latency.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import requests
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from cnnviz import imagenet_weights, random_state_dict  # noqa: E402
from scripts.local_torchserve import BIN, local_torchserve  # noqa: E402
from scripts.timing import interleaved, ok_200  # noqa: E402

IMAGE = ROOT / "docs" / "grace_hopper.jpg"


def build(store: Path, work: Path) -> None:
    weights = work / "alexnet_seeded.pt"
    torch.save(random_state_dict("alexnet", seed=0), weights)
    subprocess.run([str(ROOT / "archive.sh"), "--weights", str(weights), "--out", str(store), "alexnet"], check=True)
    config = yaml.safe_load(
        subprocess.run(
            ["unzip", "-p", str(store / "alexnet_viz.mar"), "model-config.yaml"], check=True, capture_output=True
        ).stdout  # fmt: skip
    )
    config.pop("handler")  # same workers, batch size, delay and timeout; nothing of ours
    (work / "model-config.yaml").write_text(yaml.safe_dump(config))
    labels = imagenet_weights("alexnet").meta["categories"]
    (work / "index_to_name.json").write_text(json.dumps({str(i): n for i, n in enumerate(labels)}))
    subprocess.run(
        [str(BIN / "torch-model-archiver"), "--model-name", "alexnet_stock", "--version", "1.0",
         "--handler", "image_classifier", "--model-file", str(ROOT / "bench" / "stock_alexnet.py"),
         "--serialized-file", str(weights), "--extra-files", str(work / "index_to_name.json"),
         "--config-file", str(work / "model-config.yaml"), "--export-path", str(store),
         "--archive-format", "zip-store", "--force"],
        check=True,
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "latency.json"))
    args = p.parse_args()
    image = IMAGE.read_bytes()
    with tempfile.TemporaryDirectory(prefix="bench_latency_") as tmp:
        work = Path(tmp)
        store = work / "store"
        build(store, work)
        with local_torchserve(store, ["alexnet_viz.mar", "alexnet_stock.mar"], work) as server:
            session = requests.Session()
            variants = {
                "stock image_classifier": lambda: server.post(
                    "alexnet_stock", data=image, headers={"Content-Type": "image/jpeg"}, session=session
                ),
                "classify": lambda: server.post(
                    "alexnet_viz", data=image, headers={"Content-Type": "image/jpeg"}, session=session
                ),
                "classify+featuremaps": lambda: server.post(
                    "alexnet_viz", files={"data": ("x.jpg", image)}, data={"mode": "featuremaps"}, session=session
                ),
            }
            times = interleaved(variants, args.rounds, warmup=args.warmup, check=ok_200)
    base = statistics.median(times["stock image_classifier"])
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {platform.processor() or 'cpu'}",
        "torch": torch.__version__,
        "rounds": args.rounds,
        "image": IMAGE.name,
        "median_ms": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "p90_ms": {k: round(statistics.quantiles(v, n=10)[-1], 2) for k, v in times.items()},
        "ratio_to_stock": {k: round(statistics.median(v) / base, 3) for k, v in times.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| request | median ms | p90 ms | ratio to stock |\n|---|---|---|---|")
    for k in times:
        print(f"| {k} | {result['median_ms'][k]} | {result['p90_ms'][k]} | {result['ratio_to_stock'][k]:.3f} |")


if __name__ == "__main__":
    main()
