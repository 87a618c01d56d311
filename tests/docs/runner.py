"""Running one page's doc blocks: in page order, each once, in the page's scratch folder (markers: scripts/doc_blocks.py).

The scratch folder holds a copy of examples/, so the docs' `examples/...` paths work as in a clone. Shell blocks run
with `bash -euo pipefail` (console blocks: the `$ ` lines, prompt stripped), python blocks with this interpreter;
both with the venv's bin first on PATH, the first-party plugins only, no API key from the environment, and a state
folder of their own. Each block is a new process, started in the scratch folder.
"""

from __future__ import annotations

from dataclasses import dataclass
import importlib.util
import os
from pathlib import Path
import re
import shutil
import signal
import subprocess
import sys
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
BLOCK_TIMEOUT = 120.0  # seconds: a guard against a hanging block, far above what any block takes
PLUGINS = "openai,vllm,ollama,ray,anthropic,gemini"
# Commands a doc test refuses to run (a block holding one needs a marker): they change the environment or start servers.
UNSAFE = re.compile(r"\b(pip3?|uv) (install|uninstall)\b|-m venv\b|\bray start\b|\bdocker run\b|\bvllm serve\b|\bollama (pull|serve)\b")
IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info", "runs", "out", "chainette-runs")


def load_doc_blocks() -> ModuleType:
    """scripts/doc_blocks.py, the parser shared with .ci/walkthrough.sh (scripts/ is not a package)."""
    name = "doc_blocks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "doc_blocks.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


def _without_comments(code: str) -> str:
    """`code` without what follows a `#` that starts a comment (at a line's start or after a space): a comment that
    names a command does not run it."""
    return "\n".join(re.sub(r"(^|\s)#.*", "", line) for line in code.splitlines())


@dataclass(frozen=True)
class Outcome:
    """What became of one block: skipped (with the reason), failed (with what went wrong), or neither: it passed."""

    skipped: str | None = None
    failure: str | None = None


class PageRun:
    """One page's blocks and their outcomes; `outcome(i)` runs the blocks up to i (and the rest of i's python group)."""

    def __init__(self, blocks: list, scratch: Path):
        self.blocks = blocks
        self.scratch = scratch
        self.groups, self.problems = python_groups(blocks)
        self.outcomes: dict[int, Outcome] = {}
        self.done = 0
        shutil.copytree(ROOT / "examples", scratch / "examples", ignore=IGNORED)

    def outcome(self, index: int) -> Outcome:
        """The outcome of block `index`, running every block before it first (each block runs once)."""
        last = self.groups.get(index, [index])[-1]
        while self.done <= last:
            self.step(self.done)
            self.done += 1
        return self.outcomes[index]

    def step(self, index: int) -> None:
        """Run block `index` (a python group when its last member is reached) and record its outcome."""
        block = self.blocks[index]
        problem = self.problem(index)
        if problem:
            self.outcomes[index] = Outcome(failure=problem)
        elif block.marker is not None and block.marker.kind == "file":
            path = self.scratch / block.marker.argument
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text, encoding="utf-8")
            self.outcomes[index] = Outcome()
        elif index in self.groups:
            members = self.groups[index]
            if index == members[-1]:
                self.outcomes.update(dict.fromkeys(members, self.run_python(members)))
        else:
            self.outcomes[index] = self.skip_reason(block) or self.run_shell(block)

    def problem(self, index: int) -> str | None:
        """What keeps block `index` from running: its marker's problem, or an unsafe command in a block that would run."""
        block = self.blocks[index]
        if block.problem or index in self.problems:
            return str(block.problem or self.problems[index])
        unsafe = UNSAFE.search(_without_comments(block.text))
        if unsafe and (block.marker is None or block.marker.kind not in ("skip", "file")):
            return f"{block.id}: the block installs packages or starts a server ({unsafe[0]!r}): mark it instead of running it."
        return None

    def skip_reason(self, block) -> Outcome | None:
        """Outcome(skipped=...) for a block marked as not runnable here, else None."""
        marker = block.marker
        if marker is not None and marker.kind == "skip":
            return Outcome(skipped=marker.argument)
        if marker is not None and marker.kind == "module" and importlib.util.find_spec(marker.argument.split(".")[0]) is None:
            return Outcome(skipped=f"needs module {marker.argument}, which is not installed")
        return None

    def run_python(self, members: list[int]) -> Outcome:
        """Run a python group as one script (after the file its first block continues, if any), unless it is skipped."""
        first = self.blocks[members[0]]
        skipped = self.skip_reason(first)
        if skipped:
            return skipped
        parts = [self.blocks[index].text for index in members]
        if first.marker is not None and first.marker.kind == "continues" and first.marker.argument:
            base = self.scratch / first.marker.argument
            if not base.is_file():
                return Outcome(failure=f"{first.id}: continues {first.marker.argument}, which is not a file of the scratch folder.")
            parts.insert(0, base.read_text(encoding="utf-8"))
        ids = ", ".join(self.blocks[index].id for index in members)
        return self.execute([sys.executable, "-c", "\n".join(parts)], ids)

    def run_shell(self, block) -> Outcome:
        """Run a shell block with `bash -euo pipefail` (a console block: its prompted commands)."""
        script = console_commands(block.text) if block.language == "console" else block.text
        return self.execute(["bash", "-euo", "pipefail", "-c", script], block.id)

    def execute(self, command: list[str], ids: str) -> Outcome:
        """Run `command` in the scratch folder; a non-zero exit or a timeout is a failure naming the blocks `ids`."""
        try:
            done = run_in(self.scratch, command)
        except subprocess.TimeoutExpired:
            return Outcome(failure=f"{ids}: still running after {BLOCK_TIMEOUT:.0f} s (mark it if it needs more than a doc test gives).")
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-4000:]
            return Outcome(failure=f"{ids} exited with status {done.returncode} in {self.scratch}:\n{output}")
        return Outcome()


