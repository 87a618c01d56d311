"""The names vLLM itself gives each `vllm serve` option, read from its own parser (`vllm serve --help=all`), so
that an alias of a flag chainette sets (`--device-memory-utilization` for `--gpu-memory-utilization`) is refused in
`extra_serve_flags` like the flag itself. Reading them takes vLLM seconds: the result is kept per executable (its
path, size and time) in the state folder. A vLLM that cannot print them leaves the check to RESERVED_FLAGS alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
import re
import subprocess

from chainette.errors import ConfigError
from chainette_vllm.options import RESERVED_FLAGS
from chainette_vllm.spec import ServeSpec
from chainette_vllm.state import state_dir

HELP_TIMEOUT = 120.0
OPTION_LINE = re.compile(r"^  (-[^\s].*)$")


def option_groups(help_text: str) -> list[list[str]]:
    """The names of each option in a `--help=all` text: a line `  --a A, -b A  help` gives ["--a", "-b"]."""
    groups = []
    for line in help_text.splitlines():
        match = OPTION_LINE.match(line)
        if match is None:
            continue
        names = [part.split()[0] for part in re.split(r",\s+", match[1].split("  ")[0]) if part.startswith("-")]
        if names:
            groups.append(names)
    return groups


def serve_aliases(executable: str, cache: Path) -> dict[str, list[str]]:
    """Each option name of this `vllm serve` and every name of the same option ({} when vLLM cannot tell)."""
    stat = os.stat(executable)
    digest = hashlib.sha256(f"{executable}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    kept = cache / f"vllm-serve-flags-{digest}.json"
    try:
        return dict(json.loads(kept.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass
    try:
        shown = subprocess.run([executable, "serve", "--help=all"], capture_output=True, text=True, timeout=HELP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    aliases = {name: group for group in option_groups(shown.stdout) for name in group} if shown.returncode == 0 else {}
    if aliases:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps(aliases), encoding="utf-8")
        except OSError:
            pass
    return aliases


def check_aliases(spec: ServeSpec, executable: str) -> None:
    """A ConfigError when the engine's extra_serve_flags hold another name of a flag chainette sets or maps from an
    option, as this `vllm` executable's parser names them."""
    names = {token.split("=", 1)[0] for token in spec.extra_flags if token.startswith("-")}
    if not names:
        return
    aliases = serve_aliases(executable, state_dir())
    for name in sorted(names):
        reserved = next((other for other in aliases.get(name, []) if other in RESERVED_FLAGS and other != name), None)
        if reserved is not None:
            raise ConfigError(
                f"Engine '{spec.engine}': extra_serve_flags gives {name}, which vLLM reads as {reserved}: {RESERVED_FLAGS[reserved]}."
            )
