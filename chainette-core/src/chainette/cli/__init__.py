"""The `chainette` command line. Typer and rich are imported only here, never by `import chainette`."""

from __future__ import annotations

from chainette.cli.app import main

__all__ = ["main"]
