"""The machine a benchmark ran on, as its result files name it (`from machine import machine`:
the scripts run as `python benchmarks/NAME.py`, this folder first on the path)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def machine() -> str:
    """The GPU's name when there is one, else the processor model, cores and torch threads."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, no GPU"
