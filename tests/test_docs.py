"""The README and the docs point at things that exist.

For README.md, config/README.md and docs/*.md: every relative markdown link or image (and its
``#anchor``, by GitHub's heading slugs) resolves; every ``make <target>`` names a Makefile
target; every ``python -m <module>`` names a module file of this repository (or an installed
package); every script path named in code (``benchmarks/x.py``, ``tools/x.py``, ...) exists.
Plus: the README stays at most 200 lines and holds the test command that ``.ci/run`` runs.
Nothing here imports torch or runs Snakemake.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "config" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

# Top-level folders whose files a page may name as a path in code (`benchmarks/x.py`).
REPO_DIRS = ("benchmarks", "tools", "workflow_scripts", "tests", "motionmatcher", "config",
             "profiles", "rules", "models", "docs", "envs", "report", ".ci")


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


# ---------------------------------------------------------------------------------------------
# Markdown parsing


def _split_code(text: str) -> tuple[str, list[str]]:
    """(prose with fenced blocks blanked, [code: every fenced block and inline code span])."""
    prose_lines, code, block = [], [], None
    for line in text.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith("```") or stripped.startswith("~~~"):
            if block is None:
                block = []
            else:
                code.append("\n".join(block))
                block = None
            prose_lines.append("")
            continue
        if block is not None:
            block.append(line)
            prose_lines.append("")
        else:
            prose_lines.append(line)
    prose = "\n".join(prose_lines)
    code += re.findall(r"(?<!`)`([^`\n]+)`(?!`)", prose)
    return prose, code


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markdown stripped, lower case, punctuation dropped
    (letters, digits, `_`, `-` and spaces kept), spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links -> their text
    text = re.sub(r"<[^>]+>", "", text)                          # inline HTML
    text = text.replace("`", "").strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose, _ = _split_code(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in prose.split("\n"):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    for m in re.finditer(r"""<a\s+(?:name|id)=["']([^"']+)["']""", prose):
        out.add(m.group(1))
    return out


def links(page: Path) -> list[str]:
    """Every link target in the prose: [text](target), ![alt](target), <img src=...>, <a href=...>."""
    prose, _ = _split_code(page.read_text(encoding="utf-8"))
    prose = re.sub(r"(?<!`)`[^`\n]+`(?!`)", "", prose)  # a link inside inline code is not a link
    out = [m.group(1) for m in re.finditer(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)]
    out += re.findall(r"""<(?:img|a)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", prose)
    return out


def broken_links(page: Path) -> list[str]:
    problems = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = page if not path_part else (page.parent / path_part).resolve()
        if not dest.exists():
            problems.append(f"{_rel(page)}: link {target!r}: {path_part} does not exist")
            continue
        if anchor:
            if dest.suffix.lower() != ".md" or dest.is_dir():
                problems.append(f"{_rel(page)}: link {target!r}: an anchor into a non-markdown file")
            elif anchor not in anchors(dest):
                problems.append(f"{_rel(page)}: link {target!r}: no heading #{anchor} in {_rel(dest)}")
    return problems


# ---------------------------------------------------------------------------------------------
# Commands named in code


def makefile_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().split("\n"):
        m = re.match(r"^([A-Za-z0-9_.%/ -]+?)\s*::?(?!=)", line)
        if m and not line.startswith("\t"):
            targets.update(t for t in m.group(1).split() if not t.startswith("."))
    return targets


def make_targets_named(page: Path) -> list[str]:
    _, code = _split_code(page.read_text(encoding="utf-8"))
    names = []
    for chunk in code:
        for line in chunk.split("\n"):
            line = line.split("#", 1)[0] if line.lstrip().startswith("make") else line
            for m in re.finditer(r"(?:^|[\s;&|(=])make((?:\s+[A-Z_]+=\S+)*)\s+([a-z][\w-]*)", line):
                names.append(m.group(2))
    return names


def modules_named(page: Path) -> list[str]:
    _, code = _split_code(page.read_text(encoding="utf-8"))
    mods = []
    for chunk in code:
        mods += re.findall(r"python[\d.]*\s+-m\s+([A-Za-z_][\w.]*)", chunk)
    return mods


