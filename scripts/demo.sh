#!/usr/bin/env bash
# Builds quest and runs the default job: a small QuEST-ready Llama trained on Moby Dick on the CPU
# (set-up included: packages and downloads, once). Extra arguments go to `quest train`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [[ -z "${CUDACXX:-}" && -x /usr/local/cuda/bin/nvcc ]]; then export CUDACXX=/usr/local/cuda/bin/nvcc; fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DQUEST_BUILD_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" --target quest
exec build/quest train "$@"
