"""The measurements of the one-shot device check (scripts/gpu_check.sh runs the CUDA lane first, then this).

In-process, on the first CUDA device (the CPU where there is none: the same code on small sizes, its CPU fallback):

- classify and gradcam: latency of a lone request (median and p90 over ``--rounds``) and throughput (batches of 8
  requests, as TorchServe batches them), ours (``VizService.handle``, JPEG in, JSON out) against torchvision's
  plain pipeline (PIL decode, the weights' own transform, the forward pass, softmax top-5; for gradcam plus one
  backward pass of the top class with a hook at the CAM layer: the floor of any Grad-CAM). Against TorchServe's
  stock handler itself only where Java and TorchServe are installed (``bench/latency.py``, classify).
- actmax: steps per second at the service's defaults (128 px, 2 transformed copies, fft, Adam, bfloat16 where
  native) for 1, 16 and 64 classes in one batch, and the fraction of the device's bfloat16 peak (the best of a few
  large bfloat16 matrix products) that the step's FLOPs (forward and backward, counted by torch's
  FlopCounterMode) reach.
- every_class: 64 classes as one run of ``clients/every_class.py`` (its real client, the batches, manifest and
  gallery), talking to a service with a job scheduler in this process instead of over HTTP.
- memory: the device's allocated and reserved memory before and after 100 actmax jobs through the scheduler.

Writes ``gpu_check.json`` (everything, with the lane's results from its JUnit XML) and ``gpu_check.md`` (the table
for the README) into ``--out``.

Run: scripts/gpu_check.sh [OUT] (it calls this); ``--fake-cuda`` dry-runs the CUDA branch on the fake device of
tests/fakecuda.py (code paths only, no GPU figures).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import io
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "handlers")]

import torch  # noqa: E402

# -- sizes: the GPU check, and the CPU fallback's small ones -----------------------------------------------------

FULL = {"model": "alexnet", "rounds": 50, "batches": 10, "batch": 8, "actmax_targets": (1, 16, 64), "steps": 20,
        "classes": 64, "class_steps": 128, "jobs": 100, "job_steps": 8, "peak_n": 8192}  # fmt: skip
QUICK = {"model": "shapes", "rounds": 3, "batches": 2, "batch": 4, "actmax_targets": (1, 2), "steps": 2,
         "classes": 6, "class_steps": 3, "jobs": 5, "job_steps": 2, "peak_n": 1024}  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, rounds: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(rounds):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (a CPU fallback's TFLOP/s are thousandths)."""
    return float(f"{x:.{digits}g}")


def summary(seconds: list[float]) -> dict[str, float]:
    p90 = statistics.quantiles(seconds, n=10)[-1] if len(seconds) >= 2 else seconds[0]
    return {"median_ms": round(statistics.median(seconds) * 1000, 2), "p90_ms": round(p90 * 1000, 2)}


# -- the environment ---------------------------------------------------------------------------------------------


