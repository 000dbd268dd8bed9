"""Build TorchServe archives ``OUT/ARCH_viz.mar``: weights, ImageNet labels, model-config.yaml, handler and core.

Run through ``./archive.sh``; ``--help`` lists the options. Exit status 3 means some weights could not be had.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "handlers"
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(HANDLERS))

from cnnviz import (  # noqa: E402
    ARCHITECTURES,
    WeightsUnavailable,
    build_model,
    imagenet_state_dict,
    imagenet_weights,
    load_weights,
    model_from_file,
    read_state_dict,
)

PACKAGES = ("cnnviz", "vizserve")
NO_WEIGHTS = 3


def max_response_size(config: Path) -> int | None:
    """TorchServe's ``max_response_size`` from config.properties, so the handler refuses what TorchServe would."""
    if not config.exists():
        return None
    m = re.search(r"^\s*max_response_size\s*=\s*(\d+)", config.read_text(), re.MULTILINE)
    return int(m.group(1)) if m else None


def model_dir_of(arch: str) -> Path | None:
    """The folder of a user's own model: ``examples/NAME`` or a path, holding a ``model.json``."""
    if arch in ARCHITECTURES:
        return None
    for candidate in (EXAMPLES / arch, Path(arch)):
        if (candidate / "model.json").is_file():
            return candidate.resolve()
    raise SystemExit(
        f"archive.sh: unknown model {arch!r}: not one of {', '.join(ARCHITECTURES)}, and neither "
        f"{EXAMPLES / arch} nor {arch} is a folder with a model.json (see examples/shapes)"
    )


def fresh_model(arch: str) -> torch.nn.Module:
    folder = model_dir_of(arch)
    if folder is None:
        return build_model(arch)
    return model_from_file(folder / json.loads((folder / "model.json").read_text())["model_file"])


