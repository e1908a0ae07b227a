# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt

.PHONY: demo test test-avx2 lint format bench clean

$(VENV)/.demo: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP) -e '.[plots]'  # the demo draws training curves
	touch $@

$(VENV)/.test: $(VENV)/.demo
	$(PIP) -e '.[test]'
	touch $@

demo: $(VENV)/.demo
	$(VENV)/bin/vggnet demo

test: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

# The suite again as an AVX2-only CPU computes it (torch's and oneDNN's kernels capped at AVX2, vggnet's compiled
# kernels the AVX2 build without AVX-VNNI): a test that holds only under one CPU's rounding fails here first.
test-avx2: $(VENV)/.test
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 VGGNET_ISA=avx2 $(PY) -m pytest -q

format: $(VENV)/.test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
