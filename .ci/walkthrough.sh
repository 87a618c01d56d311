#!/usr/bin/env bash
# The writing-a-backend walkthrough (docs/writing-a-backend.md) followed literally: write the files it shows
# (its `doc-test: file` blocks, extracted by scripts/doc_blocks.py, the parser tests/docs uses), install
# chainette-core from this repository and then the walkthrough's package into a clean venv as its last
# commands do (`pip install -e '.[test]'`), check `chainette backends list` finds the backend, type-check it
# with mypy --strict, and run the walkthrough's own conformance tests, outside the repository.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 "$root/scripts/doc_blocks.py" files "$root/docs/writing-a-backend.md" "$work"
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q "$root/chainette-core[http,testing]" 'mypy>=1.11'
cd "$work/chainette-mybackend"
"$py" -m pip install -q -e '.[test]'
"$work/venv/bin/chainette" backends list --json > "$work/backends.json"
"$py" - "$work/backends.json" <<'PY'
import json
import sys
found = {b["name"]: b for b in json.load(open(sys.argv[1]))}
mine = found.get("mybackend")
assert mine and mine["status"] == "ok" and mine["distribution"] == "chainette-mybackend", found
print("walkthrough: backends list shows mybackend", mine["version"])
PY
"$work/venv/bin/mypy" --strict src
"$py" -m pytest -q -p no:cacheprovider
