#!/usr/bin/env bash
# Build the CPU and CUDA kernels on a GPU machine and run their parity tests and the
# CUDA benchmark. For a machine whose Python has torch, numpy, scikit-learn, pytest,
# pybind11 and CMake but not the rest of cellsynth's dependencies: anndata and its
# needs are taken from wheels in WHEELS (default .whl/) when that folder exists.
#     bash cpp/gpu_check.sh [CUDA_ARCHITECTURES]     # e.g. 90 for H100/H200
set -euo pipefail
arch=${1:-native}
py=${PYTHON:-python3}
if [ -d "${WHEELS:-.whl}" ]; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/cellsynth-site "${WHEELS:-.whl}"/*.whl
  export PYTHONPATH=/tmp/cellsynth-site
fi
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 CELLSYNTH_BACKEND=cuda
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nvcc --version | tail -1
b=${BUILD:-/tmp/cellsynth-gpu-build}
cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -Dpybind11_DIR="$($py -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v $py)" >/dev/null
cmake --build "$b" -j "$(nproc)"
cp "$b"/cpp/_core*.so "$b"/cpp/_cuda*.so python/cellsynth/
$py -m pytest -q -p no:cacheprovider tests/python/test_cuda.py tests/python/test_native.py
$py benchmarks/metrics_cuda.py
