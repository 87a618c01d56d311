"""Screenshots of `chainette view` for docs/viewer.md: a real run of the viewer tests' demo chain (an apply that drops
short reviews, a step on the OpenAI backend against the loopback fake server, with reasoning text and failed rows),
shown in Debian's headless chromium driven by Playwright.

Usage: python scripts/viewer_screenshots.py [--out docs/images] [--rows 64]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys
import tempfile
import threading

ROOT = Path(__file__).resolve().parents[1]


def capture(out: Path, rows: int) -> list[Path]:
    """Run the demo chain over `rows` reviews, serve it, and write viewer-rows.png, viewer-search.png and
    viewer-errors.png into `out`."""
    sys.path.insert(0, str(ROOT / "tests" / "view"))
    from chromium import CHROMIUM, CHROMIUM_ARGS  # how the tests launch Debian's chromium
    from demo import make_run  # the tests' demo run
    from playwright.sync_api import expect, sync_playwright

    from chainette.view.api import ViewServer
    from chainette.view.reader import RunView

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        os.environ["CHAINETTE_CACHE_DIR"] = str(Path(folder) / "cache")  # repeated reviews hit a cache of its own
        server = ViewServer(RunView(make_run(Path(folder) / "runs" / "reviews", rows=rows)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(server.url)
        page.click("#nodes button[data-node=sentiment]")
        expect(page.locator("#where")).to_contain_text("sentiment: ok rows")
        written.append(_shot(page, out / "viewer-rows.png"))
        page.fill("#search", "sentiment=negative")
        page.press("#search", "Enter")
        expect(page.locator("#where")).to_contain_text("matching")
        written.append(_shot(page, out / "viewer-search.png"))
        page.click("#all-errors")
        expect(page.locator("#where")).to_contain_text("every node's errors")
        page.locator("#rows .item details.raw summary").first.click()
        written.append(_shot(page, out / "viewer-errors.png"))
        browser.close()
        server.shutdown()
        server.server_close()
    return written


def _shot(page: object, path: Path) -> Path:
    page.screenshot(path=str(path))  # type: ignore[attr-defined]
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    for path in capture(args.out, args.rows):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