def _module_version(name: str) -> str | None:
    try:
        return importlib.import_module(name).__version__
    except ImportError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    def have(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _module_version("torchvision"),
        "cuda": torch.version.cuda,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "present": {
            "java": shutil.which("java") is not None,
            "torchserve": have("ts"),
            "captum": have("captum"),
            "av": have("av"),
            "psutil": have("psutil"),
        },  # fmt: skip
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(
            gpu=p.name, gpus=torch.cuda.device_count(), capability=f"{p.major}.{p.minor}",
            memory_gib=round(p.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version(),
        )  # fmt: skip
    return env


# -- classify and gradcam: ours against the plain pipeline -------------------------------------------------------


def plain_pipeline(arch: str, svc, device: torch.device):
    """torchvision's own way, as TorchServe's stock image classifier does it: decode, the weights' transform,
    forward, softmax top-5 (``gradcam``: and one backward of the top class, a hook at the CAM layer)."""
    from PIL import Image

    from cnnviz import imagenet_weights

    model = svc.model
    transform = svc.served.transform if arch == "shapes" else imagenet_weights(arch).transforms()
    layer = dict(model.named_modules())[svc.spec.cam_layer]

    def inputs(images: list[bytes]) -> torch.Tensor:
        return torch.stack([transform(Image.open(io.BytesIO(b)).convert("RGB")) for b in images]).to(device)

    def classify(images: list[bytes]):
        with torch.inference_mode():
            probs = model(inputs(images)).softmax(-1)
            return probs.topk(min(5, probs.shape[-1])).indices.cpu()

    def gradcam(images: list[bytes]):
        kept = {}
        handle = layer.register_forward_hook(lambda m, a, o: kept.update(out=o))
        try:
            logits = model(inputs(images))
            top = logits.argmax(-1)
            grads = torch.autograd.grad(logits.gather(1, top[:, None]).sum(), kept["out"])[0]
            cam = torch.relu((grads.mean((2, 3), keepdim=True) * kept["out"]).sum(1))
            return cam.detach().cpu()
        finally:
            handle.remove()

    return classify, gradcam


def requests_bench(arch: str, device: torch.device, sizes: dict) -> dict[str, Any]:
    from tests.device.lane import input_for, service_for

    svc = service_for(arch, device)
    data = input_for(svc)
    classify, gradcam = plain_pipeline(arch, svc, device)
    out: dict[str, Any] = {"model": arch, "input": "a 320 x 240 JPEG" if arch != "shapes" else "a 64 x 64 PNG"}
    batch = sizes["batch"]
    for mode, plain in (("classify", classify), ("gradcam", gradcam)):
        fields = {"data": data} if mode == "classify" else {"data": data, "mode": "gradcam"}

        def ours(n: int, fields=fields) -> None:
            replies = svc.handle([fields] * n)
            assert all(r.status == 200 for r in replies), replies[0].body[:200]

        lone_ours = timed(lambda: ours(1), device, sizes["rounds"])
        lone_plain = timed(lambda p=plain: p([data]), device, sizes["rounds"])
        many_ours = timed(lambda: ours(batch), device, sizes["batches"])
        many_plain = timed(lambda p=plain: p([data] * batch), device, sizes["batches"])
        rate = {k: round(batch / statistics.median(v), 1) for k, v in (("ours", many_ours), ("plain", many_plain))}
        out[mode] = {
            "lone": {"ours": summary(lone_ours), "plain": summary(lone_plain),
                     "ratio": round(statistics.median(lone_ours) / statistics.median(lone_plain), 2)},
            "throughput": {"batch": batch, "requests_per_s": rate, "ratio": round(rate["ours"] / rate["plain"], 2)},
        }  # fmt: skip
    return out


# -- actmax: steps per second, and the fraction of the bfloat16 peak ----------------------------------------------


def matmul_peak(device: torch.device, n: int, dtype: torch.dtype = torch.bfloat16, repeats: int = 5) -> float:
    """FLOP/s of ``n x n`` matrix products in ``dtype``, the best of ``repeats`` (after one warm-up)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = min(timed(lambda: a @ b, device, repeats, warmup=1))
    return 2 * n**3 / best


def actmax_bench(arch: str, device: torch.device, sizes: dict) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from cnnviz import shared_copy
    from tests.device.lane import service_for
    from vizserve.modes import MODES
    from vizserve.request import parse_request

    svc = service_for(arch, device)
    peak = matmul_peak(device, sizes["peak_n"])
    out: dict[str, Any] = {"model": arch, "bf16_peak_tflops": sig(peak / 1e12), "targets": {}}
    for k in sizes["actmax_targets"]:
        k = min(k, len(svc.spec.labels))
        fields = {"mode": "actmax", "channel": f"0-{k - 1}" if k > 1 else "0"}
        values = parse_request(fields, svc.served).values["actmax"]
        served = dataclasses.replace(svc.served, model=shared_copy(svc.model))  # hooks of its own, as a job's
        with torch.inference_mode(False):
            opt = MODES["actmax"].start(served, values, None)
            try:
                times = timed(opt.step, device, sizes["steps"], warmup=3)
                with FlopCounterMode(display=False) as counter:
                    opt.step()
                flops = counter.get_total_flops()
            finally:
                opt.close()
        step = statistics.median(times)
        out["targets"][str(k)] = {
            "precision": opt.cfg.precision, "size": values["size"], "copies": values["copies"],
            "step_ms": round(step * 1000, 2), "steps_per_s": round(1 / step, 1),
            "images_per_s": round(k / step, 1), "gflop_per_step": round(flops / 1e9, 2),
            "tflops": sig(flops / step / 1e12), "fraction_of_bf16_peak": sig(flops / step / peak, 3),
        }  # fmt: skip
    return out


# -- every_class, and memory over many jobs: a service with a job scheduler -----------------------------------------


@contextlib.contextmanager
def job_service(arch: str, device: torch.device, folder: Path):
    from tests.device.lane import archive_folder
    from vizserve import load_service

    archive_folder(arch, folder / "archive")
    threads = torch.get_num_threads()
    svc = load_service(folder / "archive", {"jobs": {"dir": str(folder / "jobs"), "max_jobs": 4}}, device=device,
                       name=f"{arch}_viz", jobs=True)  # fmt: skip
    try:
        yield svc
    finally:
        svc.jobs.stop()
        torch.set_num_threads(threads)


class InProcess:
    """clients/every_class.py's endpoint (describe, submit, poll) answered by a service in this process."""

    def __init__(self, svc, poll_s: float = 0.05) -> None:
        self.svc, self.poll_s = svc, poll_s

    @staticmethod
    def response(reply):
        import requests

        r = requests.Response()
        r.status_code, r._content = reply.status, reply.body
        r.headers.update({"Content-Type": reply.content_type, **dict(reply.headers)})
        return r

    def describe(self) -> dict:
        [reply] = self.svc.handle([{"mode": "describe"}])
        return json.loads(reply.body)

    def submit(self, fields: dict):
        [reply] = self.svc.handle([fields])
        return self.response(reply)

    def poll(self, job: str):
        """One poll, as every_class.py's endpoints answer it (the client loops)."""
        [reply] = self.svc.handle([{"job": job}])
        return self.response(reply)


def every_class_bench(svc, sizes: dict, folder: Path) -> dict[str, Any]:
    from clients import every_class

    n = min(sizes["classes"], len(svc.spec.labels))
    args = every_class.parser().parse_args(
        ["--out", str(folder / "classes"), "--batch", str(n), "--steps", str(sizes["class_steps"]),
         "--max-batches", "1", "--poll", "0.05"]
    )  # fmt: skip
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its summary line
        code = every_class.EveryClass(args, InProcess(svc), stream=io.StringIO()).run()
    seconds = time.perf_counter() - t0
    manifest = json.loads((folder / "classes" / "manifest.json").read_text())
    return {
        "exit": code, "classes": manifest["done"], "asked": n, "steps": sizes["class_steps"],
        "stopped_early": manifest["stopped_early"], "seconds": round(seconds, 2),
        "classes_per_s": round(manifest["done"] / seconds, 2),
        "gallery": (folder / "classes" / "index.html").exists(),
    }  # fmt: skip


def memory_bench(svc, device: torch.device, sizes: dict) -> dict[str, Any]:
    """Allocated and reserved device memory (CPU: the process's resident memory) after one warm-up job and after
    ``sizes["jobs"]`` more, one at a time."""

    def job() -> None:
        [accepted] = svc.handle([{"mode": "actmax", "channel": "0-3", "steps": str(sizes["job_steps"])}])
        assert accepted.status == 202, accepted.body[:200]
        ident = json.loads(accepted.body)["job"]
        while (reply := svc.handle([{"job": ident}])[0]).status == 202:
            time.sleep(0.01)
        assert reply.status == 200, reply.body[:200]

    def reading() -> dict[str, int]:
        gc.collect()
        sync(device)
        if device.type == "cuda":
            return {"allocated": torch.cuda.memory_allocated(device), "reserved": torch.cuda.memory_reserved(device),
                    "peak_allocated": torch.cuda.max_memory_allocated(device)}  # fmt: skip
        import psutil

        return {"resident": psutil.Process().memory_info().rss}

    job()
    before = reading()
    t0 = time.perf_counter()
    for _ in range(sizes["jobs"]):
        job()
    seconds = time.perf_counter() - t0
    after = reading()
    key = "allocated" if device.type == "cuda" else "resident"
    return {"jobs": sizes["jobs"], "seconds": round(seconds, 2), "before": before, "after": after,
            "growth_bytes": after[key] - before[key]}  # fmt: skip


# -- the CUDA lane's results, from its JUnit XML -------------------------------------------------------------------


def lane_results(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {"ran": False}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    cases = []
    for case in suite.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or node.text or "")[:600]
                break
        entry = {"test": f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}", "outcome": outcome,
                 "seconds": float(case.get("time", 0))}  # fmt: skip
        if outcome != "passed":
            entry["message"] = message
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if props:
            entry["properties"] = {k: _maybe_json(v) for k, v in props.items()}
        cases.append(entry)
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"ran": True, **counts, "cases": cases}


