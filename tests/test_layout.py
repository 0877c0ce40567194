"""The package's shape: imports run one way (face -> probes -> codebook -> kernels, plus the leaf
modules), and `import codecut` is cheap and changes nothing in the process."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import codecut

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"codecut": "codecut", "codebook": "codecut.codebook", "kernels": "codecut.kernels",
           "probes": "codecut.probes"}  # fmt: skip
LEAVES = {"codecut.models", "codecut.facts", "codecut.io", "codecut.errors"}
RANK = {"kernels": 1, "codebook": 2, "probes": 3, "face": 4}
# What a layer must not know even though it sits below: kernels know no models or facts,
# codebook knows no facts.
FORBIDDEN_LEAVES = {"kernels": {"codecut.models", "codecut.facts"}, "codebook": {"codecut.facts"}}


def layer(module: str) -> str:
    """'leaf', 'kernels', 'codebook', 'probes' or 'face' (codecut's __init__, cli, api, ...)."""
    if module in LEAVES:
        return "leaf"
    for name in ("kernels", "codebook", "probes"):
        if module == f"codecut.{name}" or module.startswith(f"codecut.{name}."):
            return name
    return "face"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:-1]]
    if rel.stem != "__init__":
        parts.append(rel.stem)
    return ".".join(parts)


def imported(path: Path, module: str) -> set[str]:
    """The codecut modules that `path` (module `module`) imports, anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from codecut import x` imports the submodule codecut.x if there is one, else
            # the package itself
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if _is_module(sub) else base)
    return {m for m in found if m == "codecut" or m.startswith("codecut.")}


def _is_module(name: str) -> bool:
    """Whether `name` (codecut.x.y) is a module or package of this repository."""
    parts = name.split(".")[1:]
    base = ROOT / "codecut"
    if parts and parts[0] in ("codebook", "kernels", "probes"):  # folders mapped into codecut
        base, parts = ROOT / parts[0], parts[1:]
    target = base.joinpath(*parts)
    return target.with_suffix(".py").exists() or (target / "__init__.py").exists()


def violations(path: Path, module: str) -> list[str]:
    """Each import of `path` that goes against the direction, as 'module imports other'."""
    mine, bad = layer(module), []
    for other in sorted(imported(path, module)):
        theirs = layer(other)
        if mine == "leaf":
            wrong = theirs != "leaf"
        elif theirs == "leaf":
            wrong = other in FORBIDDEN_LEAVES.get(mine, set())
        else:
            wrong = mine != "face" and RANK[theirs] > RANK[mine]
        if wrong:
            bad.append(f"{module} ({mine}) imports {other} ({theirs})")
    return bad


def test_imports_run_one_way():
    files = [p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")]
    assert len(files) > 20
    found = [v for p in files for v in violations(p, module_name(p))]
    assert found == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    # The checker must not be blind: an upward import in a lower layer is reported.
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "codebook").mkdir()
    (tmp_path / "codecut").mkdir()
    (tmp_path / "codecut" / "cli.py").write_text("")
    up = tmp_path / "codebook" / "bad.py"
    up.write_text("import codecut\nfrom codecut.probes import plan\nfrom codecut import cli\n")
    assert violations(up, "codecut.codebook.bad") == [
        "codecut.codebook.bad (codebook) imports codecut (face)",
        "codecut.codebook.bad (codebook) imports codecut.cli (face)",
        "codecut.codebook.bad (codebook) imports codecut.probes (probes)",
    ]
    leaf = tmp_path / "codecut" / "facts.py"
    leaf.write_text("from codecut.codebook import bottleneck\n")
    assert violations(leaf, "codecut.facts") == [
        "codecut.facts (leaf) imports codecut.codebook (codebook)"
    ]


def test_import_codecut_is_lazy_and_sets_no_environment():
    code = (
        "import os, sys, json; before = dict(os.environ); import codecut; "
        "print(json.dumps({'env': dict(os.environ) == before, "
        "'heavy': sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules)}))"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {"env": True, "heavy": []}


def test_every_public_name_resolves():
    assert sorted(codecut.__all__) == sorted([*codecut._EXPORTS, *codecut._SUBPACKAGES])
    for name in codecut.__all__:
        assert getattr(codecut, name) is not None
    assert codecut.attach.__module__ == "codecut.api"  # the converting public version


def test_the_plan_format_and_the_selectors_types_do_not_import_the_search():
    """The attack suite and the fine-tuning mode read plans; the plan file format and the types
    it holds must not pull the search in with them (they once did: plan.py took `Selection`
    from search.py)."""
    for name in ("plan", "selection", "retain_cache"):
        path = ROOT / "probes" / f"{name}.py"
        found = imported(path, f"codecut.probes.{name}")
        assert not found & {"codecut.probes.search", "codecut.probes.unlearn"}, (name, found)
