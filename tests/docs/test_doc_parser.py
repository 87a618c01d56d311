"""scripts/doc_blocks.py: fences, markers (and their mistakes), snippets; tests/docs/runner.py: groups and consoles."""

from __future__ import annotations

from pathlib import Path
import textwrap

import pytest

from .runner import PageRun, console_commands, load_doc_blocks, python_groups

doc_blocks = load_doc_blocks()


def blocks_of(tmp_path: Path, text: str, name: str = "docs/page.md") -> list:
    page = tmp_path / name
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(textwrap.dedent(text))
    return doc_blocks.page_blocks(page, root=tmp_path)


def test_code_blocks_are_tested_and_data_blocks_only_with_a_file_marker(tmp_path: Path) -> None:
    blocks = blocks_of(
        tmp_path,
        """\
        # Page

        ```python
        print("hi")
        ```

        ```yaml
        a: 1
        ```

        <!-- doc-test: file conf/b.yaml -->
        ```yaml
        b: 2
        ```

        - a list item:

            ```bash
            echo indented
            ```
        """,
    )
    assert [(block.id, block.language) for block in blocks] == [
        ("docs/page.md:3", "python"),
        ("docs/page.md:12", "yaml"),
        ("docs/page.md:18", "bash"),
    ]
    assert blocks[1].marker == doc_blocks.Marker("file", "conf/b.yaml") and blocks[1].text == "b: 2\n"
    assert blocks[2].text == "echo indented\n"
    assert all(block.problem is None for block in blocks)


@pytest.mark.parametrize(
    ("marker", "language", "expected"),
    [
        ("needs an API key", "bash", doc_blocks.Marker("skip", "needs an API key")),
        ("installs packages", "console", doc_blocks.Marker("skip", "installs packages")),
        ("needs module pandas", "python", doc_blocks.Marker("module", "pandas")),
        ("continues", "python", doc_blocks.Marker("continues", "")),
        ("continues examples/a/chain.py", "python", doc_blocks.Marker("continues", "examples/a/chain.py")),
        ("file src/x.py", "python", doc_blocks.Marker("file", "src/x.py")),
    ],
)
def test_markers_of_the_vocabulary(tmp_path: Path, marker: str, language: str, expected) -> None:
    [block] = blocks_of(tmp_path, f"<!-- doc-test: {marker} -->\n```{language}\nx\n```\n")
    assert block.problem is None and block.marker == expected


@pytest.mark.parametrize(
    ("before", "language", "problem"),
    [
        ("<!-- doc-test: needs a key -->", "bash", "unknown doc-test marker 'needs a key'. The markers are: needs an API key;"),
        ("<!-- doc-test: needs a GPU -->", "yaml", "its only marker is `file PATH`"),
        ("<!-- doc-test: continues -->", "bash", "only a python block can continue another"),
        ("<!-- doc-test: file ../outside.txt -->", "text", "must be relative, inside the page's scratch folder"),
        ("<!-- doc-test: file /etc/x -->", "text", "must be relative"),
        ("<!-- doc-test needs a GPU -->", "bash", "a malformed doc-test marker"),
    ],
)
def test_marker_mistakes_are_problems(tmp_path: Path, before: str, language: str, problem: str) -> None:
    [block] = blocks_of(tmp_path, f"{before}\n```{language}\nx\n```\n")
    assert block.problem is not None and problem in block.problem and block.problem.startswith("docs/page.md:2: ")


def test_a_marker_away_from_a_fence_is_a_problem(tmp_path: Path) -> None:
    [stray, block] = blocks_of(tmp_path, "<!-- doc-test: needs a GPU -->\n\n```bash\nnvidia-smi\n```\n")
    assert stray.problem == "docs/page.md:1: a doc-test marker must be on the line right before a code fence."
    assert block.marker is None and block.problem is None


def test_an_unclosed_fence_is_a_problem(tmp_path: Path) -> None:
    [block] = blocks_of(tmp_path, "text\n````bash\necho\n```\n")
    assert block.problem == "docs/page.md:2: the fence is never closed."


