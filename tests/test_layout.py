"""The package's shape: imports run one way (face -> probes' subpackages -> probes -> codebook ->
kernels -> core) with no loop anywhere, no library module is too long to read, and `import
codecut` is cheap and changes nothing in the process."""

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
# The layers, lowest first. A module may import its own layer and those below; the four
# subpackages of probes/ share a rank and must not import each other.
RANK = {"core": 0, "kernels": 1, "codebook": 2, "probes": 3,
        "selector": 4, "attacks": 4, "finetune": 4, "testing": 4, "face": 5}  # fmt: skip
# What a layer must not know even though it sits below: kernels know no models or facts,
# codebook knows no facts.
FORBIDDEN = {"kernels": {"codecut.core.models", "codecut.core.facts"},
             "codebook": {"codecut.core.facts"}}  # fmt: skip
LARGEST = 600  # lines a library module may have


def layer(module: str) -> str:
    """The layer of a codecut module: 'core', 'kernels', 'codebook', 'probes' (the modules
    directly in probes/: evaluate, plan, antisamples, formats, params), one of probes'
    subpackages ('selector', 'attacks', 'finetune', 'testing'), or 'face' (codecut's
    __init__, api, cli)."""
    parts = module.split(".")
    if parts[1:2] == ["core"]:
        return "core"
    if parts[1:2] in (["kernels"], ["codebook"]):
        return parts[1]
    if parts[1:2] == ["probes"]:
        sub = parts[2] if len(parts) > 2 else ""
        return sub if RANK.get(sub) == 4 and _is_package(f"codecut.probes.{sub}") else "probes"
    return "face"


def _is_package(name: str) -> bool:
    return (ROOT / "probes" / name.split(".")[2] / "__init__.py").exists()


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
    """Each import of `path` that goes against the layers, as 'module (layer) imports other
    (layer)': upward, sideways between probes' subpackages, or to what a layer must not know."""
    mine, bad = layer(module), []
    for other in sorted(imported(path, module)):
        theirs = layer(other)
        upward = RANK[theirs] > RANK[mine]
        sideways = RANK[mine] == RANK[theirs] == 4 and mine != theirs
        if upward or sideways or other in FORBIDDEN.get(mine, set()):
            bad.append(f"{module} ({mine}) imports {other} ({theirs})")
    return bad


def library() -> dict[str, Path]:
    return {module_name(p): p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each loop of imports found by a depth-first walk, as the modules along it."""
    found, state = [], {}  # state: 1 on the current path, 2 done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    return found


def test_imports_run_one_way():
    files = library()
    assert len(files) > 20
    found = [v for m, p in files.items() for v in violations(p, m)]
    assert found == []


def test_no_import_loop_not_even_through_a_function_level_import():
    """Every import counts, at the top, inside a function or under TYPE_CHECKING: a loop
    broken by moving one import into a function is still a loop."""
    files = library()
    graph = {m: {o for o in imported(p, m) if o in files} - {m} for m, p in files.items()}
    assert cycles(graph) == []


def test_the_loop_finder_sees_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_library_module_is_too_long_to_read():
    long = {m: n for m, p in library().items() if (n := len(p.read_text().splitlines())) > LARGEST}
    assert long == {}


def test_the_check_sees_an_upward_or_sideways_import(tmp_path, monkeypatch):
    # The checker must not be blind: an upward import in a lower layer is reported, and so is
    # one between two of probes' subpackages.
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    for folder in ("codebook", "codecut/core", "probes/attacks", "probes/selector"):
        (tmp_path / folder).mkdir(parents=True)
    for sub in ("attacks", "selector"):
        (tmp_path / "probes" / sub / "__init__.py").write_text("")
    (tmp_path / "codecut" / "cli.py").write_text("")
    (tmp_path / "probes" / "plan.py").write_text("")
    up = tmp_path / "codebook" / "bad.py"
    up.write_text("import codecut\nfrom codecut.probes import plan\nfrom codecut import cli\n")
    assert violations(up, "codecut.codebook.bad") == [
        "codecut.codebook.bad (codebook) imports codecut (face)",
        "codecut.codebook.bad (codebook) imports codecut.cli (face)",
        "codecut.codebook.bad (codebook) imports codecut.probes.plan (probes)",
    ]
    floor = tmp_path / "codecut" / "core" / "facts.py"
    floor.write_text("from codecut.codebook import bottleneck\n")
    assert violations(floor, "codecut.core.facts") == [
        "codecut.core.facts (core) imports codecut.codebook (codebook)"
    ]
    side = tmp_path / "probes" / "attacks" / "bad.py"
    side.write_text("def f():\n    from codecut.probes.selector import search\n")
    (tmp_path / "probes" / "selector" / "search.py").write_text("")
    assert violations(side, "codecut.probes.attacks.bad") == [
        "codecut.probes.attacks.bad (attacks) imports codecut.probes.selector.search (selector)"
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
