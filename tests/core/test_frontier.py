"""Frontier records: a commit's line round-trips, its row count is read from its leading `n`, and a row a step
answered from the response cache says so (`cached`) while other lines stay as they were."""

from __future__ import annotations

from chainette.frontier import Commit, Row, count_rows, rows


def test_commits_round_trip_and_only_cached_ones_carry_the_flag(tmp_path):
    asked = Commit("r1", [Row("r1", {"a": {"x": 1}}, "a", index=1)])
    cached = Commit("r2", [Row("r2", {"a": {"x": 2}}, "a", index=2)], cached=True)
    filtered = Commit("r3")
    path = tmp_path / "frontier.jsonl"
    path.write_bytes(asked.encode() + cached.encode() + filtered.encode())
    assert b"cached" not in asked.encode() and b'"cached":true' in cached.encode()
    assert [Commit.decode(line) for line in path.read_bytes().splitlines(keepends=True)] == [asked, cached, filtered]
    assert count_rows(path) == 2 and [row.row_id for row in rows(path)] == ["r1", "r2"]