def module_exists(name: str) -> bool:
    parts = name.split(".")
    if (ROOT / parts[0]).is_dir() or (ROOT / f"{parts[0]}.py").exists():
        base = ROOT.joinpath(*parts)
        return (base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()
                or (base / "__init__.py").is_file())
    # an installed tool (pytest, pip, venv): its top-level spec, without importing it
    return importlib.util.find_spec(parts[0]) is not None


def paths_named(page: Path) -> list[str]:
    """Repository paths in code: `benchmarks/x.py`, `tools/x.py`, `tests/x.py::test`, `config/x.yaml`, ..."""
    _, code = _split_code(page.read_text(encoding="utf-8"))
    dirs = "|".join(re.escape(d) for d in REPO_DIRS)
    out = []
    for chunk in code:
        for m in re.finditer(rf"(?<![\w./$-])(?:\./)?((?:{dirs})/[\w./-]*\.(?:py|sh|smk|yaml|yml))\b", chunk):
            out.append(m.group(1))
    return out


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_and_anchors_resolve(page):
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_make_targets_exist(page):
    known = makefile_targets()
    missing = [t for t in make_targets_named(page) if t not in known]
    assert missing == [], f"{_rel(page)}: `make` targets not in the Makefile: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_python_modules_exist(page):
    missing = [m for m in modules_named(page) if not module_exists(m)]
    assert missing == [], f"{_rel(page)}: `python -m` modules that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_script_and_file_paths_exist(page):
    missing = sorted({p for p in paths_named(page) if not (ROOT / p).exists()})
    assert missing == [], f"{_rel(page)}: paths named in commands that do not exist: {missing}"


def test_readme_is_short_and_holds_the_ci_test_command():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    ci = [l.strip() for l in (ROOT / ".ci" / "run").read_text().split("\n")
          if l.strip() and not l.startswith("#") and not l.startswith(("set ", "cd "))]
    assert ci, ".ci/run runs no command"
    _, code = _split_code("\n".join(lines))
    readme_commands = {l.split("#", 1)[0].strip() for chunk in code for l in chunk.split("\n")}
    assert ci[-1] in readme_commands, f".ci/run runs {ci[-1]!r}, which the README does not show"


# The checker itself: each kind of reference is found, and a broken one fails.


def test_checker_catches_broken_references(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "real.py").write_text("")
    (tmp_path / "motionmatcher").mkdir()
    (tmp_path / "motionmatcher" / "__init__.py").write_text("")
    (tmp_path / "motionmatcher" / "real.py").write_text("")
    (tmp_path / "Makefile").write_text(".PHONY: demo\ndemo: setup\n\techo\nsetup:\n")
    (docs / "other.md").write_text("# Other page\n\n## A `code` heading, with: punctuation!\n\n## Dup\n\n## Dup\n")
    page = docs / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md) [ok](other.md#a-code-heading-with-punctuation) [ok](other.md#dup-1) [ok](#page)\n"
        "[bad](missing.md) [bad](other.md#nope) [web](https://example.org/x.md)\n"
        '<img src="../benchmarks/real.py"> <img src="../benchmarks/nope.png">\n\n'
        "`[not a link](nowhere.md)`\n\n"
        "```bash\nmake demo\nmake nope ARG=1\n.venv/bin/python -m motionmatcher.real\n"
        "python -m motionmatcher.nope\npython benchmarks/real.py && python benchmarks/gone.py\n```\n"
        "Also `make setup` and `tests/test_x.py::test_y`.\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert sorted(x.split(": ", 2)[1] for x in broken_links(page)) == [
        "link '../benchmarks/nope.png'", "link 'missing.md'", "link 'other.md#nope'"]
    known = makefile_targets()
    assert known >= {"demo", "setup"}
    assert [t for t in make_targets_named(page) if t not in known] == ["nope"]
    assert [m for m in modules_named(page) if not module_exists(m)] == ["motionmatcher.nope"]
    assert module_exists("pytest")
    assert sorted(p for p in paths_named(page) if not (tmp_path / p).exists()) == [
        "benchmarks/gone.py", "tests/test_x.py"]
