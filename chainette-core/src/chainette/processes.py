"""Processes on this machine, as the plugins that start or clean up after them ask about them: whether one runs."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine: another user's counts, and so does a zombie until its parent reaps it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True
