"""examples/quickstart.ipynb runs end to end on the synthetic world, as a user would run it, and
what it computed says the fact went, the rest stayed and reverting brought it back."""

import json
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "examples" / "quickstart.ipynb"


def test_the_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert 'os.environ.get("CODECUT_NOTEBOOK_MODEL", "world")' in code[0].source


def test_the_quickstart_runs_on_the_world(tmp_path, monkeypatch):
    monkeypatch.delenv("CODECUT_NOTEBOOK_MODEL", raising=False)
    run = tmp_path / "run"
    shutil.copytree(NOTEBOOK.parent, run, ignore=shutil.ignore_patterns("*.ipynb_checkpoints"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # One cell more, after the notebook's own: what it computed, as JSON.
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import json\n"
            "print(json.dumps({'model': MODEL, 'forgotten': bool(forgotten), 'kept': float(kept),\n"
            "    'before': before.correct.tolist(), 'attached': attached.correct.tolist(),\n"
            "    'after': after.correct.tolist(), 'reverted': reverted.correct.tolist(),\n"
            "    'target': is_target.tolist(), 'codes': plan.codes,\n"
            "    'card': card.to_dict()['rows']}))"
        )
    )
    client = NotebookClient(
        nb,
        timeout=300,  # per cell; the whole notebook takes well under a minute on an idle CPU
        kernel_name="python3",  # ipykernel's; jupyter_client starts it with this interpreter
        resources={"metadata": {"path": str(run)}},
    )
    client.execute()
    got = json.loads(nb.cells[-1].outputs[0]["text"])
    target = got["target"].index(True)
    assert got["model"] == "world" and got["codes"]
    assert got["before"][target] and not got["after"][target] and got["forgotten"]
    assert got["attached"] == got["before"]  # the bare bottleneck changes no answer
    assert got["reverted"] == got["before"]  # outside apply, the model is the one loaded
    others = [i for i in range(len(got["before"])) if i != target and got["before"][i]]
    assert sum(got["after"][i] for i in others) >= 0.9 * len(others)
    assert got["kept"] >= 0.9
    prompt = next(
        r for r in got["card"] if (r["probe"], r["variant"], r["group"], r["metric"])
        == ("format", "prompt", "forget", "accuracy")
    )  # fmt: skip
    assert prompt["clean"] == 1 and prompt["plan"] == 0
    assert (run / "forget_plan.json").exists()
    for png in ("card.png", "codes.png"):
        assert (run / png).read_bytes().startswith(b"\x89PNG")
    figures = [
        o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(figures) == 2  # the two plots shown inline
