"""Core test helpers: installable fake plugin distributions and a scripted backend."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import inspect
from pathlib import Path
import textwrap

from pydantic import BaseModel
import pytest

from chainette import Answer, Request, Usage, hookimpl
from chainette.plugins import get_plugins


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Install a plugin distribution on sys.path: a module plus a dist-info folder with its entry point."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(dist: str, backend: str, module: str, source: str, version: str = "1.0") -> None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[chainette.backends]\n{backend} = {module}\n")

    return install


class ScriptedBackend:
    """A backend plugin whose answers come from `answer(request, attempt)` (a text, an Answer, or an exception to
    raise, or an awaitable of one of them); records every request."""

    def __init__(self, answer: Callable[[Request, int], str | Answer | Exception | Awaitable[str | Answer | Exception]]):
        self.answer = answer
        self.requests: list[Request] = []
        self.events: list[str] = []
        self.stop_note: str | None = None  # what stop_engine says keeps running (None: it stopped everything)

    @hookimpl
    def make_client(self, config):
        backend = self

        class Client:
            async def complete(self, request: Request) -> Answer:
                backend.requests.append(request)
                attempt = sum(1 for r in backend.requests if r.row_id == request.row_id and r.step_id == request.step_id)
                await asyncio.sleep(0)
                result = backend.answer(request, attempt)
                if inspect.isawaitable(result):
                    result = await result
                if isinstance(result, Exception):
                    raise result
                return result if isinstance(result, Answer) else Answer(text=result, usage=Usage(3, 2))

            async def aclose(self) -> None:
                backend.events.append(f"close {config.name}")

        return Client()

    @hookimpl
    def ensure_running(self, config):
        self.events.append(f"start {config.name}")

    @hookimpl
    def server_devices(self, config):
        """A model named "m:0" starts a server on GPU 0 (as GpuBackend); a plain "m" takes no GPU."""
        return [f"cuda:{gpu}" for gpu in config.model.rpartition(":")[2].split(",")] if ":" in config.model else None

    @hookimpl
    def stop_engine(self, config):
        self.events.append(f"stop {config.name}")
        return self.stop_note


@pytest.fixture
def scripted() -> Callable[..., ScriptedBackend]:
    """Register a ScriptedBackend as backend 'scripted' and return it."""

    def make(answer: Callable[[Request, int], str | Answer | Exception | Awaitable[str | Answer | Exception]]) -> ScriptedBackend:
        backend = ScriptedBackend(answer)
        get_plugins().register("scripted", backend)
        return backend

    return make


class GpuBackend:
    """A backend whose engines start a server on the GPUs their model names after a colon ("m:0,1"); engines whose
    model starts with "shared-" share one server; a model without a colon takes no GPU (an API)."""

    @hookimpl
    def make_client(self, config):
        raise AssertionError("no request is made")

    @hookimpl
    def server_key(self, config):
        return "shared" if config.model.startswith("shared-") else None

    @hookimpl
    def server_devices(self, config):
        return [f"cuda:{gpu}" for gpu in config.model.rpartition(":")[2].split(",")] if ":" in config.model else None


@pytest.fixture
def gpu_backend() -> None:
    """Register a GpuBackend as backend 'gpus'."""
    get_plugins().register("gpus", GpuBackend())


class Text(BaseModel):
    text: str


class Label(BaseModel):
    label: str
    score: float = 0.0
