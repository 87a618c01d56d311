"""Frontier records: a commit's line round-trips, its row count is read from its leading `n`, and a row a step
answered from the response cache says so (`cached`) while other lines stay as they were; a line's head (row count,
source, first row's id) read without decoding the rows is what decoding it gives."""

from __future__ import annotations

import random

import orjson

from chainette.frontier import Commit, Row, commits, count_rows, head, heads, rows


def test_commits_round_trip_and_only_cached_ones_carry_the_flag(tmp_path):
    asked = Commit("r1", [Row("r1", {"a": {"x": 1}}, "a", index=1)])
    cached = Commit("r2", [Row("r2", {"a": {"x": 2}}, "a", index=2)], cached=True)
    filtered = Commit("r3")
    path = tmp_path / "frontier.jsonl"
    path.write_bytes(asked.encode() + cached.encode() + filtered.encode())
    assert b"cached" not in asked.encode() and b'"cached":true' in cached.encode()
    assert [Commit.decode(line) for line in path.read_bytes().splitlines(keepends=True)] == [asked, cached, filtered]
    assert count_rows(path) == 2 and [row.row_id for row in rows(path)] == ["r1", "r2"]


def test_a_commit_s_head_is_what_decoding_it_whole_gives(tmp_path):
    """Randomised: ids with quotes, backslashes, control characters, non-ASCII text and `"n":` look-alikes; filtered,
    single, fan-out and cached commits."""
    pieces = ['"', "\\", "\n", "\x00", "é", "😀", '","rows":[{"row_id":"x', '{"n":2,', "7", "-0", "a b"]
    draw = random.Random(7)
    lines = []
    for _ in range(2000):
        source = "".join(draw.choice(pieces) for _ in range(draw.randrange(0, 5))) or str(draw.randrange(10**6))
        children = [
            Row(f"{source}-{child}" if draw.random() < 0.5 else source, {"s": {"t": source}}, "s")
            for child in range(draw.choice([0, 1, 1, 3]))
        ]
        lines.append(Commit(source, children, cached=draw.random() < 0.3).encode())
    path = tmp_path / "frontier.jsonl"
    path.write_bytes(b"".join(lines))
    wanted = [(len(commit.rows), commit.source, commit.rows[0].row_id if commit.rows else None) for commit in commits(path)]
    assert [head(line) for line in lines] == wanted and list(heads(path)) == wanted


def test_a_line_not_written_as_encode_writes_it_is_read_whole():
    line = orjson.dumps({"source": "s", "n": 1, "rows": [{"ctx": {}, "direct": "d", "row_id": "r"}]})
    assert head(line) == (1, "s", "r")
