# The two commands of the README: `make setup` and `make test`.
PY := .venv/bin/python

.PHONY: setup test test-fast toy-det toy-seg

setup:
	./scripts/setup.sh

# The whole suite, slow end-to-end tests included (what CI runs).
test:
	$(PY) -m pytest -m "slow or not slow" -q

# The default pytest run: everything but the tests marked slow.
test-fast:
	$(PY) -m pytest -q

# Toy data + APT toy training + test, end to end on the CPU.
toy-det:
	PYTHON=$(abspath $(PY)) bash tools/misc/toy_det_quickstart.sh

toy-seg:
	PYTHON=$(abspath $(PY)) bash tools/misc/toy_seg_quickstart.sh
