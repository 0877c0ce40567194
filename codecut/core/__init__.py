"""The floor every layer of codecut may use: models (`Model`, `load_model`, the offline
registry), facts (`Fact`, JSONL), file I/O (atomic writes) and errors. It imports nothing above
it."""
