"""End-to-end latency and throughput: our classify against TorchServe's stock image_classifier.

One TorchServe on loopback, one model (AlexNet, seeded weights from one file), one machine, four archives:

- ``stock default``: the stock handler as a user gets it with no model-config.yaml: TorchServe's defaults (batch
  size 1; workers per model: TorchServe's own default, one per CPU core, as ``default_workers_per_model`` is left
  out of this server's config.properties);
- ``stock default, 1 worker``: the same with one worker (model-config.yaml with minWorkers = maxWorkers = 1 only),
  a stricter second reference: on this 2-core machine it is the fastest of the stock ones;
- ``stock, our batching``: the stock handler with our archive's model-config.yaml (workers, batch size, delay);
- ``ours``: ``alexnet_viz`` as ``./archive.sh`` builds it, with its defaults.

Measured in blocks: ``--block`` consecutive requests to one variant (the first 3 untimed), the variants' blocks in
a shuffled order each round. Not one request per variant in turn: after a request, a worker's OpenMP threads spin
for a while, and on 2 cores they slowed the next variant's request (the stock default's two workers made every
other variant look 2x slower that way); a lone user's requests follow each other to one model.

1. a lone request (sequential, one client), ``docs/grace_hopper.jpg`` (512 x 600): medians and ratios to the stock
   default; plus classify+featuremaps;
2. a 12-megapixel photo (4032 x 3024 JPEG, the same picture scaled up), lone;
3. throughput with ``--clients`` (8) concurrent clients sending back to back for ``--seconds`` each, repeated
   ``--repeats`` times in alternating order: requests/s, median over repeats.

Ratios are to ``stock default`` (the targets of issue 13 are against the stock handler in its default
configuration) and, in brackets, to ``stock default, 1 worker``. It also reads back the batch size and delay
TorchServe applied to each model (management API): a ``maxBatchDelay`` of 0 in model-config.yaml is taken as "not
set" and becomes TorchServe's default of 100 ms, which is why a lone request took about 130 ms with it.

Run: .venv/bin/python bench/latency.py [--rounds 200] (about 4 minutes); ``--print FILE`` prints the table of a
saved run.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

from cnnviz import imagenet_weights, random_state_dict  # noqa: E402
from scripts.local_torchserve import BIN, Server, local_torchserve  # noqa: E402
from scripts.timing import interleaved, ok_200  # noqa: E402

IMAGE = ROOT / "docs" / "grace_hopper.jpg"
STOCK, STOCK1, STOCK_BATCHED, OURS = "stock default", "stock default, 1 worker", "stock, our batching", "ours"
MODELS = {
    STOCK: "alexnet_stock",
    STOCK1: "alexnet_stock_1",
    STOCK_BATCHED: "alexnet_stock_batched",
    OURS: "alexnet_viz",
}


def stock_archive(store: Path, work: Path, weights: Path, name: str, config: dict | None) -> None:
    labels = imagenet_weights("alexnet").meta["categories"]
    (work / "index_to_name.json").write_text(json.dumps({str(i): n for i, n in enumerate(labels)}))
    extra = []
    if config is not None:
        (work / f"{name}.yaml").write_text(yaml.safe_dump(config))
        extra = ["--config-file", str(work / f"{name}.yaml")]
    subprocess.run(
        [str(BIN / "torch-model-archiver"), "--model-name", name, "--version", "1.0",
         "--handler", "image_classifier", "--model-file", str(ROOT / "bench" / "stock_alexnet.py"),
         "--serialized-file", str(weights), "--extra-files", str(work / "index_to_name.json"), *extra,
         "--export-path", str(store), "--archive-format", "zip-store", "--force"],
        check=True,
    )  # fmt: skip


def build(store: Path, work: Path) -> None:
    weights = work / "alexnet_seeded.pt"
    torch.save(random_state_dict("alexnet", seed=0), weights)
    subprocess.run([str(ROOT / "archive.sh"), "--weights", str(weights), "--out", str(store), "alexnet"], check=True)
    ours = yaml.safe_load(
        subprocess.run(
            ["unzip", "-p", str(store / "alexnet_viz.mar"), "model-config.yaml"], check=True, capture_output=True
        ).stdout  # fmt: skip
    )
    ours.pop("handler")  # workers, batch size, delay and timeout; nothing of our handler
    stock_archive(store, work, weights, MODELS[STOCK], None)
    stock_archive(store, work, weights, MODELS[STOCK1], {"minWorkers": 1, "maxWorkers": 1})
    stock_archive(store, work, weights, MODELS[STOCK_BATCHED], ours)


def twelve_megapixels() -> bytes:
    im = Image.open(IMAGE).convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def applied(server: Server) -> dict:
    """What TorchServe made of each model's settings, from its management API."""
    auth = {"Authorization": f"Bearer {server.management_key}"}
    out = {}
    for variant, model in MODELS.items():
        info = requests.get(f"{server.management}/models/{model}", headers=auth, timeout=10).json()[0]
        out[variant] = {"batchSize": info["batchSize"], "maxBatchDelay": info["maxBatchDelay"],
                        "workers": len(info["workers"])}  # fmt: skip
    return out


