"""The step stage: for each row, render the prompts, look the request up in the response cache, else send it
through the engine (with the core's retry policy), validate the answer against the output model, ask once for a
repair when it does not fit, and store the valid answer in the cache."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from chainette.cache import CacheSetting, ResponseCache, step_cache
from chainette.client import Answer, Request, Usage
from chainette.errors import BackendError, EngineError, RowError, RunInterrupted, describe_validation_error, truncated
from chainette.execution.context import keep
from chainette.execution.engine_pool import RunningEngine
from chainette.execution.feed import Source
from chainette.execution.files import Stage
from chainette.execution.prompts import Prompts
from chainette.execution.stopping import first_failure_cancels
from chainette.frontier import Row
from chainette.nodes import Step
from chainette.plugins import translate_sampling
from chainette.policy import SameErrorStop, complete_with_retries
from chainette.schema import json_schema, parse_answer, repair_messages, schema_name

YIELD_EVERY = 64


@dataclass
class StepStage(Stage):
    """Runs one Step over the rows of a frontier, keeping the engine's `max_concurrency` requests in flight."""

    step: Step
    engine: RunningEngine
    response_cache: ResponseCache | None = None
    cache_setting: CacheSetting = True

    def __post_init__(self) -> None:
        step = self.step
        self.prompts = Prompts.of(step)
        self.schema, self.schema_name = json_schema(step.output_model), schema_name(step.output_model)
        self.sampling = translate_sampling(self.engine.config, step.sampling)
        self.samples = (step.sampling.n if step.sampling else None) or 1
        self.single_sampling = {key: value for key, value in self.sampling.items() if key != "n"}
        config = self.engine.config
        self.same_error = SameErrorStop(step.id, config.name, config.backend, advice=config.options.same_error_advice)
        self.cache = step_cache(self.response_cache, self.cache_setting, self.engine.config, step, self.schema, self.single_sampling)

    async def process(self, source: Source) -> None:
        """Answer every row of `source` until the rows run out or the run stops; an EngineError stops the step."""

        async def worker() -> None:
            count = 0
            while (row := await source.next()) is not None:
                await self._answer_row(row)
                count += 1
                if count % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # rows answered from the cache never wait: let signals and progress in

        await first_failure_cancels([worker() for _ in range(self.engine.config.options.max_concurrency)])

    async def _answer_row(self, row: Row) -> None:
        try:
            answers = await self._answers(row)
        except RunInterrupted:
            return  # the run stopped before the row's requests were all sent: the row is left for the resume
        except EngineError:
            raise
        except BackendError as exc:
            self.stats.session.rows += 1
            self._fail(row, exc)
            return
        self.stats.session.rows += 1
        self.same_error.succeeded()
        self.stats.ok += 1
        self._commit(row, answers)

    def _commit(self, row: Row, answers: list[tuple[dict[str, Any], Answer]]) -> None:
        """Write the row's output lines and commit it: one row, or with `n` candidates, one child per candidate."""
        children = []
        for index, (data, answer) in enumerate(answers):
            ctx = keep({**row.ctx, self.step.id: data}, self.kept, self.step.id)
            child = row.passed_on(ctx, self.step.id, index if self.samples > 1 else None)
            line = {**data, "row_id": child.row_id, "row_index": row.index}
            if answer.reasoning is not None:
                key = f"{self.step.id}_reasoning"
                ctx[key] = line[key] = answer.reasoning
            if self.files.outputs is not None:
                self.files.outputs.write(line)
            children.append(child)
        self.files.commit(row, children)
        self.stats.rows_out += len(children)

    def _fail(self, row: Row, exc: BackendError) -> None:
        """Send the row to the errors file, unless the step is stopping; raise the step's EngineError once its first
        rows all failed alike (the rows failing after that are left undecided, for the resume)."""
        if self.same_error.stop is None:
            self.stats.failed += 1
            self.files.fail(row, exc.kind, str(exc), exc.raw)
        stop = self.same_error.failed(exc)
        if stop is not None:
            raise stop from None

    async def _answers(self, row: Row) -> list[tuple[dict[str, Any], Answer]]:
        """The row's `samples` validated candidates: from the cache where it has them, else requested (and then stored)."""
        request = self._request(row)
        if self.cache is None:
            return await self._requested(request, self.samples)
        keys = [self.cache.key(request, sample, row.row_id) for sample in range(self.samples)]
        found = [self._cached(key) for key in keys]
        missing = [sample for sample, hit in enumerate(found) if hit is None]
        if not missing:
            self.stats.session.cached += 1
            return [hit for hit in found if hit is not None]
        for sample, fresh in zip(missing, await self._requested(request, len(missing)), strict=True):
            self.cache.save(keys[sample], fresh[1])
            found[sample] = fresh
        return [hit for hit in found if hit is not None]

    def _cached(self, key: bytes) -> tuple[dict[str, Any], Answer] | None:
        """The stored answer under `key`, validated again (the output model's validators may have changed); else None."""
        assert self.cache is not None
        hit = self.cache.lookup(key)
        if hit is None:
            return None
        try:
            data = self._validate(hit.text)
        except ValidationError:
            return None
        self.stats.session.saved_input_tokens += hit.input_tokens
        self.stats.session.saved_output_tokens += hit.output_tokens
        return data, Answer(hit.text, hit.reasoning, Usage(hit.input_tokens, hit.output_tokens))

    async def _requested(self, request: Request, count: int) -> list[tuple[dict[str, Any], Answer]]:
        """`count` validated candidates: those one request returns (a server that honours `n`, when all the row's are
        wanted), then one request each for the rest; each candidate gets at most one repair request, and one that
        still fails fails the row."""
        single = request if self.samples == 1 else replace(request, sampling=self.single_sampling)
        first = await self._send(request if count == self.samples else single)
        candidates = [first, *first.alternatives][:count]
        if len(candidates) < count:
            candidates += await asyncio.gather(*(self._send(single) for _ in range(count - len(candidates))))
        return [await self._validated(request, answer) for answer in candidates]

    async def _validated(self, request: Request, answer: Answer) -> tuple[dict[str, Any], Answer]:
        """The answer's data and the answer it came from, after at most one repair request (its usage then counting both)."""
        try:
            return self._validate(answer.text), answer
        except ValidationError as exc:
            if answer.cut_off:
                raise truncated(self.engine.config.name, answer, exc) from None
            first_error = describe_validation_error(exc)
        messages = repair_messages(request.messages, answer.text, first_error)
        repair = replace(request, messages=messages, sampling=self.single_sampling)
        self.stats.session.repairs += 1
        repaired = await self._send(repair)
        usage = Usage(answer.usage.input_tokens + repaired.usage.input_tokens, answer.usage.output_tokens + repaired.usage.output_tokens)
        try:
            return self._validate(repaired.text), replace(repaired, usage=usage)
        except ValidationError as exc:
            if repaired.cut_off:
                raise truncated(self.engine.config.name, repaired, exc) from None
            raise RowError(
                f"the answer does not match {self.step.output_model.__name__} after one repair request: {describe_validation_error(exc)}",
                kind="validation",
                raw=repaired.text,
            ) from None

    def _request(self, row: Row) -> Request:
        messages = self.prompts.messages(row)
        return Request(messages, self.schema, self.schema_name, self.sampling, self.step.id, row.row_id, self.step.output_model)

    async def _send(self, request: Request) -> Answer:
        assert self.engine.client is not None, "an engine answering through batch jobs has a batch stage"
        return await complete_with_retries(self.engine.client, request, self.engine.gate, self.stats)

    def _validate(self, text: str) -> dict[str, Any]:
        data: dict[str, Any] = parse_answer(self.step.output_model, text).model_dump(mode="json")
        return data
