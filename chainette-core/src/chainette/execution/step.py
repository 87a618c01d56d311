"""The step stage: answers a step's rows one request at a time, keeping its engine's `max_concurrency` requests in
flight. Each row is asked, looked up, validated, repaired and decided by the step's row answerer
(chainette.execution.answering); its requests go through the engine with the core's retry policy. A step that uses the
response cache takes the rows at hand (up to LOOK_AHEAD) together, so that their keys are looked up in one query."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import cast

from chainette.client import Answer, Request
from chainette.errors import BackendError, EngineError, RowError, RunInterrupted
from chainette.execution.answering import Asked, Candidate, RowAnswerer, Unfit
from chainette.execution.engine_pool import RunningEngine
from chainette.execution.feed import Source
from chainette.execution.stopping import first_failure_cancels
from chainette.policy import complete_with_retries

YIELD_EVERY = 64
LOOK_AHEAD = 256


@dataclass
class StepStage:
    """Runs one Step over the rows of a source through `engine`'s client, a request per candidate (and per repair)."""

    answerer: RowAnswerer
    engine: RunningEngine

    async def process(self, source: Source) -> None:
        """Answer every row of `source` until the rows run out or the run stops; an EngineError stops the step."""

        rows = Asking(source, self.answerer)

        async def worker() -> None:
            count = 0
            while (asked := rows.take() or await rows.next()) is not None:
                try:
                    candidates, cached = await self._candidates(asked)
                except RunInterrupted:
                    pass  # the run stopped before the row's requests were all sent: the row is left for the resume
                except EngineError:
                    raise
                except BackendError as exc:
                    self.answerer.fail(asked.row, exc)
                else:
                    self.answerer.commit(asked.row, candidates, cached=cached)
                count += 1
                if count % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # rows answered from the cache never wait: let signals and progress in

        await first_failure_cancels([worker() for _ in range(self.engine.config.options.max_concurrency)])

    async def _candidates(self, asked: Asked) -> tuple[list[Candidate], bool]:
        """The row's candidates, from the cache where it has them, else requested (and then stored); and whether the
        cache had them all."""
        answerer, cache, request = self.answerer, self.answerer.cache, asked.request
        if isinstance(request, RowError):
            raise request
        if cache is None:
            return await self._requested(request, answerer.samples), False
        found = answerer.cached(asked.stored)
        missing = [sample for sample, hit in enumerate(found) if hit is None]
        if missing:
            for sample, fresh in zip(missing, await self._requested(request, len(missing)), strict=True):
                cache.save(asked.keys[sample], fresh[1])
                found[sample] = fresh
        return cast(list[Candidate], found), not missing  # every sample missing was just filled

    async def _requested(self, request: Request, count: int) -> list[Candidate]:
        """`count` valid candidates: those one request returns (a server that honours `n`, when all the row's are
        wanted), then one request each for the rest; each candidate gets at most one repair request, and one that
        still fails fails the row."""
        first = await self._send(request if count == self.answerer.samples else self.answerer.single(request))
        answers = [first, *first.alternatives][:count]
        if len(answers) < count:
            single = self.answerer.single(request)
            answers += await asyncio.gather(*(self._send(single) for _ in range(count - len(answers))))
        candidates = []
        for answer in answers:  # a loop, not an async comprehension, and no coroutine for a fit answer: fewer per row
            try:
                candidates.append((self.answerer.validated(answer), answer))
            except Unfit as unfit:
                candidates.append(await self._repaired(request, answer, unfit))
        return candidates

    async def _repaired(self, request: Request, answer: Answer, unfit: Unfit) -> Candidate:
        """The candidate an unfit answer's repair request gives (its usage counting both), or a RowError."""
        repaired = await self._send(self.answerer.repair(request, answer, unfit))
        return self.answerer.repaired(repaired), replace(repaired, usage=answer.usage + repaired.usage)

    def _send(self, request: Request) -> Awaitable[Answer]:
        """The engine's answer to `request`, with the core's retry policy (a plain function: one coroutine fewer per request)."""
        assert self.engine.client is not None, "an engine answering through batch jobs has a batch stage"
        return complete_with_retries(self.engine.client, request, self.engine.gate, self.answerer.stats)


class Asking:
    """The rows of `source` asked by `answerer` (chainette.execution.answering.Asked), for the stage's workers to take one
    at a time: a row at a time for a step without the cache, else the rows at hand, up to LOOK_AHEAD, taken by one
    worker while the others wait for them. Once the run stops, the rows taken already are still answered where the
    cache holds their answers; their requests are not sent (the engine's gate is closed)."""

    def __init__(self, source: Source, answerer: RowAnswerer):
        self.source = source
        self.answerer = answerer
        self.buffer: deque[Asked] = deque()
        self.ended = False
        self._taking = asyncio.Lock() if answerer.cache is not None else None

    def take(self) -> Asked | None:
        """The next row taken ahead, at once; None when there is none (then `next` waits for one)."""
        return self.buffer.popleft() if self.buffer else None

    async def next(self) -> Asked | None:
        """The next row, once there is one; None once the rows run out (or the run stops)."""
        if (taken := self.take()) is not None:
            return taken
        if self._taking is None:
            row = await self.source.next()
            return None if row is None else self.answerer.asked([row])[0]
        async with self._taking:
            if not self.buffer and not self.ended:
                row = await self.source.next()
                if row is None:
                    self.ended = True
                else:
                    self.buffer.extend(self.answerer.asked([row, *self.source.ready(LOOK_AHEAD - 1)]))
        return self.take()
