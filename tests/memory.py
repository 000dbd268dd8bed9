"""Peak memory and time of requests, measured in a process of their own: the resident set's high-water mark over each
request, above what the process held just before it.

Linux only (``/proc/self/status``'s ``VmHWM``, reset by writing 5 to ``/proc/self/clear_refs``). The process is new
(nothing another test freed is reused), large blocks are mapped and unmapped as they are allocated and freed
(``MALLOC_MMAP_THRESHOLD_``, so that a freed tensor leaves the resident set), each request runs once to warm up, and
``malloc_trim`` hands back what the warm-up freed before the measured run. Torch runs on one thread there (its
calibration too), so that the time is the request's own on a loaded machine as far as can be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_RUNNER = """
import ctypes, json, sys, time
sys.path[:0] = [{root!r}, {handlers!r}]

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)

{setup}

def measure(fn):
    fn()  # warm-up: kernels, caches, lazily made tables
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = rss("VmRSS")
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss("VmHWM") - base, seconds

out = {{}}
for name, fn in CASES.items():
    peak, seconds = measure(fn)
    out[name] = {{"peak": peak, "seconds": seconds, **EXTRA.get(name, {{}})}}
print(json.dumps(out))
"""


def supported() -> bool:
    return Path("/proc/self/clear_refs").exists() and sys.platform.startswith("linux")


def measured(setup: str, timeout: float = 600) -> dict:
    """Run ``setup`` (Python that defines ``CASES``, name -> a function of no arguments, and ``EXTRA``, name -> a
    dict to report with it) in a new process; return name -> ``{"peak": bytes above the level before the measured
    run, "seconds": that run's time, **EXTRA[name]}``."""
    code = _RUNNER.format(root=str(ROOT), handlers=str(ROOT / "handlers"), setup=textwrap.dedent(setup))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
