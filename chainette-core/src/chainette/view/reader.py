"""A run directory as the viewer reads it: the chain's nodes and figures, and each node's rows page by page.

A node's rows have a status: `ok` (its output folder; for the input node, the input rows its frontier holds), `failed`
(its lines of errors.jsonl) or `filtered` (the rows it received and passed nothing on from: the empty commits of its
frontier in the state folder, shown with the fields the node received). Each row comes with its chain input (found by `row_index` in the input node's frontier, or in
flattened/ when the state folder is gone). Rows are shown in the order they were written; a search scans forward
from the cursor until a page is full or SCAN_LIMIT rows were read, and returns where to go on from.
"""

from __future__ import annotations

from collections.abc import Iterator
import json
from pathlib import Path
from typing import Any

from chainette.errors import ChainetteError
from chainette.nodes import INPUT_ID
from chainette.run.rundir import FLATTENED, GRAPH_FILE, RUN_FILE, SESSIONS_FILE, STAGED_OUTPUTS, RunPaths
from chainette.runlock import holder
from chainette.view.lookup import KeyedLines, answered_from_cache, flattened_inputs, frontier_rows
from chainette.view.pages import Position, Table, decode_cursor, encode_cursor, numbered
from chainette.view.query import matcher

STATUSES = ("ok", "failed", "filtered")
SCAN_LIMIT = 20_000
"""The most rows one request reads while searching; the page then says where the search stopped."""
PAGE_LIMIT = 200
REASONING = "_reasoning"
CACHED = "cached"  # the key of the lookup of whether a step's rows came from the response cache


def not_a_run(root: Path, why: str) -> ChainetteError:
    return ChainetteError(
        f"{root} is not a chainette run directory: {why}. Give `chainette view` the output directory of a "
        "`chainette run` (its -o OUT), which holds graph.json from the moment the run starts."
    )


