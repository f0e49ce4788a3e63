"""Every fenced ```python block in README.md and docs/**/*.md runs, so examples cannot rot.

Blocks of one file run in order in one namespace (later blocks may use earlier
names), in a temporary working directory.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
# Pages whose examples train, sample, solve or load networks: the slow tier runs them.
SLOW_DOCUMENTS = {ROOT / "docs" / name for name in ("composing.md", "dynamics.md", "local.md", "pretrained.md",
                                                      "quality.md", "scores.md", "training.md")}
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


def test_documents_exist_and_have_examples():
    assert (ROOT / "docs" / "index.md") in DOCUMENTS
    assert python_blocks(ROOT / "README.md")
    assert SLOW_DOCUMENTS <= set(DOCUMENTS)


@pytest.mark.parametrize("path", [pytest.param(p, marks=[pytest.mark.slow] * (p in SLOW_DOCUMENTS)) for p in DOCUMENTS],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{path.stem}"}
    for number, block in enumerate(python_blocks(path), start=1):
        try:
            exec(compile(block, f"{path.name} block {number}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{path.relative_to(ROOT)}, python block {number} failed: {error!r}") from error
