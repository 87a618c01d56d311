#!/usr/bin/env bash
# Strict type checking: every distribution's sources and benchmarks/ (mypy --strict, configured in pyproject.toml), then a
# backend as a third party starts one (`chainette backends new`), checked strictly against the installed core.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
.venv/bin/mypy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && "$root/.venv/bin/chainette" backends new typedcheck >/dev/null)
(cd "$work" && "$root/.venv/bin/mypy" --strict chainette-typedcheck/src)