class RunView:
    """The run in `root`, read on demand; tables and lookups are kept so that their indexes grow across requests."""

    def __init__(self, root: Path):
        self.paths = RunPaths(root)
        self.graph = _read_graph(root)
        self.node_ids = [node["id"] for node in self.graph["nodes"]]
        self.step_ids = {node["id"] for node in self.graph["nodes"] if node.get("kind") == "step"}
        self._tables: dict[tuple[str | None, str], Table] = {}
        self._frontiers: dict[tuple[str, str], KeyedLines] = {}

    def summary(self) -> dict[str, Any]:
        """The chain, its nodes with their figures, the run's record and whether a run is working in it now."""
        record = _read_json(self.paths.root / RUN_FILE) or {}
        running = holder(self.paths.state) is not None if self.paths.state.is_dir() else False
        live = _live_figures(self.paths.state / SESSIONS_FILE) if running else {}
        steps = record.get("steps", {})
        nodes = [
            {**node, "figures": steps.get(node["id"]), "live": live.get(node["id"]), "outputs": self._has_outputs(node["id"])}
            for node in self.graph["nodes"]
        ]
        run = {key: value for key, value in record.items() if key not in ("steps", "sessions")}
        return {
            "chain": self.graph.get("chain"),
            "root": str(self.paths.root),
            "running": running,
            "run": run,
            "nodes": nodes,
            "filtered_available": self.paths.state.is_dir(),
        }

    def signature(self) -> str:
        """Changes whenever the run writes: the sizes and times of its record and of every file rows are read from."""
        files = [self.paths.root / RUN_FILE, self.paths.errors, self.paths.state / SESSIONS_FILE]
        for node_id in self.node_ids:
            files += self._outputs(node_id)
        parts = []
        for path in files:
            try:
                stat = path.stat()
            except OSError:
                continue
            parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
        return str(hash("|".join(parts)))

    def page(self, node: str | None, status: str, *, query: str = "", cursor: str | None = None, limit: int = 50) -> dict[str, Any]:
        """One page of `node`'s rows with `status` (every node's failed rows for node None) that match `query`,
        from `cursor`; with `next`, the cursor to go on from, and `more`, whether the scan stopped before the end."""
        if node is not None and node not in self.node_ids:
            raise KeyError(f"no node {node!r} in this run; nodes: {', '.join(self.node_ids)}")
        if status not in STATUSES or (node is None and status != "failed"):
            raise KeyError(f"no status {status!r}; statuses: {', '.join(STATUSES)}")
        match, size = matcher(query), max(1, min(limit, PAGE_LIMIT))
        start = decode_cursor(cursor)
        items: list[dict[str, Any]] = []
        scanned, last, more = 0, start, False
        for position, record in self._records(node, status, start):
            scanned, last = scanned + 1, position
            if record is not None and (match is None or match(record)):
                items.append(self._item(node, status, record))
            if len(items) >= size or scanned >= SCAN_LIMIT:
                more = True
                break
        after = (last[0], last[1] + 1) if scanned else start
        return {"items": items, "cursor": encode_cursor(start), "next": encode_cursor(after), "more": more, "scanned": scanned}

    def _records(self, node: str | None, status: str, start: Position) -> Iterator[tuple[Position, dict[str, Any] | None]]:
        """Every row read from `start` on, as the page shows it; None for a row read that is not one of them (another
        node's error, a commit that passed rows on), so that a request's scan is bounded by the rows it reads."""
        for position, record in self._table(node, status).rows_from(start):
            if record is None or (status == "ok" and node != INPUT_ID):
                yield position, record
            elif status == "filtered" and node is not None:
                yield position, self._received(node, record["source"])
            elif status == "ok":
                row = record["rows"][0]
                yield position, {"row_id": row["row_id"], "row_index": row["index"], **row["ctx"][INPUT_ID]}
            else:
                yield position, record if node is None or record.get("step_id") == node else None

    def _table(self, node: str | None, status: str) -> Table:
        key = (node, status)
        if key not in self._tables:
            if status == "ok" and node == INPUT_ID:
                frontier = self.paths.frontier(node)
                self._tables[key] = Table(lambda: [frontier], keep=lambda raw: not raw.startswith(b'{"n":0,'))
            elif status == "ok" and node is not None:
                self._tables[key] = Table(lambda: self._outputs(node))
            elif status == "filtered" and node is not None:
                frontier = self.paths.frontier(node)
                self._tables[key] = Table(lambda: [frontier], keep=lambda raw: raw.startswith(b'{"n":0,'))
            else:
                errors = self.paths.errors
                self._tables[key] = Table(lambda: [errors])
        return self._tables[key]

    def _outputs(self, node_id: str) -> list[Path]:
        return numbered(self.paths.root / node_id, self.paths.state / STAGED_OUTPUTS / node_id)

    def _has_outputs(self, node_id: str) -> bool:
        return (self.paths.root / node_id).is_dir() or (self.paths.state / STAGED_OUTPUTS / node_id).is_dir()

    def _item(self, node: str | None, status: str, record: dict[str, Any]) -> dict[str, Any]:
        """A row as the page shows it: its fields, its reasoning text apart, its chain input, and for a step's answered
        row whether it came from the response cache (`cached`; None where the state folder no longer tells)."""
        reasoning = {key: record.pop(key) for key in list(record) if key.endswith(REASONING) and isinstance(record[key], str)}
        item = {"status": status, "node": node, "row": record, "reasoning": reasoning, "input": self.chain_input(record.get("row_index"))}
        if status == "ok" and node is not None and node in self.step_ids:
            item["cached"] = self._answers(node).find(record.get("row_id"))
        return item

    def _received(self, node: str, row_id: str) -> dict[str, Any]:
        """The row `node` received as `row_id` (looked up in the frontiers of the nodes before it): its id and index, and
        the fields of its input where a frontier still holds it."""
        for source in [edge[0] for edge in self.graph.get("edges", []) if edge[1] == node] or [INPUT_ID]:
            row = self._frontier(source, "row_id").find(row_id)
            if row is not None:
                return {"row_id": row_id, "row_index": row.get("index"), **row.get("ctx", {}).get(row.get("direct"), {})}
        return {"row_id": row_id, "row_index": None}

    def chain_input(self, row_index: Any) -> dict[str, Any] | None:
        """The chain input row at `row_index`, or None where the run directory no longer holds it."""
        if not isinstance(row_index, int):
            return None
        row = self._frontier(INPUT_ID, "index").find(row_index)
        if row is not None:
            found: dict[str, Any] | None = row.get("ctx", {}).get(INPUT_ID)
            return found
        for path in numbered(self.paths.root / FLATTENED):
            if path.suffix == ".jsonl":
                values: dict[str, Any] | None = self._flattened(path).find(row_index)
                if values is not None:
                    return values
        return None

    def _frontier(self, node_id: str, key: str) -> KeyedLines:
        if (node_id, key) not in self._frontiers:
            self._frontiers[(node_id, key)] = KeyedLines(self.paths.frontier(node_id), frontier_rows(key))
        return self._frontiers[(node_id, key)]

    def _answers(self, node_id: str) -> KeyedLines:
        if (node_id, CACHED) not in self._frontiers:
            self._frontiers[(node_id, CACHED)] = KeyedLines(self.paths.frontier(node_id), answered_from_cache)
        return self._frontiers[(node_id, CACHED)]

    def _flattened(self, path: Path) -> KeyedLines:
        if (str(path), FLATTENED) not in self._frontiers:
            self._frontiers[(str(path), FLATTENED)] = KeyedLines(path, flattened_inputs)
        return self._frontiers[(str(path), FLATTENED)]


def _read_graph(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise not_a_run(root, "no such directory")
    graph = _read_json(root / GRAPH_FILE)
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise not_a_run(root, f"it has no readable {GRAPH_FILE}")
    return graph


def _read_json(path: Path) -> Any:
    """A JSON file's content; None when it is missing or unreadable (being rewritten, say)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _live_figures(path: Path) -> dict[str, Any]:
    """The running session's figures per node, from the sessions file a run rewrites about once a second."""
    sessions = _read_json(path)
    if not isinstance(sessions, list) or not sessions or not isinstance(sessions[-1], dict):
        return {}
    nodes: dict[str, Any] = sessions[-1].get("nodes", {})
    return nodes
