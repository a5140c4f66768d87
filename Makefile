# Two commands on a fresh machine:
#   make demo   installs everything into .venv/ and runs the demo on bundled data
#   make test   installs everything into .venv/ (and R from Debian if missing), runs pytest, builds the docs, runs R CMD check
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: install demo test test-python test-slow docs rcheck r-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel, so nothing pulls the CUDA build; numpy<2 in every
# install (reticulate 1.28 needs it; zarr >= 3.1.6, which anndata takes, would pull numpy 2)
# the C++ metric kernels are optional: if they fail to build, install without them
$(VENV)/.installed: $(BIN)/python pyproject.toml CMakeLists.txt $(wildcard cpp/*.txt cpp/*.cpp cpp/include/cellsynth/*.hpp)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0" "numpy<2"
	$(BIN)/pip install -q -e ".[test]" "numpy<2" || { \
	  echo "cellsynth: native kernels failed to build; installing the NumPy/torch path"; \
	  $(BIN)/pip install -q -e ".[test]" "numpy<2" -C cmake.define.CELLSYNTH_NATIVE=OFF; }
	$(BIN)/python -c "import cellsynth.metrics as m; print('cellsynth metrics backend:', m.backend())"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/cellsynth demo --out $(DEMO_OUT)

# the R package: R, Seurat and friends from Debian when they are missing (root only)
R_DEBS := r-base-core r-base-dev r-cran-seurat r-cran-reticulate r-cran-testthat r-cran-knitr \
          r-cran-rmarkdown r-bioc-singlecellexperiment r-bioc-biocstyle
R_PKGS := SeuratObject reticulate Matrix ggplot2 rlang testthat knitr rmarkdown BiocStyle
# Debian's R loads the wrong libpython without R_LD_LIBRARY_PATH; R uses the venv's Python
# CELLSYNTH_REQUIRE_ENGINE=1: the R tests fail, rather than skip, when R cannot reach the engine
RENV := R_LD_LIBRARY_PATH=/usr/lib/R/lib RETICULATE_PYTHON=$(abspath $(BIN)/python) CELLSYNTH_PROGRESS=0 CELLSYNTH_REQUIRE_ENGINE=1

test: test-python docs rcheck

test-python: install
	CELLSYNTH_PROGRESS=0 $(BIN)/python -m pytest -q

# the user guide and API reference (Sphinx + MyST, autodoc from the numpydoc docstrings);
# warnings are errors
$(VENV)/.docs-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[docs]" "numpy<2"
	touch $@

docs: $(VENV)/.docs-installed
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "cellsynth: docs in docs/_build/html/index.html"

r-deps:
	@if Rscript -e 'quit(status = !all(vapply(strsplit("$(R_PKGS)", " ")[[1]], requireNamespace, logical(1), quietly = TRUE)))' >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "cellsynth: installing R from Debian: $(R_DEBS)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(R_DEBS) >/dev/null; \
	else echo "cellsynth: the R package checks need R with $(R_PKGS): sudo apt-get install $(R_DEBS)"; exit 1; fi

# R CMD build (vignettes built) and R CMD check on the tarball; any ERROR or WARNING fails
rcheck: install r-deps
	rm -rf build/rcheck && mkdir -p build/rcheck
	cd build/rcheck && $(RENV) R CMD build ../.. && \
	  $(RENV) _R_CHECK_FORCE_SUGGESTS_=false R CMD check --no-manual cellsynth_*.tar.gz
	@grep -E "^Status:" build/rcheck/cellsynth.Rcheck/00check.log
	@! grep -qE "^Status:.*(ERROR|WARNING)" build/rcheck/cellsynth.Rcheck/00check.log
	$(BIN)/pip install -q "rpy2>=3.5,<3.6" anndata2ri "numpy<2"   # the extra "r", without rebuilding the package
	$(RENV) $(BIN)/python -m pytest -q tests/python/test_rfiles.py

test-slow: install
	CELLSYNTH_PROGRESS=0 $(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python benchmarks/fidelity.py

clean:
	rm -rf $(VENV) build $(DEMO_OUT) docs/_build