def test_snippets_are_expanded_and_their_blocks_keep_their_source(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(
        "intro\n<!-- --8<-- [start:demo] -->\n<!-- doc-test: needs a GPU -->\n```bash\nnvidia-smi\n```\n<!-- --8<-- [end:demo] -->\n"
    )
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "README.md").write_text("```bash\necho from a distribution\n```\n")
    blocks = blocks_of(tmp_path, '# Page\n\n--8<-- "README.md:demo"\n\n```sh\necho mine\n```\n--8<-- "other/README.md"\n')
    assert [(block.id, block.marker) for block in blocks] == [
        ("docs/page.md@README.md:4", doc_blocks.Marker("skip", "needs a GPU")),
        ("docs/page.md:5", None),
    ]


def test_a_missing_snippet_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("no sections here\n")
    [block] = blocks_of(tmp_path, '--8<-- "README.md:demo"\n')
    assert block.problem == "docs/page.md:1: README.md has no section 'demo' (a [start:demo] and an [end:demo] line)."


def test_the_pages_are_readme_and_docs_but_the_generated_reference(tmp_path: Path) -> None:
    for name in ("README.md", "docs/a.md", "docs/sub/b.md", "docs/cli.md", "CHANGELOG.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n")
    assert [page.relative_to(tmp_path).as_posix() for page in doc_blocks.doc_pages(tmp_path)] == ["README.md", "docs/a.md", "docs/sub/b.md"]


def test_write_files_writes_the_file_blocks(tmp_path: Path) -> None:
    blocks = blocks_of(tmp_path, "<!-- doc-test: file pkg/a.toml -->\n```toml\nx = 1\n```\n```bash\necho\n```\n")
    written = doc_blocks.write_files(blocks, tmp_path / "out")
    assert written == [tmp_path / "out" / "pkg" / "a.toml"] and written[0].read_text() == "x = 1\n"


def test_python_blocks_group_with_their_continuations(tmp_path: Path) -> None:
    blocks = blocks_of(
        tmp_path,
        """\
        <!-- doc-test: continues -->
        ```python
        orphan = 1
        ```
        ```python
        a = 1
        ```
        ```bash
        echo between
        ```
        <!-- doc-test: continues -->
        ```python
        assert a == 1
        ```
        ```python
        b = 2
        ```
        """,
    )
    groups, problems = python_groups(blocks)
    assert list(problems) == [0] and "no python block before it" in problems[0]
    assert groups == {1: [1, 3], 3: [1, 3], 4: [4]}


def test_a_page_run_runs_in_order_with_shared_files_and_continued_python(tmp_path: Path) -> None:
    blocks = blocks_of(
        tmp_path,
        """\
        <!-- doc-test: file data/n.txt -->
        ```text
        41
        ```
        ```python
        n = int(open("data/n.txt").read())
        ```
        <!-- doc-test: continues -->
        ```python
        open("answer.txt", "w").write(str(n + 1))
        ```
        ```bash
        test "$(cat answer.txt)" = 42 && test -d examples
        ```
        <!-- doc-test: needs a GPU -->
        ```bash
        exit 1
        ```
        ```bash
        pip install nothing-at-all
        ```
        ```bash
        false
        ```
        """,
    )
    run = PageRun(blocks, tmp_path / "scratch")
    outcomes = [run.outcome(index) for index in range(len(blocks))]
    assert [(o.skipped, o.failure is None) for o in outcomes[:5]] == [(None, True)] * 4 + [("needs a GPU", True)]
    assert outcomes[5].failure is not None and "installs packages or starts a server" in outcomes[5].failure
    assert outcomes[6].failure is not None and "exited with status 1" in outcomes[6].failure


def test_console_blocks_run_their_prompted_lines() -> None:
    text = "$ echo one \\\n  two\none two\n$ ls\nfile\n"
    assert console_commands(text) == "echo one \\\n  two\nls\n"
