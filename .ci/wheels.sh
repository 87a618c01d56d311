#!/usr/bin/env bash
# Build a wheel of each distribution, then install only chainette-core + chainette-openai from
# those wheels in a clean venv and check that `chainette backends list` shows fake and openai.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/build"
"$work/build/bin/pip" install -q 'build>=1.2'
for dist in chainette-core chainette-openai chainette-vllm chainette-ollama chainette-ray chainette-anthropic chainette-gemini; do
  "$work/build/bin/python" -m build --wheel --outdir "$work/wheels" "$dist" >/dev/null
done
ls "$work/wheels"
python3 -m venv "$work/user"
"$work/user/bin/pip" install -q "$work"/wheels/chainette_core-*.whl "$work"/wheels/chainette_openai-*.whl
cd "$work"
"$work/user/bin/chainette" backends list --json > backends.json
"$work/user/bin/python" - <<'PY'
import json
found = {b["name"]: b for b in json.load(open("backends.json"))}
assert found["fake"]["status"] == "ok" and found["openai"]["status"] == "ok", found
assert found["openai"]["distribution"] == "chainette-openai" and found["openai"]["version"], found
assert "vllm" not in found and "ollama" not in found, found
print("wheels: backends list shows", ", ".join(f"{n} {b['version']}" for n, b in sorted(found.items())))
PY
