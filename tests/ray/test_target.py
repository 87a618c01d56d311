"""The runner's target: where the run goes and its block settings, from the query or the environment, and what it
says about a malformed one."""

from __future__ import annotations

import pytest

from chainette import ConfigError
from chainette_ray.target import parse_target


def test_a_local_target_takes_ray_address_and_options_from_the_query_over_the_environment(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setenv("CHAINETTE_RAY_BLOCK_ROWS", "100")
    monkeypatch.setenv("CHAINETTE_RAY_IN_FLIGHT", "3")
    target = parse_target("ray?block_rows=7&cpus_per_block=0.5&max_retries=0")
    assert (target.address, target.block_rows, target.in_flight, target.cpus_per_block, target.max_retries) == (
        "10.0.0.1:6379",
        7,
        3,
        0.5,
        0,
    )
    assert not target.starts_cluster


def test_without_ray_address_the_run_starts_its_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert parse_target("ray").starts_cluster
    assert parse_target("ray://head:10001").address == "ray://head:10001"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rayx", "expected 'ray'"),
        ("ray://head:port", "the port must be a number"),
        ("ray?blocks=3", "unknown option blocks. The options are block_rows"),
        ("ray?block_rows=0", r"--on ray\?block_rows=0: block_rows must be a positive number"),
        ("ray?cpus_per_block=x", "cpus_per_block must be a positive number"),
    ],
)
def test_a_malformed_target_is_refused_naming_the_part_to_fix(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_target(text)


def test_a_bad_option_from_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("CHAINETTE_RAY_IN_FLIGHT", "many")
    with pytest.raises(ConfigError, match="CHAINETTE_RAY_IN_FLIGHT: in_flight must be a positive number"):
        parse_target("ray")


def test_batch_jobs_are_refused_before_anything_is_opened(tmp_path):
    from chainette.chain import Chain
    from chainette.run.options import RunOptions
    from chainette_ray.runner import RayRunner

    options = RunOptions(output_dir=tmp_path / "out", batch=True, on="ray")
    with pytest.raises(ConfigError, match="--batch cannot be combined with --on ray"):
        RayRunner(parse_target("ray")).run(Chain(name="c", steps=[]), [{"a": 1}], options)
    assert not (tmp_path / "out").exists()


def test_blocks_default_to_a_thousand_rows(monkeypatch):
    """Large enough that a block's start and tail cost little against its rows (benchmark goal 10), small enough that a
    kill costs little more than a thousand rows a worker."""
    monkeypatch.delenv("CHAINETTE_RAY_BLOCK_ROWS", raising=False)
    assert parse_target("ray").block_rows == 1000
