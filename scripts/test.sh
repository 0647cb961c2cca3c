#!/usr/bin/env bash
# Builds quest and runs the whole test suite (set-up included: packages and downloads, once).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The CUDA backend is compiled whenever the toolkit is present (it cannot run without a GPU).
if [[ -z "${CUDACXX:-}" && -x /usr/local/cuda/bin/nvcc ]]; then export CUDACXX=/usr/local/cuda/bin/nvcc; fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
