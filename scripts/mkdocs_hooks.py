"""MkDocs hooks joining the docs site to the rest of the repository, with every target checked.

- A relative link from a page to a file outside docs/ (an example, a distribution's folder) becomes
  a link to that file on GitHub.
- A GitHub link to a page under docs/ (the distributions' READMEs use them, since PyPI shows those
  READMEs too, and the site includes them) becomes a link within the site.

A link whose target does not exist fails the build, as mkdocs' own link checks do under --strict.
"""

from __future__ import annotations

from pathlib import Path
import posixpath
import re

from mkdocs.exceptions import PluginError

REPO = "https://github.com/chainette/chainette"
BLOB = f"{REPO}/blob/main/"
MARKDOWN_LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
SITE_LINK = re.compile(rf'href="{re.escape(BLOB)}docs/([^"#]+)(#[^"]*)?"')


def on_page_markdown(markdown, page, config, files):
    """Relative links that leave docs/ point to GitHub; fenced code is left alone."""
    docs = Path(config["docs_dir"]).resolve()
    root = Path(config["config_file_path"]).resolve().parent
    here = (docs / page.file.src_uri).parent

    def rewrite(match: re.Match[str]) -> str:
        target = match.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return match.group(0)
        path = Path(posixpath.normpath((here / target).as_posix()))
        if path == docs or docs in path.parents:
            return match.group(0)
        if root not in path.parents or not path.exists():
            raise PluginError(f"docs/{page.file.src_uri} links to {target}, which is not a file of the repository.")
        kind = "tree" if path.is_dir() else "blob"
        url = f"{REPO}/{kind}/main/{path.relative_to(root).as_posix()}"
        return f"{match.group(1)}{url}{match.group(3) or ''}{match.group(4)}"

    parts, last = [], 0
    for fence in FENCE.finditer(markdown):
        parts += [MARKDOWN_LINK.sub(rewrite, markdown[last : fence.start()]), fence.group(0)]
        last = fence.end()
    parts.append(MARKDOWN_LINK.sub(rewrite, markdown[last:]))
    return "".join(parts)


def on_page_content(html, page, config, files):
    """GitHub links to docs/ pages (from included READMEs) become relative links within the site."""

    def rewrite(match: re.Match[str]) -> str:
        target = files.get_file_from_path(match.group(1))
        if target is None:
            raise PluginError(f"docs/{page.file.src_uri} links to {BLOB}docs/{match.group(1)}, which is not a page of the docs.")
        return f'href="{target.url_relative_to(page.file)}{match.group(2) or ""}"'

    return SITE_LINK.sub(rewrite, html)
