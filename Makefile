# make tutorials: execute every tutorials/*.ipynb in place, saving outputs (pictures included).
PYTHON ?= python

.PHONY: tutorials
tutorials:
	$(PYTHON) tutorials/run.py
