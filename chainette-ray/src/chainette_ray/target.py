"""The runner's target: `ray` (RAY_ADDRESS when set, else a local cluster started and stopped by the run) or
`ray://HOST:PORT`, each with options as a query (`ray?block_rows=200&in_flight=4`), which the environment variables
CHAINETTE_RAY_BLOCK_ROWS, CHAINETTE_RAY_IN_FLIGHT and CHAINETTE_RAY_NUM_CPUS give too (the query wins)."""

from __future__ import annotations

from dataclasses import dataclass, replace
import os
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from chainette.errors import ConfigError

OPTIONS = {
    "block_rows": "input rows per block (default 1000)",
    "in_flight": "block workers (Ray actors, each given two blocks at a time; default: the cluster's CPUs / cpus_per_block)",
    "cpus_per_block": "CPUs Ray reserves for each block worker (default 1)",
    "num_cpus": "CPUs of the local cluster the run starts (default: all of this machine's)",
    "max_retries": "times Ray restarts a block worker whose process died, running its blocks again (default 3)",
}


@dataclass(frozen=True)
class Target:
    """Where and how the run goes: the cluster's address (None: start a local one) and the block settings."""

    text: str
    address: str | None
    block_rows: int = 1000
    in_flight: int | None = None
    cpus_per_block: float = 1.0
    num_cpus: int | None = None
    max_retries: int = 3

    @property
    def starts_cluster(self) -> bool:
        return self.address is None


def parse_target(text: str) -> Target:
    """The `Target` that `--on TEXT` names; a ConfigError naming the part to fix."""
    parts = urlsplit(text)
    if (parts.scheme or parts.path) != "ray" or (parts.scheme and (not parts.netloc or parts.path)):
        raise ConfigError(f"--on {text}: expected 'ray', 'ray?OPTION=VALUE&...' or 'ray://HOST:PORT[?OPTION=VALUE&...]'.")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when it is read)
    except ValueError:
        raise ConfigError(f"--on {text}: the port must be a number (ray://HOST:PORT, the Ray client port, 10001 by default).") from None
    address = f"ray://{parts.netloc}" if parts.netloc else os.environ.get("RAY_ADDRESS") or None
    given = {name: (value, f"CHAINETTE_RAY_{name.upper()}") for name, value in _environment().items()}
    given.update((name, (value, f"--on {text}")) for name, value in parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        known = "; ".join(f"{name}: {what}" for name, what in OPTIONS.items())
        raise ConfigError(f"--on {text}: unknown option {', '.join(unknown)}. The options are {known}.")
    settings: dict[str, Any] = {name: _number(name, *value) for name, value in given.items()}
    return replace(Target(text, address), **settings)


def _environment() -> dict[str, str]:
    """The options the environment gives (CHAINETTE_RAY_<OPTION>)."""
    return {name: os.environ[key] for name in OPTIONS if (key := f"CHAINETTE_RAY_{name.upper()}") in os.environ}


def _number(name: str, value: str, where: str) -> int | float:
    """`value` as the number option `name` takes (positive; max_retries may be 0); a ConfigError naming `where` it came from."""
    try:
        number: int | float = float(value) if name == "cpus_per_block" else int(value)
    except ValueError:
        number = -1
    if number < (0 if name == "max_retries" else 1e-9):
        raise ConfigError(
            f"{where}: {name} must be a {'number' if name == 'max_retries' else 'positive number'} ({OPTIONS[name]}), not {value!r}."
        )
    return number
