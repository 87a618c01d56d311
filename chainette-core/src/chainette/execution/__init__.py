"""Executing a chain's nodes over rows, in one session of a run (a run may take several sessions: each resume is one).

The rooms, in the order a row meets them:

- `executor`: the `Executor` of one session: runs every node of a segment at once, starts and stops engines, keeps figures.
- `segments`: which top-level nodes stream together and which wait for a server on the same GPUs to stop.
- `recovery`: reopening a node's files as the last session left them (crash repair, rows already decided).
- `rowids`: the ids of the rows a reopened node decided, held a bit each where they are row positions.
- `files`: a node's frontier, feed and output folder, and the errors file.
- `feed`: how a node reads the frontier before it as it is written, and the backpressure between them.
- one stage per node kind: `ingest` (input rows to the first frontier), `step` (LLM calls, a request each) or
  `batching` (LLM calls through batch jobs), `apply` (Python functions), `group` (parallel branches, followed
  row by row and joined back).
- `answering`: a step's row answerer, which both step stages hold: the request, the cache, validation and repair,
  the row committed or failed.
- `flatten`: the final table, one line per row that made it through.
- `stopping`: the run's stop signal (first Ctrl-C or SIGTERM) and its signal handlers.
"""
