"""The viewer's page in a real headless chromium (Debian's, driven by Playwright): it loads a run, opens a node, pages
forward, searches, opens an error's raw answer, and shows rows a running chain writes after the page was opened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import threading
from typing import Any

import pytest

from chainette.view.api import ViewServer
from chainette.view.reader import RunView

from .chromium import CHROMIUM, CHROMIUM_ARGS
from .demo import make_run
from .synthetic import output_line, write_run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"),
]


def expect(locator: Any) -> Any:
    """Playwright's retrying assertions (the page's Content-Security-Policy forbids evaluating strings in it)."""
    from playwright.sync_api import expect

    return expect(locator)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("chainette_openai")  # the demo run's step asks the fake server through the OpenAI backend
    return make_run(tmp_path_factory.mktemp("demo") / "out", rows=64)


def serve(root: Path) -> ViewServer:
    server = ViewServer(RunView(root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def page(browser: Any, run_dir: Path) -> Iterator[Any]:
    server = serve(run_dir)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.url)
    yield page
    page.close()
    server.shutdown()
    server.server_close()


def open_node(page: Any, node: str, status: str = "ok") -> None:
    page.click(f"#nodes button[data-node={node}]")
    if status != "ok":
        page.click(f"button.status[data-status={status}]")
    expect(page.locator("#where")).to_contain_text(f"{node}: {status} rows")
    page.wait_for_selector("#rows .item")


def row_ids(page: Any) -> list[str]:
    return [text.split()[1] for text in page.locator("#rows .item h3").all_inner_texts()]


def test_the_page_shows_the_run_its_nodes_and_their_figures(page: Any) -> None:
    page.wait_for_selector("#rows .item")
    assert page.inner_text("#chain") == "reviews-demo"
    assert page.inner_text("#status") == "completed"
    assert page.locator("#nodes button").all_inner_texts()[1].startswith("long_enough")
    assert "48 in · 32 ok · 16 failed · 0 filtered" in page.inner_text("#nodes button[data-node=sentiment]")


def test_a_node_opens_on_its_rows_beside_their_chain_input_and_pages_forward(page: Any) -> None:
    open_node(page, "sentiment")
    first = row_ids(page)
    assert len(first) == 20
    item = page.locator("#rows .item").first
    assert "chain input" in item.inner_text().lower() and "Reasoning (sentiment_reasoning)" in item.inner_text()
    page.click("#next")
    expect(page.locator("#page-note")).to_contain_text("page 2")
    second = row_ids(page)
    assert len(second) == 12 and not set(first) & set(second)
    assert page.is_disabled("#next")
    page.click("#prev")
    expect(page.locator("#page-note")).to_contain_text("page 1")
    assert row_ids(page) == first


def test_search_by_field_value(page: Any) -> None:
    open_node(page, "sentiment")
    page.fill("#search", "sentiment=negative")
    page.press("#search", "Enter")
    expect(page.locator("#where")).to_contain_text("matching")
    texts = page.locator("#rows .item").all_inner_texts()
    assert texts and all("negative" in text for text in texts)
    assert "positive" not in " ".join(texts)


def test_an_error_opens_on_its_raw_answer(page: Any) -> None:
    page.wait_for_selector("#nodes button")
    page.click("#all-errors")
    expect(page.locator("#where")).to_contain_text("every node's errors")
    error = page.locator("#rows .item").first
    assert "validation" in error.inner_text() and "does not match Sentiment" in error.inner_text()
    raw = error.locator("details.raw pre")
    assert not raw.is_visible()
    error.locator("details.raw summary").click()
    assert raw.is_visible() and '"furious"' in raw.inner_text()


def test_filtered_rows_show_what_the_node_received(page: Any) -> None:
    open_node(page, "long_enough", "filtered")
    assert {"Ok.", "Fine."} <= set(page.locator("#rows .item td.value").all_inner_texts())


def test_rows_written_after_the_page_opened_appear(browser: Any, tmp_path: Path) -> None:
    root = write_run(tmp_path / "out", 2, part_rows=10, finished=False)
    server = serve(root)
    page = browser.new_page()
    try:
        page.goto(server.url)
        page.wait_for_selector("#rows .item")
        assert row_ids(page) == ["0", "1"]
        with open(root / "label" / "000.jsonl", "a") as file:
            file.write(output_line(2))
        expect(page.locator("#rows .item")).to_have_count(3, timeout=30_000)
        assert row_ids(page) == ["0", "1", "2"]
    finally:
        page.close()
        server.shutdown()
        server.server_close()
