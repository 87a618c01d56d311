"""Release readiness: the five distributions move in step, each backend accepts the current core,
their metadata is complete, and README links resolve (those shipped to PyPI must be absolute)."""

from __future__ import annotations

from pathlib import Path
import re
import sys

from packaging.requirements import Requirement
from packaging.version import Version
import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before Python 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CORE = "chainette-core"
BACKENDS = ("chainette-openai", "chainette-vllm", "chainette-ollama", "chainette-ray", "chainette-anthropic", "chainette-gemini")
DISTRIBUTIONS = (CORE, *BACKENDS)
REPO = "https://github.com/chainette/chainette"
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
URL_KEYS = {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.M)


def project(dist: str) -> dict:
    return tomllib.loads((ROOT / dist / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def core_version() -> Version:
    """The single source of truth: `__version__` in chainette-core's package (hatch reads it from there)."""
    return Version(VERSION_LINE.search((ROOT / CORE / "src/chainette/__init__.py").read_text(encoding="utf-8")).group(1))


def links(path: Path) -> list[str]:
    """The targets of the Markdown links of `path`, outside fenced code blocks."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return LINK.findall(text)


def test_core_version_comes_from_its_package():
    assert project(CORE)["dynamic"] == ["version"]
    assert tomllib.loads((ROOT / CORE / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["hatch"]["version"]["path"] == (
        "src/chainette/__init__.py"
    )


@pytest.mark.parametrize("dist", BACKENDS)
def test_backend_version_is_the_core_version(dist):
    assert Version(project(dist)["version"]) == core_version(), f"{dist}/pyproject.toml: set version to {core_version()}"
    package = ROOT / dist / "src" / dist.replace("-", "_") / "__init__.py"
    declared = VERSION_LINE.search(package.read_text(encoding="utf-8"))
    if declared:
        assert Version(declared.group(1)) == core_version(), f"{package}: set __version__ to {core_version()}"


@pytest.mark.parametrize("dist", BACKENDS)
def test_backend_core_range_is_bounded_and_admits_the_current_core(dist):
    [requirement] = [Requirement(spec) for spec in project(dist)["dependencies"] if Requirement(spec).name == CORE]
    operators = {spec.operator for spec in requirement.specifier}
    assert ">=" in operators and "<" in operators, f"{dist}: depend on {CORE}>=X,<Y, not {requirement}"
    assert requirement.specifier.contains(core_version(), prereleases=True), f"{dist}: {requirement} excludes {CORE} {core_version()}"


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_metadata_is_complete(dist):
    meta = project(dist)
    assert meta["description"] and meta["keywords"] and meta["authors"]
    assert meta["readme"] == "README.md" and (ROOT / dist / "README.md").is_file()
    assert meta["requires-python"] == ">=3.10"
    assert meta["license"] == "MIT" and meta["license-files"] == ["LICENSE"]
    assert (ROOT / dist / "LICENSE").read_text(encoding="utf-8") == (ROOT / "LICENSE").read_text(encoding="utf-8")
    classifiers = set(meta["classifiers"])
    assert {f"Programming Language :: Python :: {python}" for python in PYTHONS} <= classifiers
    assert any(c.startswith("Operating System :: ") for c in classifiers)
    assert not any(c.startswith("License :: ") for c in classifiers), "PEP 639: the SPDX `license` replaces License classifiers"
    assert set(meta["urls"]) == URL_KEYS
    assert all(url.startswith("https://") for url in meta["urls"].values())


def test_changelog_has_a_section_for_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[{re.escape(str(core_version()))}\]", text, re.M), f"CHANGELOG.md: add a ## [{core_version()}] section"


def test_root_readme_relative_links_exist():
    relative = [target for target in links(ROOT / "README.md") if not re.match(r"[a-z]+:|#", target)]
    assert relative, "expected links to docs/ in README.md"
    missing = [target for target in relative if not (ROOT / target.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_readmes_shipped_to_pypi_link_absolutely_to_existing_files(dist):
    targets = links(ROOT / dist / "README.md")
    relative = [target for target in targets if not re.match(r"[a-z]+:", target)]
    assert not relative, f"{dist}/README.md: relative links break on PyPI; use {REPO}/blob/main/PATH: {relative}"
    prefix = f"{REPO}/blob/main/"
    missing = [t for t in targets if t.startswith(prefix) and not (ROOT / t[len(prefix) :].split("#")[0]).exists()]
    assert not missing, f"{dist}/README.md links to missing files: {missing}"
