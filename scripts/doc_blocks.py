"""The fenced code blocks of the docs and their doc-test markers: the one parser behind tests/docs and .ci/walkthrough.sh.

A block's marker is an HTML comment (invisible on the site) on the line right before its opening fence:

  <!-- doc-test: needs an API key -->     not run, for one of SKIP_REASONS (the whole list is below)
  <!-- doc-test: needs module pandas -->  run only where the module imports, else skipped for that reason
  <!-- doc-test: file PATH -->            written to PATH (relative) in the page's scratch folder instead of run
  <!-- doc-test: continues -->            a python block run as one script with the page's previous python block(s)
  <!-- doc-test: continues PATH -->       a python block run after the code of PATH (a file of the scratch folder)

Snippet lines (`--8<-- "FILE"`, `--8<-- "FILE:SECTION"`) are expanded as pymdownx.snippets does, so that a page's
blocks run in the order it shows them; the blocks written in README.md, docs/ and the distributions' READMEs are tested
(not those of other included files, such as CHANGELOG.md). Standard library only: CI runs it with a bare python3.
Command line: `python3 scripts/doc_blocks.py files PAGE DEST` writes PAGE's file blocks under DEST.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
import re
import sys

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = frozenset({"python", "bash", "sh", "shell", "console"})
SKIP_REASONS = (
    "needs an API key",
    "needs a GPU",
    "needs a running server",
    "needs the internet",
    "installs packages",
    "runs for minutes",
)
NOT_TESTED = frozenset({"docs/cli.md"})  # generated from the typer app, and checked against it by .ci/docs.sh
VOCABULARY = "; ".join([*SKIP_REASONS, "needs module NAME", "file PATH", "continues", "continues PATH"])

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*\{?\.?(?P<language>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*doc-test:(?P<text>.*?)-->\s*$")
LOOSE_MARKER = re.compile(r"^\s*<!--\s*doc-test\b")  # a line starting as a marker does, well formed or not
SNIPPET = re.compile(r'^(?P<indent>[ \t]*)-{1,}8<-{1,}[ \t]+"(?P<target>[^"]+)"[ \t]*$')
SECTION = re.compile(r"-{1,}8<-{1,}\s*\[(?P<edge>start|end):(?P<name>[\w-]+)\]")
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class Line:
    """One line of a page as rendered, with the file and line number it comes from (they differ inside a snippet)."""

    text: str
    source: str
    number: int


@dataclass(frozen=True)
class Marker:
    """A block's doc-test marker: kind is "skip" (argument: the reason), "module", "file" (the path) or "continues"."""

    kind: str
    argument: str = ""


@dataclass(frozen=True)
class Block:
    """One fenced block of a page (or a marker that belongs to none): where it is written, its language, text and marker.

    `problem` says what is wrong with the block or its marker; such a block fails its test with that message.
    """

    page: str
    source: str
    line: int
    language: str
    text: str
    marker: Marker | None = None
    problem: str | None = None

    @property
    def id(self) -> str:
        """`file:line`, prefixed with the page when the block comes from a snippet of another file."""
        where = f"{self.source}:{self.line}"
        return where if self.source == self.page else f"{self.page}@{where}"

    @property
    def tested(self) -> bool:
        """Whether the block is a doc test: code (RUNNABLE languages), anything with a marker, or a problem."""
        return self.language in RUNNABLE or self.marker is not None or self.problem is not None


def doc_pages(root: Path = ROOT) -> list[Path]:
    """README.md, every page under docs/ except the generated ones (NOT_TESTED), and chainette-core's README (the
    backends' READMEs are tested through the docs/backends/ pages that include them)."""
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md")), root / "chainette-core" / "README.md"]
    return [page for page in pages if page.exists() and in_scope(page.relative_to(root).as_posix())]


def page_blocks(page: Path, root: Path = ROOT) -> list[Block]:
    """The tested blocks of `page`, in page order (snippets expanded); a snippet that cannot be read is one problem block."""
    name = page.relative_to(root).as_posix()
    try:
        lines = expand(page, root)
    except ValueError as exc:
        return [Block(name, name, 1, "", "", problem=str(exc))]
    return [block for block in split_blocks(lines, name) if block.tested and in_scope(block.source)]


def in_scope(source: str) -> bool:
    """Whether the blocks written in `source` (a path relative to the root) are doc tests: README.md, docs/ (but NOT_TESTED)
    and the distributions' READMEs."""
    readme = source == "README.md" or (source.count("/") == 1 and source.startswith("chainette-") and source.endswith("/README.md"))
    return (readme or source.startswith("docs/")) and source not in NOT_TESTED


def expand(path: Path, root: Path, depth: int = 0) -> list[Line]:
    """The lines of `path` with every snippet line replaced by the lines it includes (section markers dropped from those)."""
    source = path.relative_to(root).as_posix()
    expanded: list[Line] = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = SNIPPET.match(text)
        if match is None:
            expanded.append(Line(text, source, number))
            continue
        if depth > 4:
            raise ValueError(f"{source}:{number}: snippets nested more than 4 deep.")
        included = snippet(match["target"], root, f"{source}:{number}", depth)
        expanded += [Line(match["indent"] + line.text, line.source, line.number) for line in included]
    return expanded


