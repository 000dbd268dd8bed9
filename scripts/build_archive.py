"""Build TorchServe archives ``OUT/ARCH_viz.mar``: weights, the model spec, labels, model-config.yaml, handler and core.

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
from dataclasses import replace
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "handlers"
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(HANDLERS))

from cnnviz import (  # noqa: E402
    ARCHITECTURES,
    TRANSFORMERS,
    InvalidOption,
    LayerTable,
    ModelSpec,
    WeightsUnavailable,
    check_arch,
    imagenet_state_dict,
    load_weights,
    read_state_dict,
    torchvision_spec,
)
from vizserve import model_for, smallest_input_side  # noqa: E402

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
    if arch in TRANSFORMERS:
        try:
            check_arch(arch)
        except InvalidOption as exc:  # says why
            raise SystemExit(f"archive.sh: {exc}") from None
    raise SystemExit(
        f"archive.sh: unknown model {arch!r}: not one of torchvision's CNNs ({', '.join(ARCHITECTURES)}), and "
        f"neither {EXAMPLES / arch} nor {arch} is a folder with a model.json (see examples/shapes)"
    )


def base_spec(arch: str, args: argparse.Namespace) -> ModelSpec:
    """The spec before weights and default layers: torchvision's metadata, or the user's model.json."""
    folder = model_dir_of(arch)
    if folder is None:
        return torchvision_spec(arch, args.weights_name)
    doc = json.loads((folder / "model.json").read_text())
    return ModelSpec.from_dict(doc, arch=folder.name, model_file=doc["model_file"])


def weights_for(arch: str, spec: ModelSpec, args: argparse.Namespace) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict and the tag responses report for it."""
    folder = model_dir_of(arch) or ROOT
    if args.random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            return model_for(spec, folder).state_dict(), "random"
    path = Path(args.weights) if args.weights else None
    if path is None and spec.model_file:
        path = folder / json.loads((folder / "model.json").read_text())["weights"]
    if path is not None:
        state = read_state_dict(path)
        load_weights(model_for(spec, folder), state, source=str(path))  # fail now, not in the worker
        return state, f"file:{path.name}"
    return imagenet_state_dict(arch, name=spec.weights_entry, progress=sys.stderr.isatty()), str(spec.weights_entry)


def full_spec(arch: str, spec: ModelSpec, state: dict[str, torch.Tensor], tag: str) -> ModelSpec:
    """The spec with its weights tag, default layers and smallest input, from the model itself."""
    folder = model_dir_of(arch) or ROOT
    model = load_weights(model_for(spec, folder), state).eval()
    spec = replace(spec, weights=tag).with_defaults(LayerTable(model, spec.input_shape))
    if spec.min_side is None:
        spec = replace(spec, min_side=smallest_input_side(model, spec.input_shape, torch.device("cpu")))
    return spec


def model_config(spec: ModelSpec, args: argparse.Namespace) -> dict:
    """model-config.yaml: TorchServe's settings, and the server's configuration in its ``handler:`` section, by
    section (:class:`vizserve.config.ServerConfig` reads it and refuses what it does not know)."""
    limits = {
        "max_image_pixels": args.max_image_pixels,
        "max_input_side": args.max_input_side,
        "max_busy_seconds": args.max_busy_seconds,
    }
    limit = max_response_size(Path(args.config))
    if limit:
        limits["max_response_bytes"] = limit
    handler = {
        "arch": spec.arch,
        "weights": spec.weights,
        "weights_file": "weights.pt",
        "limits": limits,
        "jobs": {"wall_seconds": args.job_wall_seconds, "max_jobs": args.max_jobs},
    }
    return {
        "minWorkers": args.workers,
        "maxWorkers": args.workers,
        "batchSize": args.batch_size,
        "maxBatchDelay": args.max_batch_delay,
        "responseTimeout": args.response_timeout,
        "handler": handler,
    }


