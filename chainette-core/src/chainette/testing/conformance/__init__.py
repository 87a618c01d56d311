"""The backend conformance suite: one pytest check per item of the contract every backend keeps.

A backend's tests subclass `BackendConformance` and name the backend; pytest then runs every check:

    from chainette.testing.conformance import BackendConformance

    class TestMyBackend(BackendConformance):
        backend = "mybackend"
        wire_format = "openai"  # "ollama", or None for a backend with its own protocol

Backends speaking the OpenAI chat-completions or Ollama /api/chat format are pointed at a loopback
`FakeServer` (override `engine_options` to shape the register_engine() arguments); with
`wire_format = None` the checks that need the server are skipped and the rest run without one.
The checks are synchronous (each runs its own event loop), so pytest-asyncio is not needed.
"""

from __future__ import annotations

from typing import Any

from chainette.testing.conformance.concurrency import ConcurrencyChecks
from chainette.testing.conformance.contract import ContractChecks
from chainette.testing.conformance.failures import FailureChecks

__all__ = ["BackendConformance"]


class BackendConformance(ContractChecks, FailureChecks, ConcurrencyChecks):
    """The checks; subclass it with `backend` set. Not collected itself (`__test__`); subclasses are.

    Attributes a subclass may set:
      backend: the backend's name (required);
      model: the model engines name (FakeServer serves it);
      wire_format: "openai" (FakeServer's /v1/chat/completions), "ollama" (/api/chat), or None; a backend
        with a provider API of its own names it, sets `chat_path`, and runs the checks against a FakeServer
        subclass serving that API (`FakeServer.routes`): `server_class`, or its own `server` fixture;
      chat_path: the path its chat requests go to, for a wire format CHAT_PATHS does not know;
      server_class: the FakeServer (sub)class the checks run against: a provider's own stand-in;
      plugin: a module of hooks to register by hand when the backend is not installed (the entry
        point check is then skipped);
      reports_usage: without a server, whether answers must report some token usage;
      deterministic: without a server, whether the same request always gets the same answer (the
        concurrency check compares concurrent answers with sequential ones).
    """

    __test__ = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__test__ = True
