"""The batch step stage: a step answered through offline batch jobs (chainette.batch) instead of a request per row.

The step's row answerer (chainette.execution.answering) renders each row and looks it up in the response cache, as
online; the other rows become batch lines, written to batch files, uploaded and submitted, every file and batch id
journaled as soon as it exists. The stage polls the batches with a growing interval, then hands each finished one's
answers to the answerer: valid ones committed (and cached), invalid ones re-asked as repair lines of a follow-up
batch; transient failures and unanswered lines are asked again, row errors go to errors.jsonl. A resumed run
re-attaches to the batches the journal lists as open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from chainette.batch import BatchClient, BatchJournal, BatchStatus, Chunk, FindsBatches, custom_id, parse_custom_id, row_ids_of
from chainette.client import Answer
from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import BackendError, ConfigError, RetryableError, RowError
from chainette.events import BatchChanged, EventBus, Notice
from chainette.execution.answering import Candidate, RowAnswerer, Unfit
from chainette.execution.feed import Source
from chainette.execution.stopping import StopSignal
from chainette.frontier import Row
from chainette.plugins import get_plugins, no_batch_client
from chainette.policy import call_with_retries
from chainette.run.rundir import RunPaths

FIRST_POLL = 1.0
T = TypeVar("T")


@dataclass
class BatchStage:
    """Runs one Step over the rows of a source as jobs of its engine's batch client `batches`, journaled in `folder`: its
    rows asked, validated, repaired and decided by the step's row answerer (chainette.execution.answering). `reread`
    gives the source's rows again, from disk; batch changes and notices go to `bus`."""

    answerer: RowAnswerer
    batches: BatchClient
    control: StopSignal
    folder: Path
    bus: EventBus
    cancel_on_stop: bool
    reread: Callable[[], Iterator[Row]]
    undecided: set[str] = field(default_factory=set, init=False)
    tries: dict[str, int] = field(default_factory=dict, init=False)  # rows asked more than once: how many times
    candidates: dict[str, dict[int, Candidate]] = field(default_factory=dict, init=False)  # valid so far, by sample

    def __post_init__(self) -> None:
        self.stats = self.answerer.stats

    async def process(self, source: Source) -> None:
        """Answer every pending row through batches, until none is left or the run stops. Only the ids of the rows
        waiting are kept in memory: their rows are read again from the source frontier when their answers come."""
        journal = BatchJournal(self.folder)
        waiting = set().union(*(row_ids_of(chunk) for chunk in journal.open_chunks()))
        out = journal.writer(journal.last_round + 1, self.batches)
        while (row := await source.next()) is not None:
            self.undecided.add(row.row_id)
            if row.row_id not in waiting:
                out.write(self._question(row))
        out.close()
        try:
            await self._run(journal)
        finally:
            self.stats.in_flight = 0

    def _rows(self, wanted: set[str]) -> dict[str, Row]:
        """The undecided rows among `wanted`, read from the source frontier."""
        wanted = wanted & self.undecided
        return {row.row_id: row for row in self.reread() if row.row_id in wanted} if wanted else {}

    async def _run(self, journal: BatchJournal) -> None:
        """Submit, poll and read back the open chunks (new ones come with each follow-up round) until none is left."""
        longest = self.answerer.engine.options.batch_poll_seconds
        delay = first = min(FIRST_POLL, longest)
        while journal.open_chunks() or self._ask_the_rest(journal):
            if self.control.stopping:
                await self._leave(journal)
                return
            for chunk in journal.open_chunks():
                await self._submit(journal, chunk)
                status = await self._call(partial(self._status, chunk))
                if status.state != chunk.state:
                    journal.record(chunk, state=status.state)
                self._announce(chunk, status)
                if status.finished:
                    await self._collect(journal, chunk, status)
                    delay = first
            self.stats.in_flight = sum(chunk.lines for chunk in journal.open_chunks())
            if journal.open_chunks():
                await self._pause(delay)
                delay = min(delay * 2, longest)

    def _ask_the_rest(self, journal: BatchJournal) -> bool:
        """Once no batch is open, ask again the rows still undecided (a repair answer whose other candidates a kill
        lost, say); whether there were any. Each row is asked at most max_retries + 1 times, so this ends."""
        if not self.undecided:
            return False
        error = RowError("the batches gave no usable answer for this row", kind="batch_no_answer")
        out = journal.writer(journal.last_round + 1, self.batches)
        for row in self._rows(set(self.undecided)).values():
            out.write(self._again(row, error))
        out.close()
        return True

    async def _status(self, chunk: Chunk) -> BatchStatus:
        assert chunk.batch_id is not None
        return await self.batches.status(chunk.batch_id)

    async def _submit(self, journal: BatchJournal, chunk: Chunk) -> None:
        """Upload the chunk's file and create its batch, whichever is not done yet, journaling each id at once."""
        batches = self.batches
        uploaded = chunk.file_id is None
        if uploaded:
            journal.record(chunk, file_id=await self._call(lambda: batches.upload(chunk.path)))
        if chunk.batch_id is None:
            file_id = chunk.file_id
            assert file_id is not None
            journal.record(chunk, batch_id=await self._create(file_id, known_new=uploaded), state="submitted")
            self.stats.session.requests += chunk.lines

    async def _create(self, file_id: str, known_new: bool) -> str:
        """The id of the batch of `file_id`, created once: every try but the first of a file `known_new` (uploaded by this
        call) first asks a client that can find batches (chainette.batch.FindsBatches) for the one an earlier try, or
        the run before a kill, may have created without its answer arriving."""
        batches, tried = self.batches, not known_new

        async def attempt() -> str:
            nonlocal tried
            if tried and isinstance(batches, FindsBatches):
                found = await batches.batch_of(file_id)
                if found is not None:
                    return found
            tried = True
            return await batches.create(file_id)

        return await self._call(attempt)

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        return await call_with_retries(call, self.answerer.engine.options, self.stats.session)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less when the run stops meanwhile."""
        with self.control.cancellable() as stopped:
            await asyncio.get_running_loop().run_in_executor(None, stopped.wait, seconds)

    def _question(self, row: Row) -> list[dict[str, Any]]:
        """The row's batch line, or none: a prompt that cannot render fails it, and the cache may answer it."""
        (asked,) = self.answerer.asked([row])
        request = asked.request
        if isinstance(request, RowError):
            self._decide(row, request)
            return []
        if self.answerer.cache is not None:
            found = self.answerer.cached(asked.stored)
            if None not in found:
                self._decide(row, [hit for hit in found if hit is not None], fresh=False)
                return []
        self.candidates.pop(row.row_id, None)
        return [self.batches.line(custom_id("q", 0, row.row_id), request)]

    async def _collect(self, journal: BatchJournal, chunk: Chunk, status: BatchStatus) -> None:
        """Read a finished batch back: decide its rows or ask again (the next round's lines), then mark it done."""
        batches = self.batches
        results = await self._call(lambda: batches.results(status)) if status.result_files else []
        rows = self._rows(row_ids_of(chunk))
        out = journal.writer(chunk.round + 1, batches)
        answered = set()
        for key, outcome in results:
            try:
                kind, sample, row_id = parse_custom_id(key)
            except ValueError:
                continue
            if row_id in rows and row_id in self.undecided:
                answered.add(row_id)
                out.write(self._receive(rows[row_id], kind, sample, outcome))
        for row_id, row in rows.items():
            if row_id not in answered and row_id in self.undecided:
                out.write(self._unanswered(row, status))
        out.close()
        journal.record(chunk, done=True)

    def _unanswered(self, row: Row, status: BatchStatus) -> list[dict[str, Any]]:
        """A row the batch gave no answer for: asked again, unless the batch itself failed (it would fail again)."""
        if status.state == "failed":
            self._decide(
                row,
                RowError(
                    f"engine '{self.answerer.engine.name}': the batch failed: {status.detail or 'no reason given'}", kind="batch_failed"
                ),
            )
            return []
        return self._again(
            row,
            RetryableError(
                f"engine '{self.answerer.engine.name}': the batch ended {status.state} without answering it", kind=f"batch_{status.state}"
            ),
        )

    def _again(self, row: Row, error: BackendError) -> list[dict[str, Any]]:
        """The row asked afresh in the next round, or failed with `error` once it was asked max_retries + 1 times."""
        asked = self.tries.get(row.row_id, 1)
        if asked > self.answerer.engine.options.max_retries:
            self._decide(row, error)
            return []
        self.tries[row.row_id] = asked + 1
        return self._question(row)

    def _receive(self, row: Row, kind: str, sample: int, outcome: Answer | BackendError) -> list[dict[str, Any]]:
        """Take one answered line of `row`: the follow-up lines it needs (a repair, the question again), if any."""
        if isinstance(outcome, RetryableError):
            return self._again(row, outcome)
        if isinstance(outcome, BackendError):
            self._decide(row, outcome)
            return []
        self.stats.session.add_usage(outcome.usage)
        samples = self.answerer.samples
        answers = [(sample, outcome)] if kind == "r" else list(enumerate([outcome, *outcome.alternatives][:samples]))
        if kind == "q" and len(answers) < samples:
            self._decide(row, RowError(f"the batch answered {len(answers)} of the {samples} candidates asked for", kind="bad_response"))
            return []
        repairs = []
        for index, answer in answers:
            try:
                data = self.answerer.repaired(answer) if kind == "r" else self.answerer.validated(answer)
            except Unfit as unfit:
                repairs.append(self._repair(row, index, answer, unfit))
                continue
            except RowError as exc:
                self._decide(row, exc)
                return []
            self.candidates.setdefault(row.row_id, {})[index] = (data, answer)
        if not repairs and len(self.candidates[row.row_id]) == samples:
            self._decide(row, [self.candidates[row.row_id][index] for index in range(samples)])
        return repairs

    def _repair(self, row: Row, sample: int, answer: Answer, unfit: Unfit) -> dict[str, Any]:
        """The repair line for candidate `sample` of `row`."""
        repair = self.answerer.repair(self.answerer.request(row), answer, unfit)
        return self.batches.line(custom_id("r", sample, row.row_id), repair)

    def _decide(self, row: Row, outcome: list[Candidate] | BackendError, fresh: bool = True) -> None:
        """Commit the row with its candidates (storing `fresh` ones in the cache), or fail it; either way it is done."""
        self.undecided.discard(row.row_id)
        self.candidates.pop(row.row_id, None)
        self.tries.pop(row.row_id, None)
        if isinstance(outcome, BackendError):
            self.answerer.fail(row, outcome)
            return
        cache = self.answerer.cache
        if fresh and cache is not None:
            keys = self.answerer.keys(self.answerer.request(row), row)
            for key, (_, answer) in zip(keys, outcome, strict=True):
                cache.save(key, answer)
        self.answerer.commit(row, outcome, cached=not fresh)

    async def _leave(self, journal: BatchJournal) -> None:
        """On a stop: cancel the batches in flight when asked to, else leave them running where they outlive the run;
        say how to go on."""
        submitted = [chunk for chunk in journal.open_chunks() if chunk.batch_id is not None]
        if self.cancel_on_stop or not self.batches.detached:
            await cancel(self.batches, journal)
            verb = "cancelled (their answers so far are kept)" if self.batches.detached else "stopped"
        else:
            verb = "left running on the server"
        self.bus.emit(
            Notice(f"{self.answerer.step.id}: {len(submitted)} batches {verb}; run the same command again to collect their answers.")
        )

    def _announce(self, chunk: Chunk, status: BatchStatus) -> None:
        self.bus.emit(
            BatchChanged(
                node=self.answerer.step.id,
                batch=chunk.batch_id or chunk.name,
                state=status.state,
                completed=status.completed,
                failed=status.failed,
                total=status.total or chunk.lines,
            )
        )


