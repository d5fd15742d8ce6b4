"""The docs in the repository are complete and every citation of them resolves.

- every setting is in docs/configuration.md, and the README keeps its two commands;
- a comment or docstring in src/ or tests/ that cites ``docs/FILE.md#anchor`` names
  a file and an anchor that exist, and none cites a document outside the repository;
- every relative link between README.md and docs/*.md resolves, anchors included.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from statekeeper.settings import SETTINGS, Setting

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = sorted(p for d in ("src", "tests") for p in (ROOT / d).rglob("*.py"))

_CITATION = re.compile(r"docs/(?P<file>[\w.-]+\.md)(?:#(?P<anchor>[\w-]+))?")
# Documents that are not in the repository, however they are spelled.
_OUTSIDE = re.compile(
    r"§\s*\d|\bspec\s+(?:section|sec\.)|\bthe spec\b|terraform-protocols\.md|\bdesign\.md"
    r"|\bthe design's\b|shared/(?:spec|style|design|testing-notes)|/work/"
)
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """Anchors of a Markdown page: explicit ``<a id>``s and GitHub's heading slugs."""
    found = set(re.findall(r'<a id="([\w-]+)"></a>', markdown))
    seen: dict[str, int] = {}
    in_fence = False
    for line in markdown.splitlines():
        if line.startswith(("```", "~~~")):
            in_fence = not in_fence
        if in_fence or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_documented(setting: Setting) -> None:
    assert f"`{setting.name}`" in CONFIGURATION
    assert f"`{setting.env}`" in CONFIGURATION


def test_quickstart_commands_are_in_readme_and_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("serve", "test"):
        assert f"make {target}" in README
        assert f"\n{target}:" in makefile


def test_the_readme_is_a_landing_page() -> None:
    assert len(README.encode()) < 12_000, "reference material belongs in docs/"
    for page in ("architecture", "protocol", "configuration", "cli", "api", "operations"):
        assert f"docs/{page}.md" in README
    assert "bench/RESULTS.md" in README


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_citations_in_code_resolve_inside_the_repository(source: Path) -> None:
    if source == Path(__file__).resolve():
        return  # this file spells the patterns it looks for
    text = source.read_text()
    outside = [m.group(0) for m in _OUTSIDE.finditer(text)]
    assert not outside, f"cites a document outside the repository: {outside}; cite docs/*.md#…"
    for m in _CITATION.finditer(text):
        page = ROOT / "docs" / m.group("file")
        assert page.exists(), f"cites {m.group(0)}, which does not exist"
        if m.group("anchor"):
            assert m.group("anchor") in anchors(page.read_text()), (
                f"cites {m.group(0)}: {page.name} has no anchor {m.group('anchor')!r}"
            )


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: p.name)
def test_links_between_the_docs_resolve(page: Path) -> None:
    markdown = page.read_text()
    for m in _LINK.finditer(markdown):
        target = m.group("target")
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest.read_text()), f"{page.name} links to missing {target}"


def test_anchor_slugs_follow_github() -> None:
    page = '# A\n## What "a second run" sees\n## The 423 body\n## A\n<a id="x-y"></a>\n'
    assert anchors(page) == {"a", "what-a-second-run-sees", "the-423-body", "a-1", "x-y"}


def test_every_api_route_is_in_the_api_docs() -> None:
    from statekeeper.server import admin_api, api, history_api, hooks_api, search_api

    page = (ROOT / "docs" / "api.md").read_text()
    routers = [api, admin_api, history_api, hooks_api, search_api]
    routes = [route for module in routers for route in module.router.routes]
    # Every module of the server that declares an API router is listed above.
    declared = {
        path.stem
        for path in (ROOT / "src" / "statekeeper" / "server").glob("*.py")
        if "APIRouter(" in path.read_text()
    }
    assert declared == {module.__name__.rsplit(".", 1)[1] for module in routers}
    for route in routes:
        path = re.sub(r"\{(\w+):path\}", r"{\1}", route.path)  # type: ignore[attr-defined]
        for method in route.methods:  # type: ignore[attr-defined]
            assert re.search(f"`{method} {re.escape(path)}[`? ]", page), (
                f"docs/api.md does not list {method} {path}"
            )
