"""The row answerer: what answering a row of one step means, whichever way its requests travel (one request at a
time in the step stage, batch lines in the batch stage). Ask: the row's request, rendered from its context. Cache:
its candidates found in the response cache, and fresh answers stored there. Validate and repair: an answer checked
against the output model, and the repair request it needs when it does not fit. Decide: the row committed with its
candidates, or failed (with the step's same-error stop)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from chainette.cache import CachedAnswer, CacheSetting, ResponseCache, step_cache
from chainette.client import Answer, Request
from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import BackendError, RowError, describe_validation_error, truncated
from chainette.execution.context import keep
from chainette.execution.files import NodeFiles
from chainette.execution.prompts import Prompts
from chainette.frontier import Row
from chainette.nodes import Step
from chainette.plugins import translate_sampling
from chainette.policy import SameErrorStop
from chainette.schema import json_data, json_schema, parse_answer, repair_messages, schema_name
from chainette.stats import NodeStats
from chainette.values import unwritable, why

Candidate = tuple[dict[str, Any], Answer]
"""One valid answer of a row: its data (the output model's, as JSON) and the answer it came from."""


@dataclass(slots=True)
class Asked:
    """A row to answer: its request, or the RowError saying why its prompts cannot render; for a step that uses the
    cache, the key of each of its candidates and the answer stored under it, if any."""

    row: Row
    request: Request | RowError
    keys: list[bytes]
    stored: list[CachedAnswer | None]


class Unfit(Exception):
    """Raised for an answer that does not fit the output model but may be repaired: `error` is what the repair request
    quotes. The stages catch it to ask for the repair; it never leaves them."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


@dataclass
class RowAnswerer:
    """Answers the rows of `step` on `engine`'s terms, writing to the step's `files` and `stats` (`kept`: the context
    entries its output rows keep). `samples` is how many candidates a row gets (the sampling's `n`)."""

    step: Step
    engine: EngineConfig[EngineOptions]
    files: NodeFiles
    stats: NodeStats
    kept: frozenset[str]
    response_cache: ResponseCache | None
    cache_setting: CacheSetting

    def __post_init__(self) -> None:
        step, engine = self.step, self.engine
        self.prompts = Prompts.of(step)
        self.schema, self.schema_name = json_schema(step.output_model), schema_name(step.output_model)
        self.sampling = translate_sampling(engine, step.sampling)
        self.samples = (step.sampling.n if step.sampling else None) or 1
        self.single_sampling = {key: value for key, value in self.sampling.items() if key != "n"}
        self.same_error = SameErrorStop(step.id, engine.name, engine.backend, advice=engine.options.same_error_advice)
        self.cache = step_cache(self.response_cache, self.cache_setting, engine, step, self.schema, self.single_sampling)

    def request(self, row: Row) -> Request:
        """The request asking all of the row's candidates (a RowError when its prompts cannot be rendered)."""
        messages = self.prompts.messages(row)
        return Request(messages, self.schema, self.schema_name, self.sampling, self.step.id, row.row_id, self.step.output_model)

    def single(self, request: Request) -> Request:
        """`request` asking one candidate."""
        return request if self.samples == 1 else replace(request, sampling=self.single_sampling)

    def keys(self, request: Request, row: Row) -> list[bytes]:
        """The cache key of each of the row's candidates (only for a step that uses the cache)."""
        assert self.cache is not None
        return self.cache.keys_of(request, row.row_id, self.samples)

    def asked(self, rows: list[Row]) -> list[Asked]:
        """Each row's request (or why it cannot be rendered) and, for a step that uses the cache, what the cache holds
        for its candidates (the keys of all the rows looked up at once)."""
        asked = []
        for row in rows:
            try:
                request = self.request(row)
            except RowError as exc:
                asked.append(Asked(row, exc, [], []))
                continue
            asked.append(Asked(row, request, self.keys(request, row) if self.cache is not None else [], []))
        if self.cache is not None:
            stored = iter(self.cache.look_up([key for each in asked for key in each.keys]))
            for each in asked:
                each.stored = [next(stored) for _ in each.keys]
        return asked

    def cached(self, stored: list[CachedAnswer | None]) -> list[Candidate | None]:
        """The candidate each answer `stored` in the cache gives (fresh answers go in through `cache.save`), or None; a
        row whose candidates are all there counts as answered from the cache."""
        found = [self._cached(hit) for hit in stored]
        if None not in found:
            self.stats.session.cached += 1
        return found

    def _cached(self, hit: CachedAnswer | None) -> Candidate | None:
        """The candidate of an answer stored in the cache, validated again (the output model's validators may have changed)."""
        if hit is None:
            return None
        answer = Answer(hit.text, hit.reasoning, hit.usage)
        try:
            data = self.validated(answer)
        except Unfit:
            return None
        self.stats.session.add_saved(hit.usage)
        return data, answer

    def validated(self, answer: Answer) -> dict[str, Any]:
        """The answer's data, valid for the output model. Unfit when it does not fit, a RowError when it was cut off (a
        repair would be cut off again)."""
        try:
            data = json_data(parse_answer(self.step.output_model, answer.text))
        except ValidationError as exc:
            if answer.cut_off:
                raise truncated(self.engine.name, answer, exc) from None
            raise Unfit(describe_validation_error(exc)) from None
        found = unwritable(data)
        if found is not None:
            raise Unfit(f"field '{found[0]}' is {why(found[1])}")
        return data

    def repair(self, request: Request, answer: Answer, unfit: Unfit) -> Request:
        """The repair request for an unfit `answer` to `request`: the question, the answer, and what is wrong with it."""
        self.stats.session.repairs += 1
        return replace(request, messages=repair_messages(request.messages, answer.text, unfit.error), sampling=self.single_sampling)

    def repaired(self, answer: Answer) -> dict[str, Any]:
        """The data of an answer to a repair request; a RowError when it still does not fit (or was cut off)."""
        try:
            return self.validated(answer)
        except Unfit as unfit:
            raise RowError(
                f"the answer does not match {self.step.output_model.__name__} after one repair request: {unfit.error}",
                kind="validation",
                raw=answer.text,
            ) from None

    def commit(self, row: Row, candidates: list[Candidate], *, cached: bool = False) -> None:
        """Decide the row as answered: write its output lines and commit it, one row, or with `n` candidates, one child
        per candidate (`cached`: every candidate came from the response cache)."""
        self.stats.session.rows += 1
        self.same_error.succeeded()
        self.stats.ok += 1
        children = []
        for index, (data, answer) in enumerate(candidates):
            ctx = keep({**row.ctx, self.step.id: data}, self.kept, self.step.id)
            child = row.passed_on(ctx, self.step.id, index if self.samples > 1 else None)
            line = {**data, "row_id": child.row_id, "row_index": row.index}
            if answer.reasoning is not None:
                key = f"{self.step.id}_reasoning"
                ctx[key] = line[key] = answer.reasoning
            if self.files.outputs is not None:
                self.files.outputs.write(line)
            children.append(child)
        self.files.commit(row, children, cached=cached)
        self.stats.rows_out += len(children)

    def fail(self, row: Row, exc: BackendError) -> None:
        """Decide the row as failed: send it to the errors file, unless the step is stopping; raise the step's
        EngineError once its first rows all failed alike (the rows failing after that are left undecided, for the resume)."""
        self.stats.session.rows += 1
        if self.same_error.stop is None:
            self.stats.failed += 1
            self.files.fail(row, exc.kind, str(exc), exc.raw)
        stop = self.same_error.failed(exc)
        if stop is not None:
            raise stop from None
