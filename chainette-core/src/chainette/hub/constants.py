"""The names a push gives the repository's parts, shared by the layout, the card and the upload: the card's file,
the run's two records, the default config, and the config and file of the failed rows."""

from __future__ import annotations

CARD = "README.md"
RECORDS = ("graph.json", "run.json")
FLATTENED = "flattened"
ERRORS_CONFIG = "errors"
ERRORS_FILE = "errors.jsonl"
