"""A block's scratch folder, where its run directory lives while it runs: a temporary folder named after the worker
process that made it. A killed worker cannot remove its own, so each worker removes, as it starts a block and as it
closes, the folders on its node whose process is gone (the rule: a folder whose process is alive is never touched)."""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import tempfile

from chainette import processes

PREFIX = "chainette-block-"


def folder() -> tempfile.TemporaryDirectory[str]:
    """A new scratch folder of this process, removed when the block leaves it."""
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-")


def sweep() -> None:
    """Remove the scratch folders in the temporary folder whose process has ended."""
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        owner = path.name.removeprefix(PREFIX).split("-", 1)[0]
        if owner.isdigit() and not processes.alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)
