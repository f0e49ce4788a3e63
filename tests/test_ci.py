"""`.ci/run` runs exactly the README's test commands (so CI tests what a newcomer runs): lint, types, both tiers."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMPTY_TIER = " || [ $? -eq 5 ]"  # pytest's exit status 5: no tests collected


def readme_test_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```bash\n(.*?)\n```", readme, re.DOTALL | re.MULTILINE)
    return next(b for b in blocks if "pytest" in b).splitlines()


def ci_lines() -> list[str]:
    return (ROOT / ".ci" / "run").read_text().splitlines()


def test_ci_runs_the_readme_test_commands_in_order():
    lines = ci_lines()
    assert "set -euo pipefail" in lines
    positions = []
    for command in readme_test_commands():
        found = [i for i, line in enumerate(lines) if line in (command, command + EMPTY_TIER)]
        assert found, f"{command!r} is not a line of .ci/run"
        positions.append(found[0])
    assert positions == sorted(positions)


def test_the_readme_gives_the_fast_tier_then_the_slow_tier():
    tiers = [c for c in readme_test_commands() if c.startswith("pytest")]
    assert tiers == ["pytest -n 2", "pytest -n 2 -m slow"]
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+)
    addopts = re.search(r"^addopts = '(.*)'$", pyproject, re.MULTILINE).group(1)
    assert '-m "not slow"' in addopts  # plain `pytest` is the fast tier
    assert re.search(r'^    "slow: ', pyproject, re.MULTILINE)


def test_the_readme_lints_and_type_checks_before_the_tests():
    commands = readme_test_commands()
    assert commands.index("ruff check .") < commands.index("mypy") < commands.index("pytest -n 2")
    pyproject = (ROOT / "pyproject.toml").read_text()
    for section in ("[tool.ruff]", "[tool.ruff.lint]", "[tool.mypy]"):
        assert f"\n{section}\n" in pyproject, section
    assert re.search(r'^files = \["gaussjax"\]$', pyproject, re.MULTILINE)  # plain `mypy` checks the package


def test_an_empty_tier_passes_ci_and_a_failing_tier_fails_it():
    tiers = "\n".join(line for line in ci_lines() if line.startswith("pytest"))
    for status, passes in ((0, True), (5, True), (1, False), (2, False)):
        script = f"set -euo pipefail\npytest() {{ return {status}; }}\n{tiers}\n"
        assert (subprocess.run(["bash", "-c", script]).returncode == 0) == passes, status
