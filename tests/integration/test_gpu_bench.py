"""benchmarks/gpu.py --quick on CPU: every cell it runs has a finite positive steps/s, and the markdown has a row per cell."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_quick_runs_every_cell(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = json.loads((out / "gpu.json").read_text())
    cells = raw["cells"]
    ran = {(c["kind"], c["precision"], c["mode"]) for c in cells}
    precisions = ["fp32", "bf16"] + (["fp16"] if torch.cuda.is_available() else [])
    expected = {(k, p, "eager") for k in ("gan", "diffusion", "classifier") for p in precisions}
    expected |= {("classifier", p, "compiled") for p in precisions}  # --quick compiles only the classifier's MLP
    assert ran == expected and len(cells) == len(expected)
    for c in cells:
        assert math.isfinite(c["steps_per_s"]) and c["steps_per_s"] > 0, c
        assert c["timed_steps"] == raw["steps"] - raw["warmup"] > 0
    assert not raw["failed"] and raw["demo"] is None  # the demo at full length is not part of --quick
    if not torch.cuda.is_available():
        assert any("fp16" in s for s in raw["skipped"])

    md = (out / "gpu.md").read_text()
    assert md.rstrip() == proc.stdout[proc.stdout.index("## Training speed"):].rstrip()  # what it printed is what it wrote
    head = "| method kind | precision | mode |"
    table = md[md.index(head):].split("\n\n")[0].splitlines()
    rows = [line.split("|")[1:4] for line in table[2:]]
    assert sorted(tuple(x.strip() for x in r) for r in rows) == sorted(ran)
    assert (out / "cells" / "gan-fp32-eager" / "student").is_dir()
