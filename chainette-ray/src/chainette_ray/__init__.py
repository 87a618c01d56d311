"""chainette-ray: `chainette run --on ray` (`chain.run(on="ray")`) runs the chain block by block on a Ray cluster and
commits every block into the run directory a local run writes, exactly once (docs/ray.md). Importing this module
does not import ray: the plugin is loaded by `chainette backends list` too."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chainette import hookimpl

if TYPE_CHECKING:
    from chainette.run.runner import Runner


@hookimpl
def make_runner(target: str) -> Runner | None:
    """A `RayRunner` for `ray`, `ray?OPTIONS` or `ray://HOST:PORT?OPTIONS`; a ConfigError for a malformed one."""
    from chainette_ray.runner import RayRunner
    from chainette_ray.target import parse_target

    return RayRunner(parse_target(target))
