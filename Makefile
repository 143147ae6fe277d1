# make test:      the test suite (the README's test command)
# make lint:      ruff check and ruff format --check (what CI runs besides the tests)
# make bench:     the ops benchmark (fcn-scratch bench): ours against a NumPy baseline and PyTorch
# make tutorials: execute every tutorials/*.ipynb in place, saving outputs (pictures included).
PYTHON ?= python

.PHONY: test lint bench tutorials
test:
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

bench:
	$(PYTHON) benchmarks/bench_ops.py

tutorials:
	$(PYTHON) tutorials/run.py
