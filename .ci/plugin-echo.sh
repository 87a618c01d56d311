#!/usr/bin/env bash
# The example third-party backend (examples/plugin-echo) as a user gets it: build the chainette-core
# and chainette-echo wheels, install them in a clean venv, check `chainette backends list` finds
# echo, run the example chain on it, and run the plugin's conformance tests from the installed
# wheel only (from a temp dir, so the repository's sources are not importable).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q 'build>=1.2'
for dist in "$root/chainette-core" "$root/examples/plugin-echo"; do
  "$py" -m build --wheel --outdir "$work/wheels" "$dist" >/dev/null
done
# The [test] extra brings chainette-core[testing] (pytest, aiohttp); the conformance suite needs no pytest-asyncio.
core_wheel=$(ls "$work"/wheels/chainette_core-*.whl)
echo_wheel=$(ls "$work"/wheels/chainette_echo-*.whl)
"$py" -m pip install -q "$core_wheel" "$echo_wheel[test]"
cd "$work"
"$work/venv/bin/chainette" backends list --json > backends.json
"$py" - <<'PY'
import json
found = {b["name"]: b for b in json.load(open("backends.json"))}
echo = found.get("echo")
assert echo and echo["status"] == "ok" and echo["distribution"] == "chainette-echo" and echo["version"] == "0.1.0", found
print("plugin-echo: backends list shows echo", echo["version"])
PY
cp "$root/examples/plugin-echo/chain.py" "$root/examples/plugin-echo/inputs.jsonl" "$work/"
"$work/venv/bin/chainette" run chain.py:chain -i inputs.jsonl -o out >/dev/null
"$py" - <<'PY'
import json
notes = [json.loads(line)["text"] for line in open("inputs.jsonl")]
cards = [json.loads(line) for line in open("out/card/000.jsonl")]
assert sorted(c["title"] for c in cards) == sorted(f"echo: {n}" for n in notes), cards
print(f"plugin-echo: the example chain answered {len(cards)} rows")
PY
mkdir tests && cp "$root/examples/plugin-echo/tests/test_conformance.py" tests/
"$py" -m pytest -q -p no:cacheprovider tests
