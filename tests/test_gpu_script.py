"""benchmarks/gpu.py, the one prepared GPU check, at toy sizes on the CPU, so it never rots.

It runs as the GPU machine would run it: codecut not installed (the editable install's finder is
taken out, so the script's own import shim must find the working tree) and transformer-lens,
sae-lens, gguf and hypothesis missing.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.py"
# Started as `python benchmarks/gpu.py ...` would be (its folder first on sys.path), minus what
# the GPU machine lacks.
RUNNER = """
import runpy, sys
for name in ("transformer_lens", "sae_lens", "gguf", "hypothesis"):
    sys.modules[name] = None  # importing it fails
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__ + repr(f)]
script, *args = sys.argv[1:]
sys.path[0] = str(__import__("pathlib").Path(script).parent)
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""
SECTIONS = ("correctness", "kernels", "training", "attached", "replay")


def run(out: Path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "CODECUT_KERNELS")}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(SCRIPT), "--toy", "--out", str(out), *args],
        cwd=out.parent,  # not the repository root: nothing found there by accident
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (out / "gpu.md").is_file()
    return json.loads((out / "gpu.json").read_text())


def finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def test_the_toy_run_measures_every_section(tmp_path):
    data = run(tmp_path / "out")
    assert data["toy"] and data["triton_interpreted"]
    assert data["codecut_from"] == f"{ROOT} (not installed: the working tree, by the import shim)"
    assert finite(data["machine"]["copy_gbps"]) and finite(data["machine"]["matmul_tflops"])
    s = data["sections"]
    assert set(SECTIONS) <= set(s) and all(s[name] for name in SECTIONS)

    checks = s["correctness"]
    assert {c["op"] for c in checks} == {
        "topk_encode",
        "topk_encode backward",
        "sparse_decode",
        "sparse_decode backward",
    }
    assert sum("real size" in c["case"] for c in checks) == 8
    assert all(c["passed"] and c["status"] == "ok" for c in checks), checks
    assert all(finite(c["max_abs"]) and finite(c["max_rel"]) for c in checks)

    for name in ("kernels", "training", "attached"):
        for row in s[name]:
            assert row["status"] == "ok", row
            assert finite(row["ms"]) and row["ms"] > 0, row
    assert {(r["op"], r["impl"]) for r in s["kernels"]} == {
        ("decode", "codecut (torch)"),
        ("decode", "dense torch"),
        ("decode", "F.embedding_bag"),
        ("encode", "codecut (torch)"),
        ("encode", "matmul + torch.topk"),
    }
    assert all(finite(r["gbps"]) and finite(r["vs_dense"]) for r in s["kernels"])
    assert all(finite(r["tokens_per_s"]) and finite(r["vs_dense"]) for r in s["training"])
    assert all(finite(r["ratio"]) for r in s["attached"])
    # With the error term and nothing cut, the model's outputs are exactly the bare model's.
    error_term = [r for r in s["attached"] if r["setup"] == "attached (error term)"]
    assert error_term and all(r["logits_max_diff"] == 0 for r in error_term)

    goals = data["goals"]
    assert goals and all(g["met"] in (True, False, None) for g in goals)
    replay = s["replay"]
    assert [r["status"] for r in replay] == ["ok"]
    assert replay[0]["passes"] == 12 and replay[0]["with_gradients"] >= 1
    assert finite(replay[0]["seconds"]) and replay[0]["seconds"] > 0
    assert goals[-1]["met"] is not None and goals[-1]["goal"].startswith("a request's replayed")
    assert all(g["met"] is not None for g in goals if "decode" in g["goal"])
    markdown = (tmp_path / "out" / "gpu.md").read_text()
    assert "## 4. Attached forward" in markdown and "## 5. A request's model work" in markdown
    assert (tmp_path / "out" / "gpu.png").stat().st_size > 0


def test_the_time_guard_skips_and_still_writes(tmp_path):
    # A budget already spent when the first unit would start: every unit is skipped, recorded.
    data = run(tmp_path / "out", "--budget", "0")
    for name in SECTIONS:
        assert data["sections"][name], name
        assert all(row["status"] == "skipped: time" for row in data["sections"][name])
    assert all(g["met"] is None for g in data["goals"])
