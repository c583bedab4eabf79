# sci2cl: every target bootstraps .venv when it is missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Data directory: SCI2CL_DATA_DIR if set, else the mirror beside the repo when present, else data/.
SCI2CL_DATA_DIR ?= $(if $(wildcard ../shared/data/multiome),$(abspath ../shared/data),$(abspath data))
export SCI2CL_DATA_DIR
SMOKE_DIR ?= build/smoke
HTML ?= book/_build/html

.PHONY: help install test smoke smoke-paper book html notebooks bench bench-sci2cl bench-scrcl desc-env bench-spatial lint format check-book clean

help:
	@echo "make book   - re-execute (full, papermill) the notebooks whose committed run is stale, build the HTML book"
	@echo "make notebooks - re-execute every notebook in full (the last run's times: notebooks/timings-full.tsv)"
	@echo "make test   - unit tests (pytest)"
	@echo "make smoke  - execute every notebook with SMOKE=True in $(SMOKE_DIR) and build the book from them"
	@echo "make html   - build the HTML book from the committed executed notebooks (no execution)"
	@echo "make bench  - the clustering benchmark of chapter 3 -> results/benchmark_clustering.csv, results/figures/"
	@echo "make bench-sci2cl / bench-scrcl - the methods chapter's scI2CL measurements (speed, quality, scaling to 1M cells from disk, Lightning vs loop) / chapter 7's scRCL benchmark (its DESC peer needs make desc-env)"
	@echo "make bench-spatial - chapter 8: scRCL's spatial development log and the spatial benchmark"
	@echo "make lint   - ruff"
	@echo "make check-book - headless Chromium check of the built HTML (HTML=...)"

CONSTRAINTS := constraints-cpu.txt
PIP_INSTALL := $(PY) -m pip install -q -c $(CONSTRAINTS)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@command -v python3.11 >/dev/null && PYBIN=python3.11 || PYBIN=python3; \
	test -x $(PY) || $$PYBIN -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	set -o pipefail; $(PIP_INSTALL) -e ".[dev,bench,book,batch]" 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@if $(PY) -m pip list 2>/dev/null | grep -i -E "^(nvidia-[a-z0-9-]*-cu[0-9]+|triton) "; then echo "CUDA packages were installed: torch must stay pinned to 2.13.0 (CPU wheel)"; exit 1; fi
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check sci2cl tests benchmarks scripts book/_ext
	$(VENV)/bin/ruff format --check sci2cl tests benchmarks scripts book/_ext

format: $(STAMP)
	$(VENV)/bin/ruff format sci2cl tests benchmarks scripts
	$(VENV)/bin/ruff check --fix sci2cl tests benchmarks scripts

build/mathjax/es5/tex-svg.js:
	mkdir -p build/mathjax-npm build/mathjax
	npm install --silent --no-audit --no-fund --prefix build/mathjax-npm mathjax@3
	cp -r build/mathjax-npm/node_modules/mathjax/es5 build/mathjax/

notebooks: $(STAMP)
	$(PY) scripts/run_notebooks.py --mode full --out notebooks

html: $(STAMP) build/mathjax/es5/tex-svg.js
	$(PY) scripts/build_book.py --src . --out book

book: $(STAMP)
	$(PY) scripts/run_notebooks.py --mode full --out notebooks --stale-only
	$(MAKE) html
	@echo "Book: $(abspath book/_build/html/index.html)"

smoke: $(STAMP) build/mathjax/es5/tex-svg.js
	rm -rf $(SMOKE_DIR)
	$(PY) scripts/run_notebooks.py --mode smoke --out $(SMOKE_DIR)/notebooks
	$(MAKE) smoke-paper
	$(PY) scripts/build_book.py --src . --notebooks $(SMOKE_DIR)/notebooks --out $(SMOKE_DIR) --strict
	@echo "Smoke book: $(abspath $(SMOKE_DIR)/_build/html/index.html)"

# chapters 4-6 on files in the formats of the paper's PBMC-10K and PBMC-3K (made from the simulator):
# the path a user with the real files takes
PAPER_DIR = build/paper_format
smoke-paper: $(STAMP)
	rm -rf $(PAPER_DIR) $(SMOKE_DIR)/paper
	$(PY) scripts/paper_format_files.py $(PAPER_DIR)
	SCI2CL_DATA_DIR=$(abspath $(PAPER_DIR)) $(PY) scripts/run_notebooks.py --mode smoke --out $(SMOKE_DIR)/paper/pbmc10k \
	  --only 04 06 -p DATASET=pbmc10k -p "POPULATION=CD14 Mono" -p 'PATH_=["HSPC", "B naive", "B intermediate", "B memory"]'
	SCI2CL_DATA_DIR=$(abspath $(PAPER_DIR)) $(PY) scripts/run_notebooks.py --mode smoke --out $(SMOKE_DIR)/paper/pbmc3k \
	  --only 05 -p DATASET=pbmc3k

check-book: $(STAMP)
	$(PY) scripts/check_book.py $(HTML) --screenshots build/screenshots

# the book's clustering benchmark (chapter 3): every paired dataset, 3 seeds, two jobs side by side
bench: $(STAMP)
	$(PY) -m benchmarks clustering --jobs 2

# the methods chapter's measurements of scI2CL's variants and speed, and chapter 7's scRCL benchmark
bench-sci2cl: $(STAMP)
	$(PY) -m benchmarks sci2cl-speed
	$(PY) -m benchmarks sci2cl-scaling
	$(PY) -m benchmarks sci2cl-report

bench-scrcl: $(STAMP)
	$(PY) -m benchmarks scrcl

# DESC (a peer of chapter 7) in its own environment: it needs tensorflow and pandas < 2
desc-env: build/venv-desc/bin/python
build/venv-desc/bin/python: benchmarks/desc-requirements.txt
	@command -v dot >/dev/null || { echo "DESC draws its network with Graphviz: install it (apt-get install graphviz)"; exit 1; }
	python3 -m venv build/venv-desc
	build/venv-desc/bin/pip install -q "pip<24.1"
	build/venv-desc/bin/pip install -q -r benchmarks/desc-requirements.txt
	touch build/venv-desc/bin/python

# one thread each (2 cores); the development log first: the benchmark runs the chosen mode
bench-spatial: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 $(PY) -m benchmarks scrcl-spatial-dev
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 $(PY) -m benchmarks spatial

clean:
	rm -rf build book/_build
