"""Build a static HTML gallery a person opens offline: a folder with index.html and the pictures beside it.

  python clients/gallery.py classes  --model shapes_viz --channel 0-5 --out gallery/       # class patterns
  python clients/gallery.py channels --model alexnet_viz --layers features.3,features.8 --channel 0-7 --out gallery/
  python clients/gallery.py images photos/ --model alexnet_viz --out gallery/              # feature maps, Grad-CAM

Every class of a model, in batches, resumable: clients/every_class.py.

The token comes from --token, else $VIZ_TOKEN, else key_file.json (as for viz_client.py).
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from viz_client import IMAGE_SUFFIXES, ROOT, call, early_mark  # noqa: E402

#: The page: each table a section of pictures that wraps to the window (flex rows, never wider than it), each picture
#: scaled down to the window at most and to 224 px (class and channel patterns) or 560 px (wide pictures).
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; background: #fafafa; color: #222; }}
section {{ margin: 0 0 24px; }} h2 {{ font-size: 18px; font-weight: 600; margin: 8px 0; }}
.cells {{ display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }}
figure {{ margin: 0; max-width: 100%; text-align: center; }}
img {{ display: block; margin: 0 auto 4px; max-width: min(100%, 224px); image-rendering: pixelated;
       border: 1px solid #ccc; }}
.wide img {{ max-width: min(100%, 560px); }} figcaption {{ color: #666; font-size: 12px; max-width: 560px; }}
.early {{ color: #b00000; font-weight: 600; }}
</style></head><body>
<h1>{heading}</h1><p><small>{about}</small></p>
{tables}
<script>
// For people: nothing. For the gallery test: say in the title whether every picture loaded.
window.addEventListener("load", () => {{
  const all = Array.from(document.images);
  const ok = all.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.title = "loaded " + ok + "/" + all.length;
}});
</script></body></html>
"""


def save(folder: Path, name: str, b64: str) -> str:
    (folder / name).write_bytes(base64.b64decode(b64))
    return name


def cell(src: str, caption: str, mark: str = "") -> str:
    """A picture with its caption; ``mark`` (a result that stopped early) is shown below it in red."""
    note = f'<br><span class="early">{html.escape(mark)}</span>' if mark else ""
    return (
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
        f"{note}</figcaption></figure>"
    )


def table(caption: str, cells: list[str], wide: bool = False) -> str:
    """A captioned section of pictures, in rows that wrap to the window's width."""
    return (
        f'<section class="{"wide" if wide else ""}"><h2>{html.escape(caption)}</h2><div class="cells">'
        f"{''.join(cells)}</div></section>"
    )


def page(heading: str, about: str, tables: list[str]) -> str:
    """The whole HTML page: a heading, a line about it, the tables."""
    return PAGE.format(title=html.escape(heading), heading=html.escape(heading), about=html.escape(about),
                       tables="\n".join(tables))  # fmt: skip


def optimized(args, folder: Path, layer: str | None) -> str:
    fields = {"mode": "actmax", "channel": args.channel, "steps": str(args.steps)}
    if layer:
        fields["layer"] = layer
    out = call(args, fields)
    cells = []
    for e in out["actmax"]:
        about = e.get("label") or f"channel {e['channel']}"
        name = save(folder, f"{out['arch']}_{e['layer']}_{e['channel']}.png".replace(" ", "_"), e["image"])
        cells.append(cell(name, f"{about} ({e['end']:.3g})", early_mark(e)))
    early = sum(e["stopped_early"] for e in out["actmax"])
    about = f" ({early} of {len(cells)} stopped early: the job's budget ran out)" if early else ""
    return table(f"{out['model']}: {layer or 'classes'}{about}", cells)


def per_image(args, folder: Path, image: Path) -> str:
    out = call(args, {"mode": "featuremaps,gradcam", "channels": "16"}, image)
    top = out["predictions"][0]
    cam = out["gradcam"]
    row = [
        cell(save(folder, f"{image.stem}_input{image.suffix}", base64.b64encode(image.read_bytes()).decode()),
             image.name),
        cell(save(folder, f"{image.stem}_gradcam.png", cam["image"]), f"Grad-CAM {cam['layer']}: {cam['label']}"),
    ] + [cell(save(folder, f"{image.stem}_{fm['layer']}.png", fm["image"]), f"feature maps {fm['layer']}")
         for fm in out["featuremaps"]]  # fmt: skip
    return table(f"{image.name}: {top['label']} ({top['score']:.2f})", row, wide=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("classes", "channels", "images"))
    p.add_argument("images", nargs="?", help="images: a folder of images")
    p.add_argument("--model", default="alexnet_viz")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--channel", default="0-7", help="classes or channels: 3, 3,7,9, 0-15, or class labels")
    p.add_argument("--layers", default="", help="channels: comma list of layers")
    p.add_argument("--steps", type=int, default=128, help="optimization steps (default 128, the server's)")
    p.add_argument("--out", default="gallery")
    p.add_argument("--token")
    p.add_argument("--key-file", default=str(ROOT / "key_file.json"))
    args = p.parse_args()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    if args.kind == "classes":
        tables, about = [optimized(args, folder, None)], f"Class patterns (actmax, {args.steps} steps)."
    elif args.kind == "channels":
        layers = [name for name in args.layers.split(",") if name]
        if not layers:
            p.error("channels needs --layers")
        tables = [optimized(args, folder, layer) for layer in layers]
        about = f"Preferred images of channels {args.channel} (actmax, {args.steps} steps)."
    else:
        if not args.images or not Path(args.images).is_dir():
            p.error("images needs a folder of images")
        images = sorted(i for i in Path(args.images).iterdir() if i.suffix.lower() in IMAGE_SUFFIXES - {".npy"})
        tables, about = [per_image(args, folder, i) for i in images], "Top class, Grad-CAM and feature maps."
    (folder / "index.html").write_text(page(f"{args.model}: {args.kind}", about, tables))
    print(f"wrote {folder / 'index.html'} ({sum(t.count('<img') for t in tables)} pictures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
