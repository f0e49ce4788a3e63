"""`pytest --touched-modules`: fail the run if a module of gaussjax/, train/ or analysis/ ran no code.

A module counts as touched when one of its functions (or lambdas, or comprehensions) ran in a
test process, or, for a module that defines none, when it was imported. Code run only in
subprocesses the tests start (`python -m train`) does not count. With xdist, each worker reports
the files it executed and the controller checks their union. Used to check that the fast tier
(`pytest -n 2 --touched-modules`) still touches every module; it slows the run down.
"""

import ast
import inspect
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gaussjax", "train", "analysis")

_executed: set[str] = set()  # files whose functions ran in this process
_from_workers: set[str] = set()  # xdist's controller: what the workers touched


def _record(frame, event, arg):
    """A global trace function: notes the file of every function frame, asks for no line events."""
    if frame.f_code.co_flags & inspect.CO_NEWLOCALS:
        _executed.add(frame.f_code.co_filename)


def modules() -> list[Path]:
    """Every source file of the packages."""
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def defines_code(path: Path) -> bool:
    """Whether the file defines a function, lambda or comprehension (something that can run after import)."""
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
             ast.GeneratorExp)
    return any(isinstance(node, kinds) for node in ast.walk(ast.parse(path.read_text())))


def touched() -> set[str]:
    """The package files this process touched: those that ran a function, and those imported that define none."""
    imported = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
    return {str(path) for path in modules()
            if str(path) in _executed or (str(path) in imported and not defines_code(path))}


_MISSING = pytest.StashKey[list]()


def pytest_configure(config):
    sys.settrace(_record)
    threading.settrace(_record)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist's controller: add what a finished worker touched."""
    _from_workers.update(getattr(node, "workeroutput", {}).get("touched_modules", []))


def pytest_sessionfinish(session):
    sys.settrace(None)
    threading.settrace(None)
    if hasattr(session.config, "workeroutput"):  # an xdist worker: report to the controller
        session.config.workeroutput["touched_modules"] = sorted(touched())
        return
    done = _from_workers | touched()
    missing = [path for path in modules() if str(path) not in done]
    session.config.stash[_MISSING] = missing
    if missing and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    missing = config.stash.get(_MISSING, None)
    if missing is None:
        return
    if missing:
        terminalreporter.write_line(f"{len(missing)} modules ran no code in this run:", red=True)
        for path in missing:
            terminalreporter.write_line(f"  {path.relative_to(ROOT)}")
    else:
        terminalreporter.write_line(f"every one of the {len(modules())} modules of {', '.join(PACKAGES)} ran code")
