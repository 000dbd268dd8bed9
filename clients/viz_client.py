"""Call a *_viz model and save what comes back: the top-k as a table, every picture as a PNG.

  python clients/viz_client.py docs/grace_hopper.jpg                                   # top-5
  python clients/viz_client.py photos/ --mode featuremaps,gradcam --out pictures/   # every image of a folder
  python clients/viz_client.py docs/grace_hopper.jpg --mode featuremaps,filters --layers features.0,features.8
  python clients/viz_client.py --model resnet18_viz --mode layers        # no image needed
  python clients/viz_client.py docs/grace_hopper.jpg --raw --out pictures/              # also saves the .npy arrays
  python clients/viz_client.py docs/grace_hopper.jpg --mode gradcam --method gradcam++ --target "tiger cat"
  python clients/viz_client.py samples/shape.png --model shapes_viz --mode gradcam,saliency --method guided_backprop
  python clients/viz_client.py --mode actmax --layer features.10 --channel 0-15 --out pictures/  # a job, polled
  python clients/viz_client.py --mode actmax --channel "tabby,goldfish"   # class images, no image needed
  python clients/viz_client.py docs/grace_hopper.jpg --mode saliency --method smoothgrad -o samples=32 -o noise=0.2
  python clients/viz_client.py docs/grace_hopper.jpg --mode deconv --layer features.8
  python clients/viz_client.py docs/grace_hopper.jpg --mode invert --layer features.6
  python clients/viz_client.py --mode filters --layers features.0

actmax and invert run as jobs on the server: the request is answered 202 with a job ID at once, and the client
polls it (field job=ID) every --poll seconds, printing the progress, until the answer comes.

The token comes from --token, else $VIZ_TOKEN, else key_file.json in the folder TorchServe was started from.
A refused key is told apart (none sent, not the key file's, expired: then how to get a new one), as TorchServe
answers all three with one 400 (clients/viz_keys.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from viz_keys import is_key_refusal, key_problem  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".npy"}


def token(args: argparse.Namespace) -> str:
    if args.token or os.environ.get("VIZ_TOKEN"):
        return args.token or os.environ["VIZ_TOKEN"]
    path = Path(args.key_file)
    if not path.exists():
        sys.exit(f"no token: {path} not found; start the server with ./serve.sh or pass --token")
    return json.loads(path.read_text())["inference"]["key"]


def endpoint(args: argparse.Namespace) -> str:
    return f"{args.url}/predictions/{args.model}"


def auth(args: argparse.Namespace) -> dict:
    """The Authorization header, with the key read afresh (a rotated key in key_file.json is picked up)."""
    return {"Authorization": f"Bearer {token(args)}"}


def unreachable(args: argparse.Namespace) -> str:
    return f"cannot reach {args.url}: is the server running? (./serve.sh)"


def error_text(r: requests.Response, key_file: Path | None = None) -> str:
    """A refused or failed request as one line: the status and the server's message; a refused key as what was
    wrong with it (:func:`viz_keys.key_problem`, against ``key_file``, default the repository's key_file.json)."""
    try:
        err = r.json()
    except ValueError:
        err = {"message": r.text[:500]}
    if is_key_refusal(r.status_code, err):
        sent = str(r.request.headers.get("Authorization", "")).removeprefix("Bearer ").strip() if r.request else ""
        url = urlsplit(r.url or "http://127.0.0.1:8080")
        management = f"{url.scheme}://{url.hostname}:8081"  # config.properties' management port
        return f"HTTP {r.status_code}: {key_problem(sent, key_file or ROOT / 'key_file.json', management=management)}"
    return f"HTTP {r.status_code}: {err.get('message', err)}"


def extra_fields(p: argparse.ArgumentParser, options: list[str]) -> dict:
    """-o KEY=VALUE options as form fields."""
    fields = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            p.error(f"--option takes KEY=VALUE, got {option!r}")
        fields[key] = value
    return fields


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", nargs="?", help="image file (JPEG, PNG, ...), .npy float32 [3, H, W], or a folder of them")
    p.add_argument("--model", default="alexnet_viz")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument(
        "--mode", default="classify", help="comma list: classify featuremaps filters layers gradcam saliency deconv"
    )
    p.add_argument(
        "--method",
        help="gradcam, gradcam++, hirescam, scorecam, ... (mode=describe lists them); vanilla, smoothgrad, ...",
    )
    p.add_argument("--target", help="class index or label for gradcam and saliency (default: the top-1 class)")
    p.add_argument("--layer", help="one layer for gradcam and deconv")
    p.add_argument("--layers", help="comma list of module names, e.g. features.0,features.10")
    p.add_argument("--channels", help="channels per picture (default 64) or 'all'")
    p.add_argument("--topk", help="how many classes (default 5)")
    p.add_argument("--normalize", choices=("channel", "layer"))
    p.add_argument("--channel", help="actmax targets: 3, 3,7,9, 0-15, or class labels")
    p.add_argument("--steps", help="actmax/invert steps (the server's default: actmax 128, invert 256)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between polls of an actmax/invert job")
    p.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)  # the old name: progress is always shown
    p.add_argument("--raw", action="store_true", help="also save the arrays as .npy")
    p.add_argument(
        "-o", "--option", action="append", default=[], metavar="KEY=VALUE",
        help="any other option of the server, e.g. -o samples=32 -o noise=0.2 -o param=pixel -o seed=3",
    )  # fmt: skip
    p.add_argument("--out", default=".", help="folder for the pictures (default: here)")
    p.add_argument("--token")
    p.add_argument("--key-file", default=str(ROOT / "key_file.json"))
    args = p.parse_args()

    options = ("mode", "layers", "channels", "topk", "normalize", "method", "target", "layer", "channel", "steps")
    fields = {k: v for k, v in vars(args).items() if k in options and v}
    if args.raw:
        fields["raw"] = "true"
    fields.update(extra_fields(p, args.option))
    images: list[Path | None] = [None]
    if args.image:
        path = Path(args.image)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                sys.exit(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif not path.is_file():
            sys.exit(f"{path}: no such file or folder")
        else:
            images = [path]
    for image in images:
        if len(images) > 1:
            print(f"== {image}")
        call_and_save(args, fields, image)
    return 0


def follow(
    args: argparse.Namespace, job: str, every: float = 1.0, show=None, cancel: bool = False
) -> requests.Response:
    """Poll a job (POST field job=ID) until it is no longer queued or running, calling ``show`` with each progress
    state (202); returns the final response (the request's answer, or its error). ``cancel``: the first poll asks
    the server to end the job at its next step (field cancel=true), so the answer is what it has made so far."""
    while True:
        if not cancel:
            time.sleep(every)
        fields = {"job": job, "cancel": "true"} if cancel else {"job": job}
        cancel = False
        r = requests.post(endpoint(args), data=fields, headers=auth(args), timeout=60)
        if r.status_code != 202:
            return r
        if show is not None:
            show(r.json())


def job_bar(state: dict) -> None:
    """One job's progress on one line, redrawn in place."""
    done = state["step"] / max(1, state["steps"])
    bar = "#" * round(30 * done) + "." * (30 - round(30 * done))
    best = f"  best {max(state['objective']):.4g}" if state.get("objective") else ""
    print(f"\r  {state.get('running', state['mode'])} [{bar}] {state['step']}/{state['steps']}  "
          f"{state['elapsed_s']:.0f} s{best}", end="", flush=True)  # fmt: skip


def early_mark(entry: dict, cancelled: bool = False) -> str:
    """What marks an optimization's result that stopped early (its budget ran out, or ``cancelled`` by the user),
    wherever it is shown; '' for one that ran all its steps."""
    steps = f"{entry['steps']} step{'s' * (entry['steps'] != 1)}"
    why = "cancelled" if cancelled else "budget ran out"
    return f"stopped early after {steps} ({why})" if entry.get("stopped_early") else ""


def call(args: argparse.Namespace, fields: dict, image: Path | None = None, every: float = 1.0) -> dict:
    """One request and its answer; an optimization job (202) is polled until it ends, its progress shown. Ctrl-C
    while it runs cancels the job and waits for what it has made so far (``"cancelled": true`` is then added to the
    answer); a second Ctrl-C leaves. Exits with a plain message when the server cannot be reached or answers an
    error."""
    files = {"data": (image.name, image.read_bytes())} if image else None
    cancelled = False
    try:
        r = requests.post(endpoint(args), data=fields, files=files, headers=auth(args), timeout=300)
        if r.status_code == 202:  # an optimization job: poll it, showing the progress
            state = r.json()
            print(f"  job {state['job']}: about {state.get('estimate_s', '?')} s of compute "
                  f"(budget {state['budget']['compute_s']} s)")  # fmt: skip
            try:
                r = follow(args, state["job"], every, show=job_bar)
            except KeyboardInterrupt:
                print(f"\n  cancelling job {state['job']}: it ends at its next step (Ctrl-C again to leave)")
                cancelled = True
                r = follow(args, state["job"], every, show=job_bar, cancel=True)
            print()
    except requests.ConnectionError:
        sys.exit(unreachable(args))
    if r.status_code != 200:
        sys.exit(error_text(r, Path(args.key_file)))
    out = r.json()
    if cancelled:
        out["cancelled"] = True
    return out


def call_and_save(args: argparse.Namespace, fields: dict, image: Path | None) -> dict:
    """One request; prints the top-k table and saves every picture. Exits with a plain message on an error."""
    out = call(args, fields, image, args.poll)
    print(f"{out['model']} ({out['arch']}, weights {out['weights']}, on {out['device']})")
    for p_ in out.get("predictions", []):
        print(f"  {p_['score']:8.4f}  {p_['index']:4d}  {p_['label']}")
    stem = image.stem if image else out["model"]
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("featuremaps", "filters"):
        for entry in out.get(kind, []):
            name = f"{stem}_{out['arch']}_{kind}_{entry['layer']}"
            (folder / f"{name}.png").write_bytes(base64.b64decode(entry["image"]))
            print(f"  saved {folder / name}.png  {entry['shape']}")
            if "raw" in entry:
                (folder / f"{name}.npy").write_bytes(base64.b64decode(entry["raw"]))
    for kind in ("actmax", "invert"):
        entries = out.get(kind, [])
        for entry in entries if isinstance(entries, list) else [entries]:
            about = entry.get("label", f"channel{entry.get('channel', '')}").replace(" ", "-")
            name = f"{stem}_{out['arch']}_{kind}_{entry['layer']}_{about}"
            (folder / f"{name}.png").write_bytes(base64.b64decode(entry["image"]))
            done = early_mark(entry, out.get("cancelled", False)).replace("stopped early", "STOPPED EARLY")
            done = done or f"after {entry['steps']} steps"
            print(f"  saved {folder / name}.png  ({done}, {entry['seconds']} s)")
    for kind in ("gradcam", "saliency", "deconv"):
        entry = out.get(kind)
        if entry is None:
            continue
        about = entry.get("label", f"channel{entry.get('channel')}")
        name = f"{stem}_{out['arch']}_{kind}_{entry.get('method', entry.get('layer'))}_{about}".replace(" ", "-")
        for picture in ("image", "heatmap"):
            (folder / f"{name}_{picture}.png").write_bytes(base64.b64decode(entry[picture]))
        print(f"  saved {folder / name}_image.png, _heatmap.png  (max {entry['max']:.4g})")
        if "raw" in entry:
            (folder / f"{name}.npy").write_bytes(base64.b64decode(entry["raw"]))
    for layer in out.get("layers", []):
        print(f"  {layer['name']:<24} {layer['type']:<18} {layer['output_shape']}")
    return out


if __name__ == "__main__":
    sys.exit(main())
