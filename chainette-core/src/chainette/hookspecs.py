# mypy: disable-error-code="empty-body"
# Hookspecs only declare a hook's signature and document it: pluggy never calls their bodies.
"""The plugin contract. A backend is a module of `@hookimpl` functions named by an entry point; a runner (a plugin
with `make_runner` and no `make_client`, such as chainette-ray) runs whole chains elsewhere (`chainette run --on`).

Chainette calls a backend's hooks only for engines whose `backend` is that entry point's name,
so an implementation never has to check which backend a config belongs to. Hooks are called
with keyword arguments; an implementation may accept a subset of them. A backend annotates the
configs it receives with its own options class, `EngineConfig[MyOptions]`: the core validated
them with the model `engine_options` returned. `config.endpoint` is always one URL or None.
"""

from __future__ import annotations

from pathlib import Path
import threading
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pydantic import BaseModel
    import typer

    from chainette.batch import BatchClient
    from chainette.client import Client
    from chainette.engines import EngineConfig, EngineOptions
    from chainette.pricing import Price
    from chainette.run.runner import Runner
    from chainette.sampling import SamplingParams

hookspec = pluggy.HookspecMarker("chainette")
hookimpl = pluggy.HookimplMarker("chainette")


@hookspec(firstresult=True)
def engine_options() -> type[EngineOptions]:
    """Return the pydantic model (a subclass of `EngineOptions`) of the options this backend accepts."""


@hookspec(firstresult=True)
def backend_aliases() -> list[str]:
    """Return other names engines may give as `backend` for this one (e.g. a name it was known by before)."""


@hookspec(firstresult=True)
def ensure_running(config: EngineConfig[EngineOptions], run_dir: Path | None, cancelled: threading.Event) -> str | None:
    """Make sure the engine can answer and return the base URL to use (None: the configured endpoint).

    Called (in a worker thread, so it may block) before the engine's first request. `run_dir` is
    the run's output directory, for logs (None outside a run). `cancelled` is set when the run is
    stopped meanwhile: a long start-up should check it, clean up and raise. Raise `EngineError`
    when the engine cannot be reached.
    """


@hookspec(firstresult=True)
def server_key(config: EngineConfig[EngineOptions]) -> str | None:
    """A key naming the server this engine runs on; engines with equal keys share it (None: shares nothing).

    The core keeps a shared server's engines started while any of them is needed, so that the
    server is not stopped and restarted between consecutive steps of different engines.
    """


@hookspec(firstresult=True)
def server_devices(config: EngineConfig[EngineOptions]) -> list[str] | None:
    """The devices the server this engine starts occupies while it runs, as `KIND:INDEX` (`cuda:0`; `cuda:*` for every
    GPU); None: it starts no server, or takes no device another could want.

    A lazy engine whose devices overlap those of a lazy engine on another server (another `server_key`) waits until
    the nodes using that one are done, and its server starts after the other stops; other nodes stream.
    """


@hookspec(firstresult=True)
def make_client(config: EngineConfig[EngineOptions]) -> Client:
    """Return a `Client` for the engine; `config.endpoint` holds the URL `ensure_running` gave (or the configured one)."""


@hookspec(firstresult=True)
def make_batch_client(config: EngineConfig[EngineOptions], run_dir: Path | None) -> BatchClient:
    """Return a `chainette.batch.BatchClient` for the engine: a backend that implements this hook can answer a step
    as offline batches (an engine with `batch=True`, or `chainette run --batch`); see docs/batch.md. Called instead of
    `ensure_running` and `make_client` for such an engine; `run_dir` is the run's output directory, for logs. The
    client's `aclose` ends whatever it started (a process, say)."""


@hookspec(firstresult=True)
def translate_sampling(config: EngineConfig[EngineOptions], sampling: SamplingParams) -> dict[str, Any]:
    """Return the wire fields for `sampling`; warn (see `chainette.sampling.map_sampling`) for what cannot be honoured.

    A backend without this hook gets the core's default, `chainette.sampling.DEFAULT_WIRE_NAMES`: temperature,
    top_p, max_tokens, stop, seed, presence_penalty and frequency_penalty under their OpenAI chat-completions
    names, `extra` merged last, and an `UnsupportedSamplingWarning` for top_k, min_p and repetition_penalty.
    """


@hookspec
def check_output_model(config: EngineConfig[EngineOptions], model: type[BaseModel]) -> None:
    """Raise `ConfigError` when the engine cannot be asked for answers following `model` (a schema its structured
    output cannot express, say), naming the field and what to do. Called for every step at the start of a run,
    before any request."""


@hookspec
def check_input_media(config: EngineConfig[EngineOptions], fields: dict[str, str]) -> None:
    """Raise `ConfigError` when the engine cannot take the media a step places in its user prompt, naming the field and
    what to do. `fields` maps each placed media field (`photo`, `chain_input.photo`) to its kind: image, document or
    audio (see `chainette.media`). Called for every step that places media, at the start of a run, before any request.
    A backend that does not implement this hook is taken to send text only: a step placing media on it is refused."""


@hookspec(firstresult=True)
def model_price(config: EngineConfig[EngineOptions]) -> Price | tuple[float, float] | None:
    """The price of the engine's model, if the backend knows it (None: unknown): a `chainette.pricing.Price` (USD per
    million tokens of input, output, and input read from and written to the prompt cache), or a pair (input, output).
    A backend whose batch API is cheaper returns the batch price for an engine with `batch=True` (`BATCH_DISCOUNT`).

    An engine's `price_per_million_*` options take precedence.
    """


@hookspec
def stop_engine(config: EngineConfig[EngineOptions]) -> str | None:
    """Release what `ensure_running` started (a server process, say). Called in a worker thread after the engine's last use.

    Return a short note when what the engine used keeps running (a server someone else started), None when it was stopped.
    """


@hookspec
def register_commands(app: typer.Typer) -> None:
    """Add commands to the `chainette` CLI (a typer app). Called for every plugin, backend or not."""


@hookspec(firstresult=True)
def make_runner(target: str) -> Runner | None:
    """Return a `chainette.run.runner.Runner` for `target`, the value of `--on` (`on=`), when this runner plugin runs
    there (its entry point's name is the target's scheme: `ray`, `ray://HOST:PORT`); None otherwise. Raise `ConfigError`
    for a target it recognises but cannot use, naming what to fix."""
