"""RunOptions: every setting of one run but the chain and its inputs, made once (by `Chain.run` or `chainette run`)
and read by the session and the executor; frozen, so that no part of a run changes what another part reads."""

from __future__ import annotations

from dataclasses import dataclass
import math
import os
from typing import TYPE_CHECKING

from chainette.errors import ConfigError

if TYPE_CHECKING:
    from chainette.cache import CacheSetting
    from chainette.events import Listener
    from chainette.inputs import ColumnSpec


@dataclass(frozen=True)
class RunOptions:
    """How a run goes (each field is the keyword of `Chain.run` of the same name, documented there).

    A `limit` that is not a positive number of rows, or a `max_cost` that is not a positive amount of USD (or one with
    a runner, `on`, which does not count what its workers spend as they go), is refused here, before anything is opened.
    """

    output_dir: str | os.PathLike[str] | None = None
    overwrite: bool = False
    retry_errors: bool = False
    reporter: Listener | None = None
    columns: ColumnSpec = None
    id_column: str | None = None
    output_format: str = "jsonl"
    durable: bool = False
    cache: CacheSetting = True
    cache_dir: str | os.PathLike[str] | None = None
    batch: bool = False
    cancel_batches: bool = False
    limit: int | None = None
    telemetry: bool = False
    on: str | None = None
    max_cost: float | None = None
    media_root: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        limit = self.limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"The limit must be a positive number of input rows (got {limit!r}); leave it out to run every row.")
        if self.on is not None and not self.on.strip():
            raise ConfigError(
                "The runner target (--on, on=) is empty: give one such as 'ray' or 'ray://HOST:PORT', or leave it out to run here."
            )
        if self.max_cost is not None:
            _check_max_cost(self.max_cost, self.on)


def _check_max_cost(max_cost: object, on: str | None) -> None:
    """Refuse a budget that is not a positive, finite amount of USD, or one given with a runner."""
    if isinstance(max_cost, bool) or not isinstance(max_cost, (int, float)) or not math.isfinite(max_cost) or max_cost <= 0:
        raise ConfigError(
            f"The budget (--max-cost, max_cost=) must be a positive amount of USD such as 5 or 0.25 (got {max_cost!r}); "
            "leave it out to run without one."
        )
    if on is not None:
        raise ConfigError(
            f"A budget (--max-cost) cannot be kept with a runner (--on {on}): its workers' spending is only known as their "
            "blocks finish. Run here with --max-cost, or with the runner without it."
        )
