#!/usr/bin/env bash
# The real llama-cpp-python test tier: a venv with llama-cpp-python's OpenAI-compatible server built from source
# (PyPI's sdist, about 5 minutes on 2 cores), a tiny random-weight GGUF written locally (seeded, no hub), then the
# tests marked real_llama against it. REAL_LLAMA_DIR (default .real-llama/, git-ignored) keeps both between runs.
# `--build-only` stops after the build (CI builds in the background while its other stages run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${REAL_LLAMA_DIR:-$root/.real-llama}
py=$dir/venv/bin/python
if ! "$py" -c 'import llama_cpp.server, gguf' 2>/dev/null; then
  python3 -m venv "$dir/venv"
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$py" -m pip install -q 'llama-cpp-python[server]>=0.3.16' 'gguf>=0.17' numpy
fi
if [ ! -f "$dir/tiny.gguf" ]; then
  "$py" "$root/scripts/make_tiny_gguf.py" "$dir/tiny.gguf"
fi
if [ "${1:-}" = "--build-only" ]; then
  exit 0
fi
cd "$root"
CHAINETTE_REAL_LLAMA_PYTHON="$py" CHAINETTE_REAL_LLAMA_MODEL="$dir/tiny.gguf" \
  .venv/bin/python -m pytest tests/openai/test_real_llama.py -m real_llama -n 0 -v "$@"
