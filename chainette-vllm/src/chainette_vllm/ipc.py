"""A folder of its own for each vLLM server's IPC sockets, removed once its server is gone.

vLLM's processes talk over ZeroMQ Unix sockets named by UUID in VLLM_RPC_BASE_PATH (the temporary folder by default),
and leave a few dozen of them behind each time they stop. So a server chainette starts gets a new folder in the
temporary folder as its VLLM_RPC_BASE_PATH (unless the user sets one), tied to its process group; `sweep` removes every
such folder whose group is gone: after a server is stopped, and before one starts (catching a server that ended with
the process that owned it). Where the temporary folder's path is so long that the sockets' paths in a folder below it
would pass what a Unix socket's path may hold, the server keeps vLLM's default.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
from pathlib import Path
import shutil
import tempfile
import time

ENV = "VLLM_RPC_BASE_PATH"
PREFIX = "chainette-vllm-ipc-"
OWNER = "pgid"
"""The file in a folder naming the process group of the server that uses it."""
UNCLAIMED_SECONDS = 600.0
"""How long a folder no server was tied to is left (its server is being started) before a sweep removes it."""
SOCKET_PATH = 107
"""The longest path a Unix socket may have (sockaddr_un's sun_path, less its NUL)."""
SOCKET_NAME = 37
"""How much a socket adds to its folder's path: a slash and a UUID (vLLM's names)."""


def new_folder(alive: Callable[[int], bool]) -> Path | None:
    """A folder for a server about to start, after sweeping those of the servers gone (`alive`: whether a group runs);
    None when its sockets' paths would be too long."""
    sweep(alive)
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    if len(str(folder)) + SOCKET_NAME > SOCKET_PATH:
        folder.rmdir()
        return None
    return folder


def claim(folder: Path, pgid: int) -> None:
    """Tie `folder` to the process group `pgid` of the server that uses it."""
    (folder / OWNER).write_text(str(pgid), encoding="ascii")


def sweep(alive: Callable[[int], bool]) -> None:
    """Remove the folders whose server's process group is not `alive`, and those tied to none for UNCLAIMED_SECONDS."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        if _gone(folder, alive):
            shutil.rmtree(folder, ignore_errors=True)


def _gone(folder: Path, alive: Callable[[int], bool]) -> bool:
    try:
        return not alive(int((folder / OWNER).read_text(encoding="ascii")))
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            return time.time() - folder.stat().st_mtime > UNCLAIMED_SECONDS
        return False
