"""Debian's chromium as the viewer's browser tests and screenshots launch it (through Playwright, which downloads no
browser): headless, and quiet on a machine with no network (no background connections, updates or sync)."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
