#!/usr/bin/env bash
# Release check: build the wheel and sdist of every distribution (each wheel from its sdist),
# `twine check --strict` them, check their versions agree and each ships its LICENSE, then install
# each backend wheel with the LOWEST chainette-core its range allows into a clean venv and check
# that the backend loads. Nothing is uploaded.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$HOME/.cache/pip} PIP_DISABLE_PIP_VERSION_CHECK=1
start=$SECONDS
phase() { echo "release: $1 ($((SECONDS - start)) s)"; }

python3 -m venv "$work/tools"
tools=$work/tools/bin
"$tools/pip" install -q 'build>=1.2' 'twine>=6.1' 'packaging>=24'
phase "tools installed"

dists=(chainette-core chainette-openai chainette-vllm chainette-ollama chainette-ray chainette-anthropic chainette-gemini)
for dist in "${dists[@]}"; do
  "$tools/python" -m build --quiet --outdir "$work/dist" "$dist" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
done
phase "built $(find "$work/dist" -type f | wc -l) files"

"$tools/twine" check --strict "$work"/dist/*
phase "twine check passed"

# Versions in step, LICENSE and README in every file; print "backend core_wheel_or_requirement" lines.
"$tools/python" - "$work/dist" "${#dists[@]}" >"$work/plan" <<'PY'
import sys, tarfile, zipfile
from email.parser import HeaderParser
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

dist = Path(sys.argv[1])
wheels = {parse_wheel_filename(p.name)[0]: p for p in dist.glob("*.whl")}
sdists = {parse_sdist_filename(p.name)[0]: p for p in dist.glob("*.tar.gz")}
assert set(wheels) == set(sdists) and len(wheels) == int(sys.argv[2]), (sorted(wheels), sorted(sdists))
for name, sdist in sdists.items():
    with tarfile.open(sdist) as tar:
        files = {member.name.split("/", 1)[1] for member in tar.getmembers() if "/" in member.name}
    assert {"LICENSE", "README.md", "pyproject.toml"} <= files, f"{sdist.name} lacks {({'LICENSE', 'README.md', 'pyproject.toml'} - files)}"
metadata = {}
for name, wheel in wheels.items():
    with zipfile.ZipFile(wheel) as archive:
        info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist()), f"{wheel.name} ships no LICENSE"
        assert any(n.endswith("/py.typed") for n in archive.namelist()), f"{wheel.name} ships no py.typed"
        metadata[name] = HeaderParser().parsestr(archive.read(info).decode())
    assert metadata[name]["License-Expression"] == "MIT", f"{wheel.name}: License-Expression {metadata[name]['License-Expression']}"
versions = {name: Version(meta["Version"]) for name, meta in metadata.items()}
assert len(set(versions.values())) == 1, f"versions differ: {versions}"
core = versions["chainette-core"]
for name, meta in sorted(metadata.items()):
    if name == "chainette-core":
        continue
    [req] = [req for req in map(Requirement, meta.get_all("Requires-Dist")) if req.name == "chainette-core" and req.marker is None]
    lower = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    assert lower, f"{name}: {req} has no lower bound"
    lowest = max(lower)
    assert req.specifier.contains(core), f"{name}: {req} excludes the chainette-core {core} built here"
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    # The lowest allowed core is the one built here when it is the current version, else a release.
    core_spec = f"{wheels['chainette-core']}{extras}" if lowest == core else f"chainette-core{extras}=={lowest}"
    print(name, wheels[name], core_spec, lowest, str(req.specifier).replace(" ", ""))
PY
phase "metadata checked: versions in step, LICENSE in every wheel and sdist, py.typed in every wheel"

while read -r dist wheel core_spec lowest range; do
  backend=${dist#chainette-}
  venv=$work/venv-$backend
  python3 -m venv --without-pip "$venv"
  "$tools/pip" --python "$venv/bin/python" install -q "$core_spec" "$wheel"
  (cd "$work" && "$venv/bin/python" -c "import chainette_$backend" && "$venv/bin/chainette" backends list --json >"$venv/backends.json")
  core_installed=$("$venv/bin/python" -c "from importlib.metadata import version; print(version('chainette-core'))")
  "$tools/python" - "$venv/backends.json" "$dist" "$backend" "$lowest" "$core_installed" <<'PY'
import json, sys
from packaging.version import Version
path, dist, backend, lowest, installed = sys.argv[1:]
found = {b["name"]: b for b in json.load(open(path))}
assert found.get(backend, {}).get("status") == "ok", found
assert found[backend]["distribution"] == dist, found[backend]
assert Version(installed) == Version(lowest), f"{dist}: chainette-core {installed} installed, {lowest} wanted"
PY
  phase "$dist: loads in a clean venv with chainette-core $core_installed, the lowest its range $range allows"
done <"$work/plan"
echo "release: OK in $((SECONDS - start)) s"
