"""Conformance checks of the contract itself: the backend is found, its options are typed, its client is async,
structured output works through a real chain, sampling reaches the wire or warns, usage is reported."""

from __future__ import annotations

from dataclasses import replace
import inspect
from pathlib import Path
import re
from typing import Any
import warnings

import pytest

from chainette.chain import Chain
from chainette.client import Answer, Client, Usage
from chainette.engines import EngineOptions
from chainette.nodes import Step
from chainette.plugins import get_plugins, translate_sampling
from chainette.sampling import SamplingParams, UnsupportedSamplingWarning
from chainette.testing.conformance.harness import (
    CHAT_PATHS,
    ENGINE,
    EXTRA,
    NO_SERVER,
    SAMPLING,
    SERVER_USAGE,
    Harness,
    Text,
    Verdict,
    carries_schema,
    contains,
    request,
    run,
)
from chainette.testing.server import FakeServer


class ContractChecks(Harness):
    def test_backend_is_found(self) -> None:
        """The backend resolves by its name, loads without error, implements make_client, and comes from its
        distribution's entry point (unless `plugin` registers it by hand)."""
        plugins = get_plugins()
        assert plugins.resolve(self.backend) == self.backend, f"'{self.backend}' is an alias; name the backend by its canonical name"
        info = plugins.found[self.backend]
        assert info.error is None, f"backend '{self.backend}' failed to load: {info.error}"
        assert "make_client" in info.hooks, f"backend '{self.backend}' implements no make_client hook"
        if self.plugin is None:
            assert info.distribution not in ("local", "?"), f"backend '{self.backend}' was not found through an entry point"
            assert info.version not in ("", "?"), f"backend '{self.backend}': its distribution has no version"

    def test_engine_options_is_an_engine_options_subclass(self, server: FakeServer | None) -> None:
        """engine_options (if implemented) returns a subclass of EngineOptions that forbids unknown keys; engines register with it."""
        options_model = get_plugins().call(self.backend, "engine_options")
        if options_model is not None:
            assert isinstance(options_model, type) and issubclass(options_model, EngineOptions), (
                f"engine_options returned {options_model!r}, not a subclass of chainette.EngineOptions"
            )
            assert options_model.model_config.get("extra") == "forbid", "the options model must keep extra='forbid' so typos are refused"
        config = self.register(server)
        assert isinstance(config.options, options_model or EngineOptions)

    def test_make_client_returns_an_async_client(self, server: FakeServer | None) -> None:
        """make_client returns an object with `async complete(request)` and `async aclose()`."""

        async def check() -> None:
            async with self.open_client(self.register(server)) as client:
                assert isinstance(client, Client), f"{type(client).__name__} lacks complete() or aclose()"
                assert inspect.iscoroutinefunction(client.complete), "complete() must be `async def`"
                assert inspect.iscoroutinefunction(client.aclose), "aclose() must be `async def`"

        run(check())

    def test_structured_output_through_a_chain(self, server: FakeServer | None, tmp_path: Path) -> None:
        """A real Chain run gives every row an answer valid for the output model; with a server, every request
        went to the declared chat endpoint and carried the output model's JSON schema."""
        self.register(server)
        step = Step(id="verdict", input_model=Text, output_model=Verdict, engine_name=ENGINE, user_prompt="Judge this: {{text}}")
        rows = [{"text": f"row number {index}"} for index in range(4)]
        # cache=False: every row must reach the backend, whatever earlier runs left in the user's response cache
        result = Chain(name="conformance", steps=[step]).run(rows, output_dir=tmp_path / "run", progress=False, cache=False)
        assert result.errors == [], f"rows failed: {result.errors}"
        verdicts = result["verdict"]
        assert len(verdicts) == len(rows) and all(isinstance(v, Verdict) for v in verdicts)
        if server is None:
            return
        path = self.chat_requests_path()
        sent = [r for r in server.requests if r["path"] in {*CHAT_PATHS.values(), path}]
        assert {r["path"] for r in sent} == {path}, f"requests went to {sorted({r['path'] for r in sent})}"
        for record in sent:
            assert carries_schema(record["body"], Verdict), f"a request did not carry the output schema: {record['body']}"

    def test_sampling_fields_reach_the_wire_or_warn(self, server: FakeServer | None) -> None:
        """translate_sampling (or the core's default without it) returns a dict holding SamplingParams.extra; each
        sampling field set either reaches the wire (the translated dict without a server) or raises an
        UnsupportedSamplingWarning naming it."""
        config = self.register(server)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wire = translate_sampling(config, SAMPLING)
        assert isinstance(wire, dict), f"translate_sampling returned {wire!r}, not a dict"
        assert EXTRA.items() <= wire.items(), f"SamplingParams.extra {EXTRA} is not merged into {wire} (map_sampling does it)"
        sent: Any = wire
        if server is not None:
            run(self.complete(config, replace(request(Text, "sampling"), sampling=wire)))
            sent = server.chat_requests()[-1]
            assert contains(sent, "passed-through"), f"SamplingParams.extra did not reach the wire: {sent}"
        warned = " ".join(str(w.message) for w in caught if issubclass(w.category, UnsupportedSamplingWarning))
        for name in SamplingParams.model_fields.keys() - {"extra", "n"}:  # n: the core sends n requests itself if need be
            value = getattr(SAMPLING, name)
            assert contains(sent, value) or re.search(rf"\b{name}\b", warned), (
                f"sampling field {name}={value!r} was silently dropped: it is not on the wire ({sent}) and no "
                "UnsupportedSamplingWarning names it (use chainette.sampling.map_sampling)"
            )

    def test_usage_is_reported(self, server: FakeServer | None) -> None:
        """complete() returns an Answer whose usage holds non-negative ints: the server's counts when it reports them."""
        answer = run(self.complete(self.register(server), request(Text, "usage")))
        assert isinstance(answer, Answer) and isinstance(answer.text, str), f"complete() returned {answer!r}, not an Answer"
        usage = answer.usage
        assert isinstance(usage, Usage)
        counts = (usage.input_tokens, usage.output_tokens)
        assert all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts), f"usage {counts} is not two ints >= 0"
        if server is not None:
            assert counts == SERVER_USAGE, f"usage {counts}: the server reported (input, output) = {SERVER_USAGE}"
        elif self.reports_usage:
            assert sum(counts) > 0, "usage is 0 (set reports_usage = False if the backend cannot count tokens)"

    def test_several_candidates_come_back_when_n_is_sent(self, server: FakeServer | None) -> None:
        """A backend whose translate_sampling sends `n` returns every candidate: the first as the answer, the others
        as `alternatives` (a backend that does not send `n` is skipped: the core then sends one request per candidate)."""
        config = self.register(server)
        wire = translate_sampling(config, SamplingParams(n=3))
        if 3 not in wire.values():
            pytest.skip("the backend does not send n; the core sends one request per candidate")
        if server is None:
            pytest.skip(NO_SERVER)
        answer = run(self.complete(config, replace(request(Text, "three candidates"), sampling=wire)))
        assert len(answer.alternatives) == 2, f"n=3 gave {1 + len(answer.alternatives)} candidates"
        assert all(isinstance(a, Answer) and a.text for a in answer.alternatives)