def _maybe_json(text: str):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


# -- TorchServe, where it can run ----------------------------------------------------------------------------------


def torchserve_bench(out: Path, seconds: float) -> dict[str, Any]:
    if shutil.which("java") is None or importlib.util.find_spec("ts") is None:
        return {"ran": False, "why": "no Java and TorchServe here: classify and gradcam are compared in-process with "
                "torchvision's plain pipeline instead"}  # fmt: skip
    cmd = [sys.executable, str(ROOT / "bench" / "latency.py"), "--rounds", "40", "--big-rounds", "8", "--block", "10",
           "--seconds", "5", "--repeats", "1", "--out", str(out / "latency.json")]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return {"ran": False, "why": f"bench/latency.py took over {seconds:.0f} s"}
    if done.returncode != 0:
        return {"ran": False, "why": f"bench/latency.py failed: {done.stderr[-600:]}"}
    return {"ran": True, **json.loads((out / "latency.json").read_text())}


# -- the report ----------------------------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    env = result["environment"]
    where = (f"{env['gpu']} ({env['capability']}, {env['memory_gib']} GiB), CUDA {env['cuda']}, torch "
             f"{env['torch']}" if "gpu" in env else f"CPU fallback (no CUDA), {env['cpu_threads']} threads, "
             f"torch {env['torch']}: small sizes, plumbing only, no GPU figures")  # fmt: skip
    lines = [f"Device: {where}.", "", "| check | ours | reference | ratio |", "|---|---|---|---|"]
    lane = result["lane"]
    if lane.get("ran"):
        note = ", ".join(c["test"] for c in lane["cases"] if c["outcome"] in ("failed", "error")) or "none failed"
        lines.append(f"| CUDA lane (`-m gpu`) | {lane['passed']} passed, {lane['failures'] + lane['errors']} failed, "
                     f"{lane['skipped']} skipped | {note} | |")  # fmt: skip
        for case in lane["cases"]:
            diff = case.get("properties", {}).get("max_relative_difference")
            if diff:
                worst = max(diff.values())
                lines.append(f"| {case['test']}: largest map difference from the CPU's | {worst:.2e} | "
                             f"tolerance 2e-3 | |")  # fmt: skip
    bench = result.get("requests")
    if bench:
        for mode in ("classify", "gradcam"):
            b = bench[mode]
            lines.append(f"| {mode} {bench['model']}, lone request, median (p90) ms | {b['lone']['ours']['median_ms']} "
                         f"({b['lone']['ours']['p90_ms']}) | plain torchvision {b['lone']['plain']['median_ms']} "
                         f"({b['lone']['plain']['p90_ms']}) | {b['lone']['ratio']:.2f} |")  # fmt: skip
            t = b["throughput"]
            lines.append(
                f"| {mode} {bench['model']}, batches of {t['batch']}, requests/s | "
                f"{t['requests_per_s']['ours']} | {t['requests_per_s']['plain']} | {t['ratio']:.2f} |"
            )
    ts = result.get("torchserve", {})
    if ts.get("ran"):
        med = ts["lone"]["median_ms"]
        lines.append(
            f"| classify alexnet through TorchServe, lone, median ms | {med.get('ours')} | stock handler "
            f"{med.get('stock default')} | {ts['lone']['ratio_to_stock_default'].get('ours')} |"
        )
    act = result.get("actmax")
    if act:
        for k, a in act["targets"].items():
            lines.append(f"| actmax {act['model']}, {k} classes at {a['size']} px, {a['copies']} copies, "
                         f"{a['precision']}: steps/s | {a['steps_per_s']} ({a['images_per_s']} images/s) | "
                         f"{a['tflops']} TFLOP/s of {act['bf16_peak_tflops']} bf16 peak | "
                         f"{a['fraction_of_bf16_peak']:.1%} |")  # fmt: skip
    ec = result.get("every_class")
    if ec:
        lines.append(f"| every_class.py, {ec['asked']} classes x {ec['steps']} steps, one job | {ec['seconds']} s, "
                     f"{ec['classes']} done, {ec['stopped_early']} stopped early | | |")  # fmt: skip
    mem = result.get("memory")
    if mem:
        unit = "allocated" if "allocated" in mem["before"] else "resident"
        lines.append(f"| memory over {mem['jobs']} actmax jobs ({unit}), MiB before -> after | "
                     f"{mem['before'][unit] / 2**20:.1f} -> {mem['after'][unit] / 2**20:.1f} | growth "
                     f"{mem['growth_bytes'] / 2**20:+.1f} MiB | |")  # fmt: skip
        if "reserved" in mem["after"]:
            lines.append(f"| reserved after the jobs (cache given back after each job) | "
                         f"{mem['after']['reserved'] / 2**20:.1f} MiB | peak allocated "
                         f"{mem['after']['peak_allocated'] / 2**20:.1f} MiB | |")  # fmt: skip
    for name, why in result.get("errors", {}).items():
        lines.append(f"| {name} | failed: {why[:160]} | | |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--lane", help="the CUDA lane's JUnit XML (scripts/gpu_check.sh writes it)")
    p.add_argument("--quick", action="store_true", help="the CPU fallback's small sizes (default without CUDA)")
    p.add_argument("--no-torchserve", action="store_true", help="skip bench/latency.py even where it could run")
    p.add_argument("--fake-cuda", action="store_true", help="dry-run the CUDA branch on tests/fakecuda.py's device")
    p.add_argument("--model", choices=("alexnet", "resnet18", "shapes"), help="instead of the sizes' model")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if args.fake_cuda:
            from tests.fakecuda import fake_cuda

            stack.enter_context(fake_cuda(count=1))
        cuda = torch.cuda.is_available()
        device = torch.device("cuda", 0) if cuda else torch.device("cpu")
        sizes = QUICK if (args.quick or not cuda or args.fake_cuda) else FULL
        sizes = {**sizes, "model": args.model or sizes["model"]}
        lane = lane_results(Path(args.lane) if args.lane else None)
        quick = sizes["rounds"] == QUICK["rounds"]
        result: dict[str, Any] = {"environment": environment(device), "sizes": {**sizes, "quick": quick},
                                  "lane": lane, "errors": {}}  # fmt: skip
        if device.type == "cuda":
            torch.cuda.set_device(device)

        def measure(name: str, fn) -> None:
            """One measurement; the files are written after each, so a run stopped at its time cap keeps them."""
            t0 = time.perf_counter()
            try:
                result[name] = fn()
            except Exception as exc:  # one failed measurement still leaves the others and the table
                result["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
            (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
            (out / "gpu_check.md").write_text(table(result))

        measure("requests", lambda: requests_bench(sizes["model"], device, sizes))
        measure("actmax", lambda: actmax_bench(sizes["model"], device, sizes))
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
            try:
                with job_service(sizes["model"], device, Path(tmp)) as svc:
                    measure("every_class", lambda: every_class_bench(svc, sizes, Path(tmp)))
                    measure("memory", lambda: memory_bench(svc, device, sizes))
            except Exception as exc:
                result["errors"]["job_service"] = f"{type(exc).__name__}: {exc}"
        if not args.no_torchserve and not args.fake_cuda:
            measure("torchserve", lambda: torchserve_bench(out, 240))
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    text = table(result)
    (out / "gpu_check.md").write_text(text)
    print(text)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