def run_in(scratch: Path, command: list[str]) -> subprocess.CompletedProcess[str]:
    """`command` run in `scratch` with the blocks' environment, its output captured, in a process group of its own.

    Past BLOCK_TIMEOUT the whole group is killed (a command the block started may hold the output open) and
    TimeoutExpired is raised.
    """
    process = subprocess.Popen(
        command, cwd=scratch, env=environment(scratch), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def python_groups(blocks: list) -> tuple[dict[int, list[int]], dict[int, str]]:
    """Each python block's group (the blocks run as one script, in order), and the problems of `continues` markers."""
    groups: dict[int, list[int]] = {}
    problems: dict[int, str] = {}
    current: list[int] | None = None
    for index, block in enumerate(blocks):
        if block.language != "python" or (block.marker is not None and block.marker.kind == "file"):
            continue
        if block.problem:
            current = None
            continue
        marker = block.marker
        if marker is not None and marker.kind == "continues" and not marker.argument:
            if current is None:
                problems[index] = f"{block.id}: marked `continues`, but no python block before it on the page runs."
                continue
            current.append(index)
        else:
            current = [index]
        groups[index] = current
    return groups, problems


def console_commands(text: str) -> str:
    """The commands of a console block: its `$ ` lines without the prompt, with their continuation lines; output dropped."""
    commands: list[str] = []
    continued = False
    for line in text.splitlines():
        if line.startswith("$ ") or continued:
            commands.append(line.removeprefix("$ ") if not continued else line)
            continued = line.endswith("\\")
    return "\n".join(commands) + "\n"


def environment(scratch: Path) -> dict[str, str]:
    """The environment blocks run in: the venv's bin first on PATH, the first-party plugins, no API keys, a state folder."""
    kept = {name: value for name, value in os.environ.items() if not name.endswith("_API_KEY") and name != "OLLAMA_HOST"}
    return {
        **kept,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{kept.get('PATH', '')}",
        "CHAINETTE_LOAD_PLUGINS": PLUGINS,
        "CHAINETTE_STATE_DIR": str(scratch / ".chainette-state"),
        "COLUMNS": "200",
    }
