"""The repository explains itself: citations resolve inside it, the module map matches the tree.

* No tracked source or document cites a section sign, the upstream
  specification file or a path outside the repository: every citation points
  at ``docs/protocol.md`` (by section title), ``docs/decisions.md`` (by
  decision number) or a component README.
* Every ``docs/protocol.md, "Title"`` names a heading of that file, and every
  ``docs/decisions.md Dn`` a decision there.
* The README's "Architecture" table names every module of every package, and
  only modules that exist; its "Repository" tree names paths that exist.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "services" / "natroute"
#: Where citations live (``docker/wheels`` holds third-party wheels).
SCOPE = ("services/", "tests/", "benchmarks/", "docs/", "charts/", "docker/", ".ci/")
TOP_FILES = ("README.md", "compose.yaml", "pyproject.toml", ".env")

# Spelled so that this file does not match itself.
SECTION_SIGN = "\u00a7"
FORBIDDEN = ("ROUTING" + ".md", "/work/" + "shared", "../" + "shared")
#: A section sign is fine after an RFC number ("RFC 6455 <sign>7.4").
_RFC_SECTION = re.compile(r"RFC \d+ " + SECTION_SIGN)

_PROTOCOL_CITE = re.compile(r'protocol\.md, ("[^"]+"(?:(?:,| and| to) "[^"]+")*)')
_TITLE = re.compile(r'"([^"]+)"')
_DECISION_CITE = re.compile(r"decisions\.md (D\d+(?:(?:, | and |/)D?\d+)*)")


@cache
def tracked_files() -> tuple[Path, ...]:
    """The repository's tracked text files in scope (git's list, or a walk without git)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout.decode()
        names = [n for n in listed.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # pragma: no cover - no git checkout
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()]
    wanted = [
        n
        for n in names
        if (n.startswith(SCOPE) or n in TOP_FILES) and not n.startswith("docker/wheels/")
    ]
    return tuple(ROOT / n for n in sorted(wanted))


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file (an image, a wheel)."""
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError):
        return None


def test_scope_is_not_empty() -> None:
    files = {str(p.relative_to(ROOT)) for p in tracked_files()}
    assert {"README.md", "docs/protocol.md", "services/natroute/routing/manager.py"} <= files


def test_no_citation_leaves_the_repository() -> None:
    offenders: list[str] = []
    for path in tracked_files():
        text = text_of(path)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            stripped = _RFC_SECTION.sub("", line)
            if SECTION_SIGN in stripped or any(f in line for f in FORBIDDEN):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "citations outside the repository:\n" + "\n".join(offenders)


def headings(path: Path) -> set[str]:
    """Markdown heading texts of ``path``."""
    return {
        m.group(1).strip()
        for m in re.finditer(r"^#{1,6} (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    }


def decision_numbers() -> set[int]:
    """The decision numbers ``docs/decisions.md`` has a heading for."""
    found: set[int] = set()
    for title in headings(ROOT / "docs" / "decisions.md"):
        label = title.split(".", 1)[0]
        found.update(int(n) for n in re.findall(r"D(\d+)", label))
    return found


def test_decisions_are_numbered_without_gaps() -> None:
    numbers = decision_numbers()
    assert numbers == set(range(1, max(numbers) + 1))


def test_protocol_and_decision_citations_resolve() -> None:
    titles = headings(ROOT / "docs" / "protocol.md")
    decisions = decision_numbers()
    missing: list[str] = []
    for path in tracked_files():
        text = text_of(path) if path != Path(__file__).resolve() else None  # it shows the syntax
        if text is None:
            continue
        flat = re.sub(r"\s+", " ", text)  # citations may wrap across lines
        for match in _PROTOCOL_CITE.finditer(flat):
            for title in _TITLE.findall(match.group(1)):
                if title not in titles:
                    missing.append(f'{path.relative_to(ROOT)}: protocol.md, "{title}"')
        for match in _DECISION_CITE.finditer(flat):
            for number in re.findall(r"\d+", match.group(1)):
                if int(number) not in decisions:
                    missing.append(f"{path.relative_to(ROOT)}: decisions.md D{number}")
    assert not missing, "citations of sections that do not exist:\n" + "\n".join(missing)


def test_markdown_links_to_docs_resolve() -> None:
    broken: list[str] = []
    for path in tracked_files():
        if path.suffix != ".md":
            continue
        text = re.sub(r"`[^`\n]*`", "", path.read_text(encoding="utf-8"))  # code spans
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, "\n".join(broken)


# -- the README's module map ----------------------------------------------------


def architecture_rows() -> dict[str, set[str]]:
    """Package name → the module names its row of the Architecture table lists."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("| package | core (pure) | shell (I/O) |")
    table = readme[start : readme.index("\n\n", start)]
    rows: dict[str, set[str]] = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        package = cells[0].strip("`")
        rows[package] = set(re.findall(r"`([\w/]+\.py|[\w]+/)`", " ".join(cells[1:])))
    return rows


def package_modules(package: str) -> set[str]:
    """The modules (``x.py``) and sub-packages (``x/``) of ``natroute[.package]``."""
    if package == "natroute":
        return {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    folder = PACKAGE / package.removeprefix("natroute.")
    modules = {p.name for p in folder.glob("*.py") if p.name != "__init__.py"}
    modules |= {f"{p.name}/" for p in folder.iterdir() if (p / "__init__.py").exists()}
    return modules


def test_every_package_has_a_row() -> None:
    packages = {"natroute"} | {
        f"natroute.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()
    }
    assert set(architecture_rows()) == packages


@pytest.mark.parametrize("package", sorted(architecture_rows()))
def test_the_architecture_table_matches_the_tree(package: str) -> None:
    named = architecture_rows()[package]
    present = package_modules(package)
    assert not named - present, f"{package}: named in the README but absent: {named - present}"
    assert not present - named, f"{package}: missing from the README's table: {present - named}"


def repository_tree() -> dict[str, str]:
    """The README's "Repository" block: each top-level path and its description."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("```", readme.index("## Repository")) + 3
    entries: dict[str, str] = {}
    top = ""
    for line in readme[start : readme.index("```", start)].strip().splitlines():
        if not line.startswith(" "):
            top, _, text = line.partition(" ")
            entries[top] = text.strip()
        else:
            entries[top] += " " + line.strip()
    return entries


def test_the_repository_tree_names_paths_that_exist() -> None:
    tree = repository_tree()
    assert {"services/natroute", "docs/", ".ci/", "tests/"} <= set(tree)
    for top in tree:
        assert (ROOT / top).exists(), top
    for name in re.findall(r"(\w+\.md)", tree["docs/"]):
        assert (ROOT / "docs" / name).exists(), name
    docs = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert docs <= set(re.findall(r"(\w+\.md)", tree["docs/"])), "a document missing from the tree"
    for script in (ROOT / ".ci").iterdir():
        assert re.search(rf"\b{re.escape(script.name)}\b", tree[".ci/"]), script.name


# -- licence --------------------------------------------------------------------


def test_the_licence_is_in_the_repository_and_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache-2.0" in str(project["license"])
    assert licence.lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence
    urls = project["urls"]
    assert {"Homepage", "Documentation", "Issues"} <= set(urls)
    home = urls["Homepage"].rstrip("/")
    assert all(u.startswith(home) for u in urls.values())