def snippet(target: str, root: Path, where: str, depth: int) -> list[Line]:
    """The lines a snippet target (`FILE` or `FILE:SECTION`, relative to the repository root) includes."""
    file, _, section = target.partition(":") if not (root / target).is_file() else (target, "", "")
    path = root / file
    if not path.is_file():
        raise ValueError(f"{where}: the snippet {target!r} names no file of the repository.")
    lines = expand(path, root, depth + 1)
    if section:
        edges = [index for index, line in enumerate(lines) if (m := SECTION.search(line.text)) and m["name"] == section]
        if len(edges) != 2:
            raise ValueError(f"{where}: {file} has no section {section!r} (a [start:{section}] and an [end:{section}] line).")
        lines = lines[edges[0] + 1 : edges[1]]
    return [line for line in lines if not SECTION.search(line.text)]


def split_blocks(lines: list[Line], page: str) -> list[Block]:
    """Every fenced block of `lines`, with its marker; a marker that is not right before a fence becomes a problem block."""
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        opening = FENCE.match(line.text)
        if opening is None:
            if LOOSE_MARKER.match(line.text) and not (index + 1 < len(lines) and FENCE.match(lines[index + 1].text)):
                problem = f"{line.source}:{line.number}: a doc-test marker must be on the line right before a code fence."
                blocks.append(Block(page, line.source, line.number, "", "", problem=problem))
            index += 1
            continue
        end = closing_line(lines, index, opening["fence"])
        language = opening["language"].lower()
        if end is None:
            blocks.append(
                Block(page, line.source, line.number, language, "", problem=f"{line.source}:{line.number}: the fence is never closed.")
            )
            return blocks
        body = [dedent(inner.text, opening["indent"]) for inner in lines[index + 1 : end]]
        blocks.append(block_with_marker(page, lines[index - 1] if index else None, line, language, "\n".join(body) + "\n"))
        index = end + 1
    return blocks


def closing_line(lines: list[Line], opening: int, fence: str) -> int | None:
    """The index of the line closing the fence opened at `opening` (same character, at least as long), or None."""
    closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
    return next((index for index in range(opening + 1, len(lines)) if closing.match(lines[index].text)), None)


def dedent(text: str, indent: str) -> str:
    """`text` without the opening fence's indentation."""
    return text[len(indent) :] if text.startswith(indent) else text.lstrip(" \t")


def block_with_marker(page: str, before: Line | None, fence: Line, language: str, text: str) -> Block:
    """The block opened at `fence`, with the marker on the line `before` it parsed and checked against the language."""
    block = Block(page, fence.source, fence.number, language, text)
    found = MARKER.match(before.text) if before is not None else None
    if found is None:
        if before is not None and LOOSE_MARKER.match(before.text):
            return Block(
                page, fence.source, fence.number, language, text, problem=f"{block.id}: a malformed doc-test marker: {before.text.strip()}"
            )
        return block
    marker, problem = parse_marker(found["text"].strip(), language)
    return Block(page, fence.source, fence.number, language, text, marker, f"{block.id}: {problem}" if problem else None)


def parse_marker(text: str, language: str) -> tuple[Marker | None, str | None]:
    """The marker written `text` on a block of `language`, or the problem with it."""
    word, _, argument = text.partition(" ")
    argument = argument.strip()
    if text in SKIP_REASONS:
        marker = Marker("skip", text)
    elif text.startswith("needs module ") and MODULE_NAME.fullmatch(text.removeprefix("needs module ").strip()):
        marker = Marker("module", text.removeprefix("needs module ").strip())
    elif word == "file" and argument:
        path = PurePosixPath(argument)
        if path.is_absolute() or ".." in path.parts:
            return None, f"the file marker's path {argument!r} must be relative, inside the page's scratch folder."
        return Marker("file", argument), None
    elif word == "continues":
        marker = Marker("continues", argument)
        if language != "python":
            return None, "only a python block can continue another."
    else:
        return None, f"unknown doc-test marker {text!r}. The markers are: {VOCABULARY}."
    if language not in RUNNABLE:
        return None, f"a ```{language or 'plain'} block is data, not run: its only marker is `file PATH`."
    return marker, None


def write_files(blocks: list[Block], destination: Path) -> list[Path]:
    """Write every file block of `blocks` under `destination`; the paths written, in page order."""
    written = []
    for block in blocks:
        if block.marker is not None and block.marker.kind == "file":
            path = destination / block.marker.argument
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str]) -> int:
    """`files PAGE DEST`: write PAGE's file blocks under DEST and list them; exit 1 when PAGE has a problem block."""
    if len(argv) != 3 or argv[0] != "files":
        print("usage: python3 scripts/doc_blocks.py files PAGE DEST", file=sys.stderr)
        return 2
    page, destination = Path(argv[1]).resolve(), Path(argv[2])
    blocks = page_blocks(page)
    problems = [block.problem for block in blocks if block.problem]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    for path in write_files(blocks, destination):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