def throughput(send, clients: int, seconds: float) -> float:
    """Requests/s that ``clients`` threads sending back to back complete in ``seconds`` (each with its own
    connection); every answer must be a 200."""
    done = [0] * clients
    failed: list[str] = []
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            r = send(session)
            if r.status_code != 200:
                failed.append(f"HTTP {r.status_code}: {r.text[:200]}")
                return
            done[i] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise SystemExit(failed[0])
    return sum(done) / (time.monotonic() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=200, help="timed lone requests per variant")
    p.add_argument("--big-rounds", type=int, default=40, help="timed requests of the 12-megapixel photo")
    p.add_argument("--block", type=int, default=20, help="consecutive requests to one variant")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "latency.json"))
    p.add_argument("--print", metavar="FILE", help="print the table of a saved run (a --out file) and stop")
    args = p.parse_args()
    if args.print:
        print(table(json.loads(Path(args.print).read_text())))
        return
    image, big = IMAGE.read_bytes(), twelve_megapixels()
    with tempfile.TemporaryDirectory(prefix="bench_latency_") as tmp:
        work = Path(tmp)
        store = work / "store"
        build(store, work)
        archives = [f"{m}.mar" for m in MODELS.values()]
        with local_torchserve(store, archives, work, drop=["default_workers_per_model"]) as server:
            settings = applied(server)

            def send(variant: str, body: bytes, mode: str | None = None):
                def call(session=requests):
                    if mode:
                        files, data = {"data": ("x.jpg", body)}, {"mode": mode}
                        return server.post(MODELS[variant], files=files, data=data, session=session)
                    headers = {"Content-Type": "image/jpeg"}
                    return server.post(MODELS[variant], data=body, headers=headers, session=session)

                return call

            session = requests.Session()
            lone = interleaved(
                {
                    STOCK: lambda: send(STOCK, image)(session),
                    STOCK1: lambda: send(STOCK1, image)(session),
                    STOCK_BATCHED: lambda: send(STOCK_BATCHED, image)(session),
                    OURS: lambda: send(OURS, image)(session),
                    "ours, classify+featuremaps": lambda: send(OURS, image, "featuremaps")(session),
                },
                math.ceil(args.rounds / args.block), block=args.block, settle=3, check=ok_200,
            )  # fmt: skip
            big_block = min(args.block, 10)
            large = interleaved(
                {v: (lambda v=v: send(v, big)(session)) for v in (STOCK, STOCK1, OURS)},
                math.ceil(args.big_rounds / big_block), block=big_block, settle=3, check=ok_200,
            )  # fmt: skip
            rates: dict[str, list[float]] = {v: [] for v in (STOCK, STOCK1, STOCK_BATCHED, OURS)}
            for r in range(args.repeats):
                order = list(rates) if r % 2 == 0 else list(rates)[::-1]
                for variant in order:
                    rates[variant].append(throughput(send(variant, image), args.clients, args.seconds))
    med = {k: statistics.median(v) for k, v in lone.items()}
    big_med = {k: statistics.median(v) for k, v in large.items()}
    rate = {k: statistics.median(v) for k, v in rates.items()}

    def ratios(values: dict[str, float], ref: str, digits: int) -> dict[str, float]:
        return {k: round(v / values[ref], digits) for k, v in values.items()}

    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {platform.processor() or 'cpu'}",
        "torch": torch.__version__,
        "applied_settings": settings,
        "lone": {"image": f"{IMAGE.name} (600 x 512)", "rounds": args.rounds,
                 "median_ms": {k: round(v, 2) for k, v in med.items()},
                 "p90_ms": {k: round(statistics.quantiles(v, n=10)[-1], 2) for k, v in lone.items()},
                 "ratio_to_stock_default": ratios(med, STOCK, 3),
                 "ratio_to_stock_1_worker": ratios(med, STOCK1, 3)},
        "twelve_megapixels": {"image": "4032 x 3024 JPEG, quality 90", "rounds": args.big_rounds,
                              "median_ms": {k: round(v, 2) for k, v in big_med.items()},
                              "ratio_to_stock_default": ratios(big_med, STOCK, 3),
                              "ratio_to_stock_1_worker": ratios(big_med, STOCK1, 3)},
        "throughput": {"clients": args.clients, "seconds": args.seconds, "repeats": args.repeats,
                       "requests_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
                       "median_requests_per_s": {k: round(v, 1) for k, v in rate.items()},
                       "ratio_to_stock_default": ratios(rate, STOCK, 2),
                       "ratio_to_stock_1_worker": ratios(rate, STOCK1, 2)},
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(settings))
    print(table(result))


def table(result: dict) -> str:
    """docs/development.md's table of a run: medians, ratios to the stock default and (in brackets) to its one-worker
    variant."""
    settings = result["applied_settings"]
    lone, big, load = result["lone"], result["twelve_megapixels"], result["throughput"]

    def cells(part: dict, values: str, k: str) -> list[str]:
        if k not in part[values]:
            return ["-", "-"]
        ratios = f"{part['ratio_to_stock_default'][k]:.2f} ({part['ratio_to_stock_1_worker'][k]:.2f})"
        return [f"{part[values][k]:.1f}", ratios]

    lines = [
        "| variant (TorchServe as applied: batch size, delay, workers) | lone request, median ms | ratio to stock "
        f"default (to 1 worker) | 12 MP photo, median ms | ratio | {load['clients']} clients, requests/s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in lone["median_ms"]:
        s = settings.get(k)
        name = f"{k} ({s['batchSize']}, {s['maxBatchDelay']} ms, {s['workers']})" if s else k
        row = cells(lone, "median_ms", k) + cells(big, "median_ms", k) + cells(load, "median_requests_per_s", k)
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
