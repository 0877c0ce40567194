"""The synthetic world the tests and benchmarks use: fictitious facts, a small model trained on
them, its bottlenecks, and the committed fixtures (`fixtures/`, built by `fixtures/build.py`)."""
