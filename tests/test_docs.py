"""The documentation holds together: the MkDocs site builds strictly, README links resolve, Python examples parse."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

#: a fenced block: its opening fence (``` or ~~~, at any indent), its info string, its body
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
#: inline links and images, ``[text](target "title")``, and reference definitions, ``[ref]: target``
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^[ ]{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_CODE_SPAN = re.compile(r"`+[^`\n]*`+")


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, source)`` of every ```python block in ``text``, dedented (blocks may sit in lists)."""
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group("info").strip().split(" ")[0].lower() in ("python", "py"):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((line, textwrap.dedent(match.group("body"))))
    return blocks


def _relative_links(text: str) -> list[str]:
    """Every link target in ``text`` that is not a URL, outside code blocks and code spans."""
    prose = _CODE_SPAN.sub("", _FENCE.sub("", text))
    targets = _INLINE_LINK.findall(prose) + _REFERENCE.findall(prose)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE) and not t.startswith("#")]


def test_the_docs_exist() -> None:
    assert (ROOT / "mkdocs.yml").is_file()
    assert (DOCS / "index.md").is_file()


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """Broken links, missing anchors and pages left out of the nav fail the build."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[test]' or '.[docs]')")
    config, site = str(ROOT / "mkdocs.yml"), str(tmp_path / "site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", config, "--site-dir", site],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_links_point_at_files_that_exist() -> None:
    links = _relative_links(README.read_text(encoding="utf-8"))
    assert links, "README.md should link into docs/"
    missing = [link for link in links if not (ROOT / link.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_links_into_the_docs() -> None:
    linked = {link.split("#", 1)[0] for link in _relative_links(README.read_text(encoding="utf-8"))}
    assert "docs/index.md" in linked


def test_readme_starts_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[2] == "```bash"
    assert lines[3].startswith("bash scripts/demo.sh     # ")
    assert lines[4].startswith("bash scripts/test.sh     # ")
    assert lines[5] == "```"


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_parse(path: Path) -> None:
    for line, source in _python_blocks(path.read_text(encoding="utf-8")):
        try:
            ast.parse(source, filename=f"{path.name}:{line}")
        except SyntaxError as exc:
            pytest.fail(f"{path.relative_to(ROOT)}, the python block at line {line}: {exc}")


def test_the_block_finder_sees_the_blocks() -> None:
    """Guards the checks above against a pattern that silently matches nothing."""
    assert len(_python_blocks(README.read_text(encoding="utf-8"))) == 3  # one per framework
    sample = "text\n\n  ```python\n  x = 1\n  ```\n\n```python\ndef f(): ...\n```\n[a](docs/x.md) `[b](nope.md)`\n"
    assert _python_blocks(sample) == [(3, "x = 1\n"), (7, "def f(): ...\n")]
    assert _relative_links(sample) == ["docs/x.md"]
