#!/usr/bin/env bash
# The docs site: docs/cli.md must match the typer app (regenerate it with
# `python scripts/gen_cli_reference.py`), and the site must build with no warning: a broken link,
# anchor, snippet or nav entry fails. Needs the dev environment (requirements-dev.txt); PYTHON
# names its interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
"$python" scripts/gen_cli_reference.py --check
# No -q: it hides the warnings that --strict counts, and the build would pass whatever they say.
NO_MKDOCS_2_WARNING=1 "$python" -m mkdocs build --strict --site-dir "$site"
