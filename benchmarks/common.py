"""What the benchmark scripts share: the results folder, the machine a run names, the command
line it records, a results page's first lines, and writing a result as JSON, markdown and PNG.

The scripts run as `python benchmarks/NAME.py`, this folder first on the path, so they import
it as `from common import ...`. Markdown tables: `codecut.core.io.markdown_table`.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch
from codecut.probes.attacks.figures import save
from matplotlib.figure import Figure

from codecut.core.io import write_text
from codecut.core.models import DEFAULT_MODEL

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parent / "data"


def per_model(stem: str, model: str) -> str:
    """The name of a data or result file made for `model`: `stem` for the default model,
    `stem_<model>` for another (country_facts_gemma3-270m, unlearn_compare_gemma3-270m)."""
    return stem if model == DEFAULT_MODEL else f"{stem}_{model}"


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


def command_line(script: str) -> str:
    """The command that ran `script` (its `__file__`), as `python benchmarks/NAME.py ARGS`."""
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *sys.argv[1:]])


def heading(title: str, command: str) -> str:
    """A results page's first lines: `title` with the machine named, then `command`."""
    return f"# {title} ({machine()})\n\n    {command}\n\n"


def bullets(summary: dict) -> str:
    """A summary as a markdown list, floats to three decimals."""
    return "\n".join(
        f"- {k}: {v:.3f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in summary.items()
    )


def write_json(path: Path, data: dict) -> None:
    """`data` as indented JSON at `path`, atomically."""
    write_text(path, json.dumps(data, indent=1) + "\n")


def write_files(stem: Path, data: dict, markdown: str, figure: Figure | None = None) -> None:
    """`stem`.json, `stem`.md and, given a figure, `stem`.png, each written atomically."""
    write_json(stem.with_name(f"{stem.name}.json"), data)
    write_text(stem.with_name(f"{stem.name}.md"), markdown)
    if figure is not None:
        save(figure, stem.with_name(f"{stem.name}.png"))
