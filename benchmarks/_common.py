"""Shared by the benchmark scripts: machine facts and rewriting one section of RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    mem = ""
    try:
        kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} cores{mem}, torch {torch.__version__}, {gpu}, {torch.get_num_threads()} torch threads"


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout.strip()
        return sha + (" (+ uncommitted src changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header(command: str, wall_s: float) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"- date: {now}\n- commit: {commit()}\n- machine: {machine()}\n- command: `{command}`\n"
            f"- wall time: {wall_s / 60:.1f} min\n")


def write_section(name: str, body: str) -> None:
    """Replace the text between <!-- name:begin --> and <!-- name:end --> (append the section if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# kdgen benchmark results\n\nEvery number here is printed by a script in this folder; none is edited by hand.\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def replacing(command, *args, **kwargs):
    """Run a kdgen command with overwrite=True: a benchmark reruns into its own folders, and a run left there is replaced."""
    return command(*args, overwrite=True, **kwargs)
