# cimtwin: the two commands a newcomer runs (see README.md).
.PHONY: setup run test lint

setup:
	bash scripts/setup.sh

# The main job: set up, load the North Station sample, serve the API.
run:
	bash scripts/run.sh

# The tests (what CI runs): set up, the code checks, the full suite against the real PostGIS,
# its files spread over the machine's cores (pytest-xdist; each worker has its own databases).
# The test tools (the 3D Tiles validator's npm packages) install while the code checks run.
test: setup
	@bash scripts/test_tools.sh > .test-tools.log 2>&1 & tools=$$!; \
	$(MAKE) --no-print-directory lint; checks=$$?; \
	wait $$tools; installed=$$?; cat .test-tools.log; \
	[ $$checks = 0 ] && [ $$installed = 0 ]
	.venv/bin/pytest -m "not slow" -n auto --dist loadfile

# Code checks: formatting, lint, types (also the pre-commit hooks).
lint:
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/mypy
