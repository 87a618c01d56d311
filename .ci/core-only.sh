#!/usr/bin/env bash
# The core's tests in an environment where chainette-core is the only chainette distribution,
# and proof that `import chainette` pulls in no backend, HTTP, CLI or UI library.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv=$work/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q './chainette-core[http,testing]' 'pytest>=8' 'pytest-asyncio>=0.24' 'pytest-xdist>=3.5'
"$venv/bin/python" - <<'PY'
import sys
import chainette
heavy = {"openai", "httpx2", "httpx", "vllm", "typer", "rich", "aiohttp"}
loaded = heavy & {name.split(".")[0] for name in sys.modules}
assert not loaded, f"import chainette loaded {loaded}"
print("import chainette: no heavy module loaded")
PY
"$venv/bin/python" -m pytest -q tests/core
