"""Every python and shell block of README.md and docs/ runs and succeeds, or carries a doc-test marker saying why not.

One test per block (id: file:line). A page's blocks run in page order in one scratch folder, each once, whichever
test asks first; the markers are listed in scripts/doc_blocks.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import re
import sys

import pytest

from .runner import ROOT, PageRun, load_doc_blocks, run_in

doc_blocks = load_doc_blocks()
PAGES = {page.relative_to(ROOT).as_posix(): doc_blocks.page_blocks(page) for page in doc_blocks.doc_pages()}
CASES = [(page, index) for page, blocks in PAGES.items() for index in range(len(blocks))]


@pytest.fixture(scope="session")
def page_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], PageRun]:
    """The run of a page's blocks, made on first use in a scratch folder of its own (one per page and worker)."""
    runs: dict[str, PageRun] = {}

    def get(page: str) -> PageRun:
        if page not in runs:
            scratch = tmp_path_factory.mktemp(page.replace("/", "-").removesuffix(".md"))
            runs[page] = PageRun(PAGES[page], scratch)
        return runs[page]

    return get


@pytest.mark.parametrize(("page", "index"), CASES, ids=[PAGES[page][index].id for page, index in CASES])
def test_doc_block(page: str, index: int, page_run: Callable[[str], PageRun]) -> None:
    """The block ran and succeeded (or was written to its file), or its marker says why it is skipped here."""
    outcome = page_run(page).outcome(index)
    if outcome.failure:
        pytest.fail(outcome.failure, pytrace=False)
    if outcome.skipped:
        pytest.skip(outcome.skipped)


def test_the_docs_have_runnable_blocks() -> None:
    """The collection finds the pages and their blocks (not docs/cli.md, yes every distribution's README), and many run."""
    assert {"README.md", "docs/getting-started.md", "docs/writing-a-backend.md", "chainette-core/README.md"} <= set(PAGES)
    assert "docs/cli.md" not in PAGES
    blocks = [block for blocks in PAGES.values() for block in blocks]
    readmes = {f"chainette-{name}/README.md" for name in ("core", "openai", "vllm", "ollama")}
    assert readmes <= {block.source for block in blocks}
    running = [block for block in blocks if block.marker is None or block.marker.kind == "continues"]
    assert len(blocks) > 30 and len(running) > 10, [block.id for block in running]


def test_quickstart_prints_what_its_comment_says(tmp_path: Path) -> None:
    """The quick start's `print(result["sentiment"][0])  # ... prints X` comment shows the line it prints (in X, `...` is any text)."""
    [block] = [block for block in PAGES["README.md"] if block.language == "python" and "chain.run(" in block.text]
    printing = [line for line in block.text.splitlines() if line.startswith('print(result["sentiment"][0])')]
    assert len(printing) == 1 and "#" in printing[0], "the quick start no longer prints result['sentiment'][0] with a comment"
    comment = printing[0].split("#", 1)[1].split("prints ", 1)[-1].strip()
    done = run_in(tmp_path, [sys.executable, "-c", block.text])
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()[0]
    assert re.fullmatch(".+".join(map(re.escape, comment.split("..."))), printed), f"it prints {printed!r}; the comment says {comment!r}"


def test_readme_preview_hint_gives_the_served_url() -> None:
    """`mkdocs serve` serves the site under site_url's path: the README's preview hint names that URL."""
    site_url = next(
        line.split(":", 1)[1].strip() for line in (ROOT / "mkdocs.yml").read_text().splitlines() if line.startswith("site_url:")
    )
    path = "/" + site_url.split("://", 1)[1].split("/", 1)[1]
    assert f"http://127.0.0.1:8000{path}" in (ROOT / "README.md").read_text()