def weights_for(arch: str, args: argparse.Namespace) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict and the tag responses report for it."""
    if args.random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            return fresh_model(arch).state_dict(), "random"
    folder = model_dir_of(arch)
    path = Path(args.weights) if args.weights else None
    if path is None and folder is not None:
        path = folder / json.loads((folder / "model.json").read_text())["weights"]
    if path is not None:
        state = read_state_dict(path)
        load_weights(fresh_model(arch), state, source=str(path))  # fail now, not in the worker
        return state, f"file:{path.name}"
    return imagenet_state_dict(arch, progress=sys.stderr.isatty()), imagenet_weights(arch).name


def labels_of(arch: str) -> list[str]:
    folder = model_dir_of(arch)
    if folder is None:
        return imagenet_weights(arch).meta["categories"]
    return json.loads((folder / "model.json").read_text())["labels"]


def model_config(arch: str, tag: str, args: argparse.Namespace) -> dict:
    handler = {
        "arch": Path(arch).name,
        "weights": tag,
        "weights_file": "weights.pt",
        "max_image_pixels": args.max_image_pixels,
        "max_input_side": args.max_input_side,
        "max_busy_seconds": args.max_busy_seconds,
    }
    folder = model_dir_of(arch)
    if folder is not None:
        spec = json.loads((folder / "model.json").read_text())
        handler["model_file"] = "model.py"
        handler["preprocess"] = spec["preprocess"]
    limit = max_response_size(Path(args.config))
    if limit:
        handler["max_response_bytes"] = limit
    return {
        "minWorkers": args.workers,
        "maxWorkers": args.workers,
        "batchSize": args.batch_size,
        "maxBatchDelay": args.max_batch_delay,
        "responseTimeout": args.response_timeout,
        "handler": handler,
    }


def build(arch: str, args: argparse.Namespace) -> Path:
    state, tag = weights_for(arch, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{arch}_viz_") as tmp:
        tmp = Path(tmp)
        extra = tmp / "extra"
        for pkg in PACKAGES:
            shutil.copytree(HANDLERS / pkg, extra / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        labels = labels_of(arch)
        (extra / "index_to_name.json").write_text(json.dumps({str(i): name for i, name in enumerate(labels)}))
        folder = model_dir_of(arch)
        if folder is not None:
            model_file = json.loads((folder / "model.json").read_text())["model_file"]
            shutil.copy(folder / model_file, extra / "model.py")
        torch.save(state, tmp / "weights.pt")
        (tmp / "model-config.yaml").write_text(yaml.safe_dump(model_config(arch, tag, args), sort_keys=False))
        name = f"{Path(arch).name}_viz"
        cmd = [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            "--model-name", name,
            "--version", "1.0",
            "--handler", str(HANDLERS / "viz_handler.py"),
            "--serialized-file", str(tmp / "weights.pt"),
            "--extra-files", str(extra),
            "--config-file", str(tmp / "model-config.yaml"),
            "--export-path", str(out),
            "--archive-format", args.archive_format,
            "--force",
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
    target = out / (name if args.archive_format == "no-archive" else f"{name}.mar")
    print(f"built {target} (weights: {tag})")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="archive.sh",
        description="Build OUT/ARCH_viz.mar for TorchServe. Weights: torchvision's IMAGENET1K_V1 through its "
        "weights API (cache under $TORCH_HOME, downloaded when online), a state-dict FILE, or random.",
        epilog="examples:\n  ./archive.sh alexnet vgg16 resnet18\n  ./archive.sh --weights alexnet-owt-7be5be79.pth "
        "alexnet\n  ./archive.sh --random-weights --out /tmp/store resnet18",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "arch", nargs="+", metavar="ARCH",
        help=f"one of {', '.join(ARCHITECTURES)}, or a model of your own: a folder with a model.json, such as "
        "examples/shapes (or just 'shapes')",
    )  # fmt: skip
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", metavar="FILE", help="state dict for the architecture (air-gapped sites)")
    src.add_argument("--random-weights", action="store_true", help="seeded random weights: smoke tests only")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    p.add_argument("--out", default=str(ROOT / "model_store"), help="output folder (default model_store/)")
    p.add_argument("--config", default=str(ROOT / "config.properties"), help="TorchServe config to read limits from")
    p.add_argument("--batch-size", type=int, default=8, help="TorchServe batch size (default 8)")
    p.add_argument("--max-batch-delay", type=int, default=20, help="ms to wait for a batch to fill (default 20)")
    p.add_argument("--response-timeout", type=int, default=120, help="seconds (default 120)")
    p.add_argument("--workers", type=int, default=1, help="workers per model (default 1)")
    p.add_argument("--max-image-pixels", type=int, default=50_000_000, help="pixel cap, checked before decoding")
    p.add_argument("--max-input-side", type=int, default=1024, help="largest H or W of a .npy input")
    p.add_argument("--max-busy-seconds", type=int, default=90,
                   help="time budget of a batch's actmax/invert, below --response-timeout (default 90)")  # fmt: skip
    p.add_argument(
        "--archive-format", default="zip-store", choices=("zip-store", "default", "no-archive"),
        help="zip-store (default: weights do not compress), default (deflate) or no-archive (a folder)",
    )  # fmt: skip
    args = p.parse_args(argv)
    for arch in args.arch:
        model_dir_of(arch)  # unknown names end here, before any work
    if args.max_busy_seconds >= args.response_timeout:
        p.error("--max-busy-seconds must stay below --response-timeout, or TorchServe kills the worker first")
    if args.weights and len(args.arch) > 1:
        p.error("--weights FILE holds one architecture's weights: name exactly one ARCH")
    socket.setdefaulttimeout(60)  # a download that cannot connect should fail, not hang
    failed = []
    for arch in args.arch:
        try:
            build(arch, args)
        except WeightsUnavailable as exc:
            print(f"archive.sh: {arch}: {exc}", file=sys.stderr)
            failed.append(arch)
        except (OSError, ValueError, RuntimeError) as exc:  # a --weights file that is missing or does not fit
            print(f"archive.sh: {arch}: {exc}", file=sys.stderr)
            return 2
    return NO_WEIGHTS if failed else 0


if __name__ == "__main__":
    sys.exit(main())
