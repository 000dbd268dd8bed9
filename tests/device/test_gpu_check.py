"""scripts/gpu_check.sh's CPU fallback: the same steps as on a GPU (the CUDA lane, skipped with its reason; every
measurement on small sizes), one JSON and one Markdown table. Its plumbing only: no GPU figure comes of it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_cpu_fallback_runs_every_step_and_writes_its_json_and_table(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}  # as the device tool's $OUT; no GPU
    done = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--quick", "--no-torchserve"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=170)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {"lane.xml", "lane.log", "gpu_check.json", "gpu_check.md", "gpu_check.log"} <= {
        p.name for p in tmp_path.iterdir()
    }
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["errors"] == {} and result["sizes"]["quick"] and "gpu" not in result["environment"]
    lane = result["lane"]
    assert lane["ran"] and lane["passed"] == 0 and lane["failures"] == lane["errors"] == 0
    assert lane["skipped"] == lane["tests"] >= 10
    assert {c["message"] for c in lane["cases"]} <= {"needs a CUDA GPU; none is present",
                                                     "needs two CUDA GPUs; this machine has fewer"}  # fmt: skip
    for mode in ("classify", "gradcam"):
        bench = result["requests"][mode]
        assert bench["lone"]["ours"]["median_ms"] > 0 and bench["lone"]["plain"]["median_ms"] > 0
        assert bench["throughput"]["requests_per_s"]["ours"] > 0
    act = result["actmax"]
    assert act["bf16_peak_tflops"] > 0 and set(act["targets"]) == {"1", "2"}
    assert all(a["steps_per_s"] > 0 and 0 < a["fraction_of_bf16_peak"] < 1 for a in act["targets"].values())
    every = result["every_class"]
    assert every["exit"] == 0 and every["classes"] == every["asked"] == 6 and every["gallery"]
    memory = result["memory"]
    assert memory["jobs"] == 5 and memory["before"]["resident"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.startswith("Device: CPU fallback (no CUDA)") and "no GPU figures" in table.splitlines()[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0] == "| check | ours | reference | ratio |"
    starts = ("| CUDA lane (`-m gpu`) | 0 passed, 0 failed,", "| classify shapes, lone request", "| gradcam shapes,",
              "| actmax shapes, 1 classes", "| every_class.py, 6 classes", "| memory over 5 actmax jobs")  # fmt: skip
    for start in starts:
        assert any(row.startswith(start) for row in rows), (start, table)
