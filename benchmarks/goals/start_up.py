"""Goal 4: `import chainette` loads no backend, HTTP, CLI or UI module (its time against `import pydantic`'s), and
`chainette --help` and `chainette backends list` load no backend or HTTP module (`--help` no backend either)."""

from __future__ import annotations

import subprocess
import sys
import time

from harness import Figure, Outcome

HEAVY = frozenset({"openai", "httpx2", "httpx", "vllm", "aiohttp"})
BACKENDS = frozenset({"chainette_openai", "chainette_vllm", "chainette_ollama"})
CLI = "import sys\nfrom chainette.cli import main\nsys.argv = ['chainette', {}]\ntry:\n    main()\nexcept SystemExit:\n    pass"
"""A CLI invocation in-process, its arguments to fill in (so that the modules it loaded can be listed after)."""


def measure() -> Outcome:
    """What each entry point loads, and the best of five import times of chainette and of pydantic, in ms."""
    light_import = loaded("import chainette").isdisjoint(HEAVY | BACKENDS | {"typer", "rich"})
    light_help = loaded(CLI.format("'--help'")).isdisjoint(HEAVY | BACKENDS)
    light_list = loaded(CLI.format("'backends', 'list'")).isdisjoint(HEAVY)
    chainette_ms, pydantic_ms = best_ms("import chainette"), best_ms("import pydantic")
    return Outcome(
        (
            Figure(
                "4. python -c 'import chainette' (baseline: import pydantic)",
                chainette_ms,
                pydantic_ms,
                "no backend/HTTP/CLI/UI module",
                light_import,
                unit="ms",
            ),
            Figure(
                "4. chainette --help / backends list: no backend or HTTP module",
                float(light_help),
                float(light_list),
                "both light",
                light_help and light_list,
                unit="(1 = light)",
            ),
        )
    )


def best_ms(code: str) -> float:
    """The shortest of five runs of `python -c code`, in ms."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def loaded(code: str) -> set[str]:
    """The top-level packages in sys.modules after `python -c code`."""
    probe = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(output.splitlines()[-1].split())
