# `make reproduce` runs the whole pipeline (dvc repro); `make test` runs the test suite.
# Both use the active virtual environment (or conda env) if there is one, else create .venv here.
PYTHON ?= python3
ENV := $(or $(VIRTUAL_ENV),$(CONDA_PREFIX),$(CURDIR)/.venv)
BIN := $(ENV)/bin
STAMP := $(ENV)/.rlcsc-installed

.PHONY: install reproduce test

install: $(STAMP)

# On a machine without an NVIDIA GPU, torch is pinned first (its CPU-only build where the pip index
# serves one, e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu); with a GPU, the
# package's own `torch>=2.2` brings the CUDA build.
$(STAMP): pyproject.toml rlcsc/__init__.py  # the version pip records comes from rlcsc/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(ENV)
	command -v nvidia-smi >/dev/null 2>&1 || $(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3  # the kernel papermill runs
	touch $@

reproduce: install
	PATH="$(BIN):$$PATH" dvc repro

test: install
	PATH="$(BIN):$$PATH" python -m pytest
