"""The names a push gives the repository's parts, shared by the layout, the card and the upload: the card's file,
the run's two records, the default config, and the config and file of the failed rows."""

from __future__ import annotations

from chainette.run.rundir import ERRORS_FILE, FLATTENED, GRAPH_FILE, RUN_FILE

CARD = "README.md"
RECORDS = (GRAPH_FILE, RUN_FILE)
ERRORS_CONFIG = "errors"
__all__ = ["CARD", "ERRORS_CONFIG", "ERRORS_FILE", "FLATTENED", "RECORDS"]
