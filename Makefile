# cimtwin: the two commands a newcomer runs (see README.md).
.PHONY: setup run test lint

setup:
	bash scripts/setup.sh

# The main job: set up, load the North Station sample, serve the API.
run:
	bash scripts/run.sh

# The tests (what CI runs): set up, lint, the full suite against the real PostGIS.
test: setup
	.venv/bin/ruff check .
	.venv/bin/pytest -m "not slow"

lint:
	.venv/bin/ruff check .
