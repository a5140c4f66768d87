# Two commands on a fresh machine:
#   make demo   installs everything into .venv/ and runs the demo on bundled data
#   make test   installs everything into .venv/ and runs the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: install demo test test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel, so nothing pulls the CUDA build
# the C++ metric kernels are optional: if they fail to build, install without them
$(VENV)/.installed: $(BIN)/python pyproject.toml CMakeLists.txt $(wildcard cpp/*.txt cpp/*.cpp cpp/include/cellsynth/*.hpp)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0" "numpy<2"
	$(BIN)/pip install -q -e ".[test]" || { \
	  echo "cellsynth: native kernels failed to build; installing the NumPy/torch path"; \
	  $(BIN)/pip install -q -e ".[test]" -C cmake.define.CELLSYNTH_NATIVE=OFF; }
	$(BIN)/python -c "import cellsynth.metrics as m; print('cellsynth metrics backend:', m.backend())"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/cellsynth demo --out $(DEMO_OUT)

test: install
	CELLSYNTH_PROGRESS=0 $(BIN)/python -m pytest -q

test-slow: install
	CELLSYNTH_PROGRESS=0 $(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python benchmarks/fidelity.py

clean:
	rm -rf $(VENV) build $(DEMO_OUT)