def build(arch: str, args: argparse.Namespace) -> Path:
    spec = base_spec(arch, args)
    state, tag = weights_for(arch, spec, args)
    spec = full_spec(arch, spec, state, tag)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{arch}_viz_") as tmp:
        tmp = Path(tmp)
        extra = tmp / "extra"
        for pkg in PACKAGES:
            shutil.copytree(HANDLERS / pkg, extra / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (extra / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1))
        # TorchServe's own convention for labels, for tools that read it
        (extra / "index_to_name.json").write_text(json.dumps({str(i): n for i, n in enumerate(spec.labels)}))
        if spec.model_file:
            shutil.copy(model_dir_of(arch) / spec.model_file, extra / spec.model_file)
        torch.save(state, tmp / "weights.pt")
        (tmp / "model-config.yaml").write_text(yaml.safe_dump(model_config(spec, args), sort_keys=False))
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
    print(f"built {target} (weights: {tag}; input {list(spec.input_shape)}; CAM layer {spec.cam_layer})")
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
        help="a CNN classifier of torchvision (every one that torchvision.models.list_models() lists, except the "
        "vision transformers vit_*, swin*, maxvit_t, mvit_*), including the video CNNs r3d_18, mc3_18, r2plus1d_18 and "
        "s3d, or a model of your own: a folder with a model.json, such as "
        "examples/shapes (or just 'shapes')",
    )  # fmt: skip
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", metavar="FILE", help="state dict for the architecture (air-gapped sites)")
    src.add_argument("--random-weights", action="store_true", help="seeded random weights: smoke tests only")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    p.add_argument(
        "--weights-name", metavar="NAME",
        help="torchvision's weights entry whose preprocessing and labels to use, e.g. IMAGENET1K_V2 or DEFAULT "
        "(default: IMAGENET1K_V1 where the architecture has it, else DEFAULT)",
    )  # fmt: skip
    p.add_argument("--out", default=str(ROOT / "model_store"), help="output folder (default model_store/)")
    p.add_argument("--config", default=str(ROOT / "config.properties"), help="TorchServe config to read limits from")
    p.add_argument("--batch-size", type=int, default=8, help="TorchServe batch size (default 8)")
    p.add_argument(
        "--max-batch-delay", type=int, default=1,
        help="ms to wait for a batch to fill (default 1: a lone request waits 1 ms; under load, requests queued while "
        "the worker is busy form the batch anyway). At least 1: TorchServe takes 0 as unset and waits 100 ms",
    )  # fmt: skip
    p.add_argument("--response-timeout", type=int, default=120, help="seconds (default 120)")
    p.add_argument("--workers", type=int, default=1, help="workers per model (default 1)")
    p.add_argument("--max-image-pixels", type=int, default=50_000_000, help="pixel cap, checked before decoding")
    p.add_argument("--max-input-side", type=int, default=1024, help="largest H or W of a .npy input")
    p.add_argument("--max-busy-seconds", type=int, default=90,
                   help="compute seconds an actmax/invert job gets (default 90)")  # fmt: skip
    p.add_argument("--job-wall-seconds", type=int, default=300,
                   help="a job's answer is ready at most this long after its submission (default 300)")  # fmt: skip
    p.add_argument("--max-jobs", type=int, default=4, help="optimization jobs one worker holds at once (default 4)")
    p.add_argument(
        "--archive-format", default="zip-store", choices=("zip-store", "default", "no-archive"),
        help="zip-store (default: weights do not compress), default (deflate) or no-archive (a folder)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.max_batch_delay < 1:
        p.error(f"--max-batch-delay must be at least 1 ms, got {args.max_batch_delay}: TorchServe 0.12 reads 0 in "
                "model-config.yaml as unset and applies its default of 100 ms to every lone request")  # fmt: skip
    if args.batch_size < 1:
        p.error(f"--batch-size must be at least 1, got {args.batch_size}")
    for arch in args.arch:
        model_dir_of(arch)  # unknown names end here, before any work
        if args.weights_name and model_dir_of(arch) is None:
            try:
                torchvision_spec(arch, args.weights_name)
            except InvalidOption as exc:
                p.error(str(exc))
    if args.max_busy_seconds > args.job_wall_seconds:
        p.error("--max-busy-seconds (compute a job gets) cannot exceed --job-wall-seconds (its wall-clock ceiling)")
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
