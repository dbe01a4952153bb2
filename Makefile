# The two commands of the README: `make setup` and `make test`.
PY := .venv/bin/python

.PHONY: setup test test-fast lint format toy-det toy-seg

setup:
	./scripts/setup.sh

# The whole suite, slow end-to-end tests included (what CI runs).
test:
	$(PY) -m pytest -m "slow or not slow" -q

# The default pytest run: everything but the tests marked slow.
test-fast:
	$(PY) -m pytest -q

# Style checks only (flake8, isort, yapf; settings in setup.cfg), as in CI.
LINT_PATHS := mmapt tools tests configs demo scripts setup.py
lint:
	$(PY) -m flake8 $(LINT_PATHS)
	$(PY) -m isort --check-only --diff $(LINT_PATHS)
	$(PY) -m yapf --diff --recursive $(LINT_PATHS)

# Rewrite the files in place with isort and yapf (flake8 findings stay manual).
format:
	$(PY) -m isort $(LINT_PATHS)
	$(PY) -m yapf --in-place --recursive $(LINT_PATHS)

# Toy data + APT toy training + test, end to end on the CPU (README, "Quick
# start", gives the time). `make toy-det ITERS=50` trains 50 iterations
# instead of the config's 300.
ITERS ?=
toy-det:
	PYTHON=$(abspath $(PY)) ITERS=$(ITERS) bash tools/misc/toy_det_quickstart.sh

toy-seg:
	PYTHON=$(abspath $(PY)) ITERS=$(ITERS) bash tools/misc/toy_seg_quickstart.sh
