"""The files `chainette backends new NAME` writes: a backend distribution laid out like examples/plugin-echo.

The generated backend echoes the prompt into the output schema, so that it installs, registers and
passes the conformance suite at once; TODO comments mark where the author puts the real client.
"""

from __future__ import annotations

from pathlib import Path
import re
from string import Template

from chainette import __version__
from chainette.errors import ChainetteError

NAME_PATTERN = re.compile(r"[a-z](?:[a-z0-9_]*[a-z0-9])?")

PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.21"]
build-backend = "hatchling.build"

[project]
name = "$dist"
version = "0.1.0"
# TODO: say what the backend talks to.
description = "Chainette backend $name."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["chainette-core$core"]

[project.optional-dependencies]
test = ["chainette-core[testing]$core"]

[project.entry-points."chainette.backends"]
$name = "$package"

[tool.hatch.build.targets.wheel]
packages = ["src/$package"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

README = """\
# $dist

A [Chainette](https://github.com/chainette/chainette) backend: `register_engine("llm", backend="$name", model=...)`.

```bash
pip install -e '.[test]'
chainette backends list   # $name  $dist  0.1.0  ok
pytest                    # the chainette conformance suite
```

Until the TODOs in `src/$package/__init__.py` are done, the backend echoes the prompt into the
output schema. Guide: docs/writing-a-backend.md in the Chainette repository.
"""

MODULE = '''\
"""Chainette backend `$name`. TODO: say what it talks to.

Keep this module's imports light: `chainette backends list` imports it. Import your client
library inside make_client (or a client module imported from there).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from chainette import Answer, EngineConfig, EngineOptions, Request, SamplingParams, Usage, hookimpl
from chainette.sampling import map_sampling

# TODO: map each SamplingParams field your service honours to its wire name, e.g. {"max_tokens": "max_new_tokens"};
# map_sampling warns about the others instead of dropping them silently.
SAMPLING_FIELDS: dict[str, str] = {}


class ${Title}Options(EngineOptions):
    """Options of the $name backend, besides those every backend takes (timeout, max_retries, ...)."""

    # TODO: add the options users pass to register_engine(); unknown ones are refused. Type one that can hold a
    # secret (a token, a header value) as pydantic's SecretStr, even inside a dict or list: chainette then never shows it.
    # Every option is part of the response cache's keys: add those that cannot change an answer (headers, ports) to the
    # `cache_neutral` class variable, as docs/writing-a-backend.md shows.
    max_concurrency: int = Field(16, ge=1, description="Requests in flight at once for this engine.")


class ${Title}Client:
    """Sends one engine's requests; complete() is called concurrently, up to max_concurrency."""

    def __init__(self, config: EngineConfig[${Title}Options]):
        # TODO: open the connection: config.endpoint, config.resolve_api_key(default_env="..."), config.options.
        # For a JSON-over-HTTP API, chainette.http.JsonHttpClient (chainette-core[http]) classifies every failure.
        self.model = config.model

    async def complete(self, request: Request) -> Answer:
        # TODO: send request.messages, request.schema and request.sampling to your service and return its raw
        # text and token usage; raise chainette.errors.RetryableError, RowError or EngineError when it fails.
        # Until then, the user's prompt is echoed into the schema.
        prompt = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
        text = json.dumps(fill(request.schema, request.schema.get("$$defs", {}), prompt))
        return Answer(text=text, usage=Usage(input_tokens=len(prompt.split()), output_tokens=len(text.split())))

    async def aclose(self) -> None:
        # TODO: close what __init__ opened.
        return None


def fill(node: dict[str, Any], defs: dict[str, Any], prompt: str) -> Any:
    """A value valid for the JSON schema `node`, with `prompt` in its string fields (the placeholder answer)."""
    if "$$ref" in node:
        return fill(defs[node["$$ref"].rsplit("/", 1)[-1]], defs, prompt)
    if "const" in node or "enum" in node:
        return node["const"] if "const" in node else node["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            return fill(node[key][0], defs, prompt)
    kind = node.get("type", "string")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {name: fill(sub, defs, prompt) for name, sub in node.get("properties", {}).items()}
    if kind == "array":
        return [fill(node.get("items", {}), defs, prompt) for _ in range(max(node.get("minItems", 1), 1))]
    if kind in ("integer", "number"):
        return node.get("minimum", 0)
    if kind in ("boolean", "null"):
        return False if kind == "boolean" else None
    return prompt.ljust(node.get("minLength", 0), ".")[: node.get("maxLength")]


@hookimpl
def engine_options() -> type[EngineOptions]:
    return ${Title}Options


@hookimpl
def make_client(config: EngineConfig[${Title}Options]) -> ${Title}Client:
    return ${Title}Client(config)


@hookimpl
def translate_sampling(config: EngineConfig[${Title}Options], sampling: SamplingParams) -> dict[str, Any]:
    return map_sampling(sampling, SAMPLING_FIELDS, engine=config.name)
'''

TEST = '''\
"""The $name backend keeps the chainette backend contract: `pip install -e '.[test]'`, then `pytest`."""

from chainette.testing.conformance import BackendConformance


class Test${Title}Backend(BackendConformance):
    backend = "$name"
    # TODO: "openai" or "ollama" once the client speaks one of those wire formats: the checks then also run
    # against chainette.testing.FakeServer (override engine_options(server) to pass an api_key or options).
    wire_format = None
'''

FILES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    "src/$package/__init__.py": MODULE,
    "tests/test_conformance.py": TEST,
}


def render(name: str) -> dict[str, str]:
    """The skeleton's files for backend `name`: relative path -> text. ChainetteError for a name that cannot be used."""
    if not NAME_PATTERN.fullmatch(name):
        raise ChainetteError(
            f"'{name}' cannot name a backend: use lower-case letters, digits and underscores, starting with a letter and not "
            "ending with an underscore (it becomes the entry point NAME, the package chainette_NAME and the distribution "
            "chainette-NAME). For example: chainette backends new mybackend"
        )
    values = {
        "name": name,
        "package": f"chainette_{name}",
        "dist": f"chainette-{name}",
        "Title": "".join(part.capitalize() for part in name.split("_")),
        "core": core_requirement(__version__),
    }
    return {Template(path).substitute(values): Template(text).substitute(values) for path, text in FILES.items()}


def write_skeleton(name: str, parent: Path) -> Path:
    """Write the skeleton for backend `name` into `parent`/chainette-`name` (which must not exist) and return that folder."""
    files = render(name)
    target = parent / f"chainette-{name}"
    if target.exists():
        raise ChainetteError(f"{target} already exists; choose another backend name, or move that folder away and run the command again.")
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def core_requirement(version: str) -> str:
    """The chainette-core version range a new backend accepts: this minor series for 0.x, this major series after."""
    major, minor = (int(part) for part in re.findall(r"\d+", version)[:2])
    upper = f"{major}.{minor + 1}" if major == 0 else str(major + 1)
    return f">={major}.{minor},<{upper}"