async def cancel(batches: BatchClient, journal: BatchJournal) -> int:
    """Cancel the submitted batches `journal` lists as open; return how many."""
    submitted = [chunk for chunk in journal.open_chunks() if chunk.batch_id is not None]
    for chunk in submitted:
        assert chunk.batch_id is not None
        await batches.cancel(chunk.batch_id)
        journal.record(chunk, state="cancelling")
    return len(submitted)


async def cancel_left_running(run_dir: Path, engines: dict[str, EngineConfig[EngineOptions]], steps: dict[str, str]) -> int:
    """Cancel every batch a stopped run left running on the provider's side (`steps`: step id -> engine name); return
    how many. For a `chainette run` that a Ctrl-C stopped, once the user said so."""
    cancelled = 0
    for step_id, engine in steps.items():
        folder = RunPaths(run_dir).batch_folder(step_id)
        config = engines[engine]
        if not (folder / "journal.jsonl").exists() or not config.options.batch:
            continue
        batches = get_plugins().hooks(config.backend).make_batch_client(config, run_dir)
        try:
            if batches.detached:
                cancelled += await cancel(batches, BatchJournal(folder))
        finally:
            await batches.aclose()
    return cancelled


def left_running(run_dir: Path) -> int:
    """How many submitted batches of the run in `run_dir` its journals list as not collected yet."""
    journals = (BatchJournal(path.parent) for path in RunPaths(run_dir).batches.glob("*/journal.jsonl"))
    return sum(1 for journal in journals for chunk in journal.open_chunks() if chunk.batch_id is not None and chunk.state != "cancelling")


def batch_engines(
    engines: dict[str, EngineConfig[EngineOptions]], used: list[str], *, forced: bool
) -> dict[str, EngineConfig[EngineOptions]]:
    """`engines`, with `batch` on for those whose backend can run batch jobs when `forced` (`--batch`); a ConfigError
    when an engine asks for batches its backend cannot run, or when `forced` finds no step that can."""
    plugins = get_plugins()
    capable = {name for name in used if plugins.hooks(engines[name].backend).implements("make_batch_client")}
    for name in used:
        if engines[name].options.batch and name not in capable:
            raise no_batch_client(engines[name])
    if not forced:
        return engines
    if not capable:
        raise ConfigError(
            "--batch: no step's engine can run batch jobs (the openai, anthropic, gemini and vllm backends can); run without --batch."
        )
    batched = {
        name: engines[name].model_copy(update={"options": engines[name].options.model_copy(update={"batch": True})}) for name in capable
    }
    return {**engines, **batched}
